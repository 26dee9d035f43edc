"""Scheduling: which waiting member a free worker trains next (:class:`RunQueue`), in which
order finished intervals are handled (:class:`ResultOrder`), and where a deterministic
asynchronous run's scheduling stood when it was interrupted (:func:`replay_schedule`)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.simulated import SimulatedClock
from hyperpop.controller import Interval
from hyperpop.population import MemberState, Population
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event

__all__ = ["ResultOrder", "RunQueue", "replay_schedule"]


class RunQueue:
    """Members waiting for a worker, the one furthest behind first.

    With more members than workers, training the member whose model has the fewest steps next
    keeps the population moving forward evenly, so every ready decision finds members at
    comparable progress to compare with. Among members equally far along, one whose state the
    free worker already holds in memory goes first (no reload), then the one queued longest:
    memory affinity breaks ties, it never lets a member fall behind.

    Args:
        progress: a member's progress (its model's steps) when it is queued.
    """

    #: how many equally-far-along members are looked through for one the worker holds
    AFFINITY_WINDOW = 64

    def __init__(self, progress: Callable[[int], int]):
        self._progress = progress
        self._heap: list[tuple[int, int, int]] = []  # (progress, order, member)
        self._order = 0
        self._queued: dict[int, int] = {}  # member -> its live entry's order

    def __len__(self) -> int:
        return len(self._queued)

    def __bool__(self) -> bool:
        return bool(self._queued)

    def __contains__(self, member: object) -> bool:
        return member in self._queued

    def __iter__(self) -> Iterator[int]:
        return iter([m for _, o, m in sorted(self._heap) if self._queued.get(m) == o])

    def append(self, member: int, progress: int | None = None) -> None:
        """Queue ``member`` (again: its earlier entry is replaced) at its progress now, or at
        ``progress`` (a resumed run queues members where they stood)."""
        self._order += 1
        self._queued[member] = self._order
        key = self._progress(member) if progress is None else progress
        heapq.heappush(self._heap, (key, self._order, member))

    def remove(self, member: int) -> None:
        """Take ``member`` out of the queue (its heap entry is dropped lazily)."""
        self._queued.pop(member, None)

    def head(self) -> int:
        """Progress of the member that would train next (the queue must not be empty)."""
        return self._top()[0]

    def _top(self) -> tuple[int, int, int]:
        while self._heap:
            entry = self._heap[0]
            if self._queued.get(entry[2]) == entry[1]:
                return entry
            heapq.heappop(self._heap)  # stale
        raise IndexError("pick from an empty queue")

    def pick(self, slot: int | None, affinity: Callable[[int], int | None]) -> int:
        """Take the next member to train on worker ``slot``."""
        head = self._top()
        chosen = head
        if slot is not None and affinity(head[2]) != slot:
            held: list[tuple[int, int, int]] = []
            while self._heap and len(held) < self.AFFINITY_WINDOW:
                entry = heapq.heappop(self._heap)
                if self._queued.get(entry[2]) != entry[1]:
                    continue  # stale
                if entry[0] != head[0]:
                    heapq.heappush(self._heap, entry)
                    break
                held.append(entry)
                if affinity(entry[2]) == slot:
                    chosen = entry
                    break
            for entry in held:
                heapq.heappush(self._heap, entry)
        del self._queued[chosen[2]]
        return chosen[2]


class ResultOrder:
    """The order in which the driver handles finished intervals: as they arrive, or (in
    deterministic mode) one at a time in the order of a simulated clock on which each interval
    takes its number of steps, the order ``backend="simulated"`` produces (one rule,
    :class:`~hyperpop.backends.simulated.SimulatedClock`): the same decisions whatever the
    timing. A resumed deterministic asynchronous run picks the clock up where the log left it
    (:meth:`resume`).

    Args:
        backend: polled for finished intervals.
        deterministic: handle them in simulated-clock order.
    """

    def __init__(self, backend: Backend, deterministic: bool):
        self.backend, self.deterministic = backend, deterministic
        self._sim = SimulatedClock()
        self._arrived: dict[int, TaskResult] = {}
        #: intervals the interrupted session had started, not handed to a worker again yet
        self._restarts: set[int] = set()

    def resume(
        self, log: Callable[[], Iterable[Event]], plans: Plans
    ) -> list[tuple[int, int]] | None:
        """A resumed run, in deterministic mode: rebuild the simulated clock from the log
        (``log()`` reads it; :func:`replay_schedule`). Returns the queue to start from,
        (progress, member) in order, the intervals that were running first, in the order they
        started (None: not deterministic, or a log the replay does not follow: the caller
        queues afresh)."""
        replayed = replay_schedule(log(), plans) if self.deterministic else None
        if replayed is None:
            return None
        self._sim, queue = replayed
        self._restarts = set(self._sim.running())
        return [(-1, member) for member in self._sim.running()] + queue

    def fresh(self, member: int) -> bool:
        """Whether ``member``'s next interval is a new one (not one the interrupted session had
        started and decided for: that one keeps its decision and its place on the clock)."""
        return member not in self._restarts

    def drop(self, member: int) -> None:
        """``member`` leaves the run: an interval of the interrupted session it would have
        trained again leaves the clock."""
        if member in self._restarts:
            self._restarts.discard(member)
            self._sim.forget(member)

    def started(self, task: Task) -> None:
        """``task`` was handed to a worker: on the simulated clock it lasts its steps (an
        interval started again after a resume keeps its start)."""
        if task.member in self._restarts:
            self._restarts.discard(task.member)
        elif self.deterministic:
            self._sim.start(task.member, task.steps or 1)

    def poll(self) -> list[TaskResult]:
        """Finished intervals to handle now: as they arrive, or in deterministic mode the next
        by (end, submission) on the simulated clock, once it has arrived."""
        if not self.deterministic:
            return self.backend.poll(timeout=0.5)
        for r in self.backend.poll(timeout=0.0 if self._next_arrived() else 0.5):
            self._arrived[r.member] = r
        member = self._next_arrived()
        if member is None:
            return []
        self._sim.end(member)
        return [self._arrived.pop(member)]

    def _next_arrived(self) -> int | None:
        member = self._sim.next()
        return member if member in self._arrived else None


class Plans(Protocol):
    """What the replay reads of the controller: intervals and how far a member may lead."""

    @property
    def lead_limit(self) -> int | None:
        """Steps a member may be ahead of one still training before it waits."""

    def interval(self, m: MemberState) -> Interval:
        """The next stretch of training for ``m``."""


#: kinds the replay cannot follow (a person's requests, a run that ended): it gives up
_OPAQUE = (voc.RequestHandled, voc.BudgetChanged, voc.Pinned, voc.RunStopped, voc.RunFinished)
_DECIDED = (voc.Exploited, voc.Explored, voc.Rejuvenated)


def replay_schedule(
    events: Iterable[Event], plans: Plans
) -> tuple[SimulatedClock, list[tuple[int, int]]] | None:
    """Where a deterministic asynchronous run's scheduling stood at the end of its log: the
    simulated clock with the intervals running on it, and the queue, (progress, member) in
    order. A pure function of the log: the driver's scheduling is replayed over it (the queue,
    the fill after each handled interval, each interval's steps on the clock), and every
    interval the log handles must be the one the clock ends next. None: a synchronous or
    nondeterministic run, steering, a changed number of workers, or a log the replay does not
    follow (the resumed run then queues afresh)."""
    try:
        return _Replay(plans).run(events)
    except (KeyError, ValueError):  # a log this replay does not follow
        return None


class _Replay:
    """The driver's scheduling, replayed over a deterministic asynchronous run's log."""

    def __init__(self, plans: Plans):
        self.plans = plans
        self.pop = Population()
        self.clock = SimulatedClock()
        self.queue = RunQueue(lambda member: self.pop.members[member].step)
        self.running: dict[int, int] = {}  # member -> the step its interval started at
        self.handled: list[tuple[int, int]] | None = None  # to queue: (progress, member)
        self.workers = 0
        self.filled = False  # the fill after the last handled interval is replayed
        self.decided = False  # a decision was recorded since the last handled interval

    def run(self, events: Iterable[Event]) -> tuple[SimulatedClock, list[tuple[int, int]]] | None:
        for e in events:
            if not self.take(e):
                return None
            self.pop.apply(e)
        if not self.filled and self.decided:
            self.fill()  # the fill's decisions were written: it handed out its intervals
        self.requeue()  # else the resumed run fills: the same picks, the same decisions
        alive = {m.id for m in self.pop.alive()}
        if alive != set(self.running) | set(self.queue):
            return None
        return self.clock, [(self.pop.members[m].step, m) for m in self.queue]

    def take(self, e: Event) -> bool:
        """Replay the scheduling ``e`` shows, before it is folded (False: give up)."""
        p = e.payload
        if isinstance(p, voc.RunStarted):
            workers, s = p.settings.get("workers"), p.settings
            self.workers = workers if isinstance(workers, int) else 0
            return bool(s.get("deterministic")) and not s.get("synchronous") and self.workers > 0
        if isinstance(p, voc.RunResumed):  # an exact resume goes on where the log stood
            return not p.retry and p.workers == self.workers
        if isinstance(p, _OPAQUE) or getattr(p, "by", None) is not None:
            return False
        if isinstance(p, voc.MemberCreated):
            return self.handled is None  # added later: a person's request
        if isinstance(p, (voc.Reported, voc.Checkpointed, voc.Failed)):
            if not self.filled:
                self.fill()
            if isinstance(p, voc.Reported):
                return True
            return self.ended(e.member, p)
        if isinstance(p, voc.Finished):
            if self.handled and self.handled[-1][1] == e.member:
                self.handled.pop()  # the budget is reached: it leaves on its ready point
                return True
            self.decided = True  # decided when it got a worker
        self.decided = self.decided or isinstance(p, _DECIDED)
        return True

    def ended(self, member: int | None, p: voc.Checkpointed | voc.Failed) -> bool:
        """An interval handled: it must be the one the clock ends next."""
        if member is None or self.clock.next() != member:
            return False
        self.clock.end(member)
        del self.running[member]
        self.requeue()
        assert self.handled is not None
        if isinstance(p, voc.Checkpointed):
            self.handled.append((p.step, member))
        elif not p.fatal:  # tried again from its last checkpoint
            self.handled.append((self.pop.members[member].step, member))
        self.filled = self.decided = False
        return True

    def requeue(self) -> None:
        """Queue the members handled since the last fill (at the start: every member)."""
        if self.handled is None:
            first = sorted(self.pop.alive(), key=lambda m: (m.step, m.id))
            self.handled = [(m.step, m.id) for m in first]
        for progress, member in self.handled:
            self.queue.append(member, progress)
        self.handled = []

    def fill(self) -> None:
        """The driver's fill (:meth:`hyperpop.driver.Driver.fill`), its decisions folded."""
        self.requeue()
        limit = self.plans.lead_limit
        while self.queue and len(self.running) < self.workers:
            if limit is not None and self.running:
                if self.queue.head() - min(self.running.values()) >= limit:
                    break
            member = self.queue.pick(None, lambda _: None)
            m = self.pop.members[member]
            if m.alive:
                self.running[member] = m.step
                self.clock.start(member, self.plans.interval(m).steps or 1)
        self.filled = True
