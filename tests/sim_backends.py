"""Backends that misbehave or are steered on cue, shared by the strategies' and steering
tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.store.requests import Request, RequestLog


class Interrupted(SimulatedBackend):
    """Stopped as by Ctrl-C once ``after`` reports came back: in ``poll`` (the crossing result
    is lost with the driver), or with ``at="fill"`` once that result is written, when the
    driver next looks for free workers (before the decisions it takes there are written).
    ``failures=True`` counts failed intervals instead of reports."""

    def __init__(self, after: int, at: str = "poll", *, failures: bool = False):
        super().__init__(workers=2)
        self.after, self.at, self.reports, self.failures = after, at, 0, failures

    def poll(self, timeout):
        out = super().poll(timeout)
        if self.failures:
            self.reports += sum(r.error is not None for r in out)
        else:
            self.reports += sum(len(r.reports) for r in out)
        if self.at == "poll" and self.reports >= self.after:
            raise KeyboardInterrupt
        return out

    def free_slots(self):
        if self.at == "fill" and self.reports >= self.after:
            raise KeyboardInterrupt
        return super().free_slots()


class Steers:
    """Mixed in before a backend class: writes ``requests`` into the run's store once ``after``
    reports came back (a person steering the run at that moment). Two workers."""

    def __init__(self, db: Path, after: int, requests: list[Request]):
        super().__init__(2)  # the backend's workers
        self.db, self.left, self.requests = db, after, requests

    def poll(self, timeout: float | None) -> list[Any]:
        out: list[Any] = super().poll(timeout)
        self.left -= sum(len(r.reports) for r in out)
        if self.left <= 0 and self.requests:
            log = RequestLog(self.db)
            for r in self.requests:
                log.append(r)
            self.requests = []
        return out


class SteersSimulated(Steers, SimulatedBackend):
    """The simulated backend (two workers), steered."""
