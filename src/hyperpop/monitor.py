"""Progress between ready points: what the driver records and shows while intervals run.

:class:`ProgressMonitor` counts the steps of running intervals (from backends that tell) as
``progress`` events, and hands the population and the run's :class:`~hyperpop.summary.RunState`
to the progress display.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from hyperpop.backends.base import Backend, Task
from hyperpop.population import Population
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event
from hyperpop.summary import ProgressView, RunState

__all__ = ["Progress", "ProgressMonitor", "Session"]

#: a caller's progress display: called with the population after each poll
Progress = Callable[[Population], None]


class _Budget(Protocol):
    @property
    def max_steps(self) -> int | None:
        """The step budget per member, if there is one."""


class Session(Protocol):
    """What the monitor reads of the driver session it watches."""

    @property
    def pop(self) -> Population:
        """The fold of the run's events."""

    @property
    def backend(self) -> Backend:
        """Tells the steps of running tasks."""

    @property
    def controller(self) -> _Budget:
        """Holds the step budget."""

    @property
    def inflight(self) -> Mapping[int, Task]:
        """Members training now, with their tasks."""

    @property
    def queue(self) -> Collection[int]:
        """Members waiting for a worker."""

    @property
    def clock(self) -> Callable[[], float]:
        """The time of events."""

    def elapsed(self) -> float:
        """Seconds the run has been active (across resumes)."""


class ProgressMonitor:
    """Records and shows a session's progress between ready points.

    Args:
        view: the progress display (None: nothing is shown).
        session: the driver session it watches.
    """

    #: seconds between two progress events of one member (reports of a running interval)
    INTERVAL = 1.0
    #: seconds between two updates of the display while the run goes on
    SHOW_EVERY = 0.2

    def __init__(self, view: ProgressView | None, session: Session):
        self.view, self.session = view, session
        #: member -> (step, time) of its last progress event
        self._seen: dict[int, tuple[int, float]] = {}
        self._shown = 0.0

    def record(self) -> list[Event]:
        """``progress`` events counting the reports of intervals still running, at most one a
        member every :attr:`INTERVAL` seconds: readers see a run move between ready points.
        Counted only: the reports themselves are recorded with the interval's checkpoint.
        Before them, a ``workers_changed`` (``by="cluster"``) for each change of the number of
        workers the backend made itself (Ray's ``workers="auto"``)."""
        s = self.session
        now = s.clock()
        events = [
            Event.of(voc.WorkersChanged(new, old, voc.CLUSTER), None, now)
            for old, new in s.backend.own_resizes()
        ]
        steps = s.backend.progress()
        for member, n in steps.items():
            task = s.inflight.get(member)
            if task is None or n <= 0:
                continue
            step = task.step + n
            last = self._seen.get(member)
            if last is not None and (last[0] >= step or now - last[1] < self.INTERVAL):
                continue
            self._seen[member] = (step, now)
            events.append(Event.of(voc.Progress(step), member, now))
        return events

    def state(self) -> RunState:
        """Who trains now, who waits for a worker, how many workers there are now, and for how
        long the run has been active."""
        s = self.session
        return RunState(
            running=frozenset(s.inflight),
            queued=frozenset(s.queue),
            elapsed=s.elapsed(),
            max_steps=s.controller.max_steps,
            workers=s.backend.capacity,
        )

    def show(self, *, now: bool = False) -> None:
        """Hand the population and the run's state to the display: at most every
        :attr:`SHOW_EVERY` seconds, or ``now``."""
        if self.view is None or (not now and time.time() - self._shown <= self.SHOW_EVERY):
            return
        for text in self.session.backend.notes():  # what the backend chose, said once
            self.view.note(text)
        self.view(self.session.pop, self.state())
        self._shown = time.time()

    def close(self) -> None:
        """The session ended: close the display."""
        if self.view is not None:
            self.view.close()
