"""A backend that trains in the driver's own process on a simulated clock.

``SimulatedBackend(workers=2)`` behaves like ``workers`` workers training at once, but it trains
every interval in the calling process and hands results back in the order a simulated clock
says they finish. Runs are deterministic and start instantly, with no processes: the way to
test a strategy or a scheduling change on hundreds of seeds, or a trainable's PBT behaviour,
before paying for real workers. Each interval takes ``duration(task, reports)`` simulated
seconds (by default one per step trained), so members of different speeds can be modelled.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.worker import WorkerCore
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["SimulatedBackend"]

Duration = Callable[[Task, list[dict[str, Any]]], float]


def _steps(task: Task, reports: list[dict[str, Any]]) -> float:
    return float(len(reports))


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
        #: the simulated time (seconds since the start)
        self.clock = 0.0
        self._core: WorkerCore | None = None
        self._running: list[tuple[float, int, TaskResult]] = []
        self._order = 0

    @property
    def capacity(self) -> int:
        return self.workers

    def simulated_seconds(self) -> float:
        """Simulated seconds since the start: the driver's clock runs on them, so event times
        and wall-time budgets follow the simulation, not the machine."""
        return self.clock

    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        self._core = WorkerCore(factory, checkpoints, name="simulated")

    def submit(self, task: Task, slot: int | None = None) -> None:
        if self._core is None:
            raise RuntimeError("SimulatedBackend.submit before start")
        result = self._core.run(task)
        self._order += 1
        end = self.clock + float(self.duration(task, result.reports))
        heapq.heappush(self._running, (end, self._order, result))

    def poll(self, timeout: float | None) -> list[TaskResult]:
        if not self._running:
            return []
        end, _, result = heapq.heappop(self._running)
        self.clock = max(self.clock, end)
        return [result]

    def forget(self, member: int) -> None:
        if self._core is not None:
            self._core.forget(member)

    def shutdown(self) -> None:
        if self._core is not None:
            for member in list(self._core.held):
                self._core.forget(member)
        self._running.clear()
