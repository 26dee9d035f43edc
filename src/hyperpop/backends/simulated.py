"""A backend that trains in the driver's own process on a simulated clock.

``SimulatedBackend(workers=2)`` behaves like ``workers`` workers training at once, but it trains
every interval in the calling process and hands results back in the order a simulated clock
says they finish. Runs are deterministic and start instantly, with no processes: the way to
test a strategy or a scheduling change on hundreds of seeds, or a trainable's PBT behaviour,
before paying for real workers. Each interval takes ``duration(task, reports)`` simulated
seconds (by default one per step trained), so members of different speeds can be modelled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperpop.backends.base import Backend, Task, TaskResult, check_workers
from hyperpop.backends.worker import WorkerCore
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["SimulatedBackend", "SimulatedClock"]

Duration = Callable[[Task, list[dict[str, Any]]], float]


def _steps(task: Task, reports: list[dict[str, Any]]) -> float:
    return float(len(reports))


class SimulatedClock:
    """The one ordering rule of a simulation, shared by this backend and the driver's
    deterministic mode: an interval that starts when the clock reads ``t`` and lasts ``d`` ends
    at ``t + d``; intervals end in the order (end, start), ties by which started first, and the
    clock moves to each end as it is reached. One interval per member at a time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._started = 0
        self._ends: dict[int, tuple[float, int]] = {}

    def __bool__(self) -> bool:
        return bool(self._ends)

    def start(self, member: int, duration: float) -> None:
        """``member``'s interval starts now and lasts ``duration``."""
        self._started += 1
        self._ends[member] = (self.now + duration, self._started)

    def next(self) -> int | None:
        """The member whose interval ends first (None: none is running)."""
        return min(self._ends, key=self._ends.__getitem__) if self._ends else None

    def end(self, member: int) -> None:
        """``member``'s interval ended: the clock moves on to its end."""
        self.now = max(self.now, self._ends.pop(member)[0])

    def running(self) -> list[int]:
        """The members whose intervals run, in the order they started."""
        return sorted(self._ends, key=lambda member: self._ends[member][1])

    def forget(self, member: int) -> None:
        """``member``'s interval will not end: it leaves the clock (which keeps its time)."""
        self._ends.pop(member, None)

    def clear(self) -> None:
        """Forget every running interval (the clock keeps its time)."""
        self._ends.clear()


class SimulatedBackend(Backend):
    """``workers`` simulated workers in the driver's process.

    Args:
        workers: tasks running at once on the simulated clock.
        duration: simulated seconds an interval takes, from its task and its reports
            (default: one per step). Ties finish in submission order.
    """

    name = "simulated"
    durable = False  # a simulation: checkpoints are not synced to disk

    def __init__(self, workers: int = 2, duration: Duration | None = None):
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"SimulatedBackend needs workers >= 1, got {workers!r}")
        self.workers = workers
        self.duration = duration or _steps
        #: the simulated time (``clock.now``: seconds since the start)
        self.clock = SimulatedClock()
        self._core: WorkerCore | None = None
        self._running: dict[int, TaskResult] = {}

    @property
    def capacity(self) -> int:
        return self.workers

    def resize(self, workers: int) -> None:
        """``workers`` simulated workers from now on: more start at once; with fewer, the
        intervals running go on to their end (the driver submits no more than ``workers``)."""
        self.workers = check_workers(workers)

    def simulated_seconds(self) -> float:
        """Simulated seconds since the start: the driver's clock runs on them, so event times
        and wall-time budgets follow the simulation, not the machine."""
        return self.clock.now

    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        self._core = WorkerCore(factory, checkpoints, name="simulated")

    def submit(self, task: Task, slot: int | None = None) -> None:
        if self._core is None:
            raise RuntimeError("SimulatedBackend.submit before start")
        if len(self._running) >= self.workers:
            raise RuntimeError(
                f"SimulatedBackend: a task submitted while {len(self._running)} run on "
                f"{self.workers} workers (the driver submitted beyond capacity)"
            )
        result = self._core.run(task)
        self.clock.start(task.member, float(self.duration(task, result.reports)))
        self._running[task.member] = result

    def poll(self, timeout: float | None) -> list[TaskResult]:
        member = self.clock.next()
        if member is None:
            return []
        self.clock.end(member)
        return [self._running.pop(member)]

    def forget(self, member: int) -> None:
        if self._core is not None:
            self._core.forget(member)

    def shutdown(self) -> None:
        if self._core is not None:
            self._core.forget_all()
        self._running.clear()
        self.clock.clear()
