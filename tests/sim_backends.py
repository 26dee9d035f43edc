"""Simulated backends that misbehave on cue, shared by the strategies' resume tests."""

from __future__ import annotations

from hyperpop.backends.simulated import SimulatedBackend


class Interrupted(SimulatedBackend):
    """Stopped as by Ctrl-C once ``after`` reports came back (the crossing result is lost)."""

    def __init__(self, after: int):
        super().__init__(workers=2)
        self.after, self.reports = after, 0

    def poll(self, timeout):
        out = super().poll(timeout)
        self.reports += sum(len(r.reports) for r in out)
        if self.reports >= self.after:
            raise KeyboardInterrupt
        return out
