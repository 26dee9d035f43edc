"""Simulated backends that misbehave on cue, shared by the strategies' resume tests."""

from __future__ import annotations

from hyperpop.backends.simulated import SimulatedBackend


class Interrupted(SimulatedBackend):
    """Stopped as by Ctrl-C once ``after`` reports came back: in ``poll`` (the crossing result
    is lost with the driver), or with ``at="fill"`` once that result is written, when the
    driver next looks for free workers (before the decisions it takes there are written)."""

    def __init__(self, after: int, at: str = "poll"):
        super().__init__(workers=2)
        self.after, self.at, self.reports = after, at, 0

    def poll(self, timeout):
        out = super().poll(timeout)
        self.reports += sum(len(r.reports) for r in out)
        if self.at == "poll" and self.reports >= self.after:
            raise KeyboardInterrupt
        return out

    def free_slots(self):
        if self.at == "fill" and self.reports >= self.after:
            raise KeyboardInterrupt
        return super().free_slots()
