"""Scheduling: which waiting member a free worker trains next (:class:`RunQueue`), and in which
order finished intervals are handled (:class:`ResultOrder`)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.simulated import SimulatedClock

__all__ = ["ResultOrder", "RunQueue"]


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

    def append(self, member: int) -> None:
        """Queue ``member`` (again: its earlier entry is replaced)."""
        self._order += 1
        self._queued[member] = self._order
        heapq.heappush(self._heap, (self._progress(member), self._order, member))

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
    timing.

    Args:
        backend: polled for finished intervals.
        deterministic: handle them in simulated-clock order.
    """

    def __init__(self, backend: Backend, deterministic: bool):
        self.backend, self.deterministic = backend, deterministic
        self._sim = SimulatedClock()
        self._arrived: dict[int, TaskResult] = {}

    def started(self, task: Task) -> None:
        """``task`` was handed to a worker: on the simulated clock it lasts its steps."""
        if self.deterministic:
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
