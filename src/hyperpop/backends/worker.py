"""The code that runs inside a worker: hold members' trainables in memory, train intervals.

Shared by every backend (a local worker process, a Ray actor).
"""

from __future__ import annotations

import gc
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hyperpop.backends.base import Task, TaskResult
from hyperpop.backends.cache import state_nbytes
from hyperpop.checkpoints import CheckpointError, StateStore
from hyperpop.trainable import Trainable, TrainableError

__all__ = ["WorkerCore"]

#: a garbage collection follows evictions that drop at least this many bytes of state
_COLLECT_ABOVE = 16 * 2**20


@dataclass
class _Held:
    trainable: Trainable
    blob: str | None
    config: dict[str, Any]
    nbytes: int = 0  # the size of its saved state (what holding it costs, about)


class WorkerCore:
    """Trains tasks, keeping members' trainables in memory within ``cache_size`` members and
    ``cache_bytes`` bytes of saved state (each None: no limit).

    A member whose next task starts from the blob this worker saved for it last continues in
    memory; any other start (a donor's blob after an exploit, a blob saved elsewhere) is loaded,
    and ``apply(config)`` always follows ``load``. Beyond either limit the members trained
    longest ago are dropped (a member whose state alone exceeds ``cache_bytes`` is not kept);
    they load their checkpoints when they train next.
    """

    def __init__(
        self,
        factory: Callable[[], Trainable],
        checkpoints: StateStore,
        *,
        name: str = "worker",
        cache_size: int | None = None,
        cache_bytes: int | None = None,
    ):
        self.factory = factory
        self.checkpoints = checkpoints
        self.name = name
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.held: OrderedDict[int, _Held] = OrderedDict()
        #: members dropped to stay within the limits (and not held again) since
        #: :meth:`take_evicted` was last called
        self.evicted: set[int] = set()
        self._training: Trainable | None = None  # the trainable of the running task

    @property
    def held_bytes(self) -> int:
        """The saved-state size of the members held in memory."""
        return sum(h.nbytes for h in self.held.values())

    def take_evicted(self) -> list[int]:
        """The members dropped to stay within the limits (and not held again) since the last
        call."""
        out, self.evicted = sorted(self.evicted), set()
        return out

    def _evict(self) -> None:
        dropped = 0
        while self.held and (
            (self.cache_size is not None and len(self.held) > self.cache_size)
            or (self.cache_bytes is not None and self.held_bytes > self.cache_bytes)
        ):
            member = next(iter(self.held))
            dropped += self.held[member].nbytes
            self.forget(member)
            self.evicted.add(member)
        if dropped >= _COLLECT_ABOVE:  # free large states held in reference cycles now
            gc.collect()

    def forget(self, member: int) -> None:
        """Drop a member's in-memory state."""
        held = self.held.pop(member, None)
        if held is not None:
            _cleanup(held.trainable)

    def forget_all(self) -> None:
        """Drop every member's in-memory state."""
        for member in list(self.held):
            self.forget(member)

    def run(self, task: Task, on_step: Callable[[int], None] | None = None) -> TaskResult:
        """Train one interval; never raises (errors come back in the result).

        ``on_step(n)`` is called after each of the interval's steps (n: steps so far), for a
        backend that tells the driver how far a running task has got."""
        t0 = time.perf_counter()
        result = TaskResult(task=task, worker=self.name)
        user = _Stopwatch()
        self._training = None
        try:
            trainable = self._trainable_for(task, result, user)
            if task.reset is not None:  # rejuvenation: a partial reset of the weights
                with user:
                    trainable.reset(task.reset)
                    trainable.apply(task.config)
            # the state is about to change: until saved, the cached copy is not a checkpoint
            self.held.pop(task.member, None)
            trainable.config = task.config
            self._train(trainable, task, result, on_step, user)
            self._keep(trainable, task, result, user)
        except BaseException as e:  # reported to the driver
            if isinstance(e, KeyboardInterrupt):
                raise
            self._fail(task, result, e)
        self._training = None
        result.user_seconds = user.seconds
        result.seconds = time.perf_counter() - t0
        return result

    def _trainable_for(self, task: Task, result: TaskResult, user: _Stopwatch) -> Trainable:
        """The member's trainable, ready to train the task: the one held in memory when the
        task starts from the blob saved for it here last, else a new one that loads the
        task's checkpoint (``result.restored``)."""
        held = self.held.get(task.member)
        if held is not None and task.checkpoint is not None and held.blob == task.checkpoint:
            self._training = trainable = held.trainable
            self.held.move_to_end(task.member)
            if held.config != task.config:
                with user:
                    trainable.apply(task.config)
            return trainable
        self.forget(task.member)
        result.restored = True
        state = None if task.checkpoint is None else self.checkpoints.load(task.checkpoint)
        with user:
            self._training = trainable = self.factory()
            trainable.config = task.config
            trainable.setup(task.config)
            if task.checkpoint is not None:
                trainable.load(state)
                trainable.apply(task.config)
        return trainable

    @staticmethod
    def _train(
        trainable: Trainable,
        task: Task,
        result: TaskResult,
        on_step: Callable[[int], None] | None,
        user: _Stopwatch,
    ) -> None:
        """Train the task's steps (or seconds), its reports into ``result``."""
        start = time.perf_counter()
        while True:
            with user:
                metrics = trainable.train()
            if not isinstance(metrics, Mapping):
                raise TrainableError(
                    f"train() must return a dict of metrics, got {type(metrics).__name__}"
                )
            result.reports.append(dict(metrics))
            n = len(result.reports)
            if on_step is not None:
                on_step(n)
            if task.steps is not None and n >= task.steps:
                break
            if task.seconds is not None and time.perf_counter() - start >= task.seconds:
                break

    def _keep(self, trainable: Trainable, task: Task, result: TaskResult, user: _Stopwatch) -> None:
        """Save the trained state (``result.checkpoint``) and hold the trainable in memory,
        within the limits."""
        with user:
            state = trainable.save()
        result.checkpoint = self.checkpoints.save(task.member, result.end_step, state)
        nbytes = state_nbytes(state)
        del state
        self.held[task.member] = _Held(trainable, result.checkpoint, task.config, nbytes)
        self.evicted.discard(task.member)
        self._evict()

    def _fail(self, task: Task, result: TaskResult, e: BaseException) -> None:
        """The task failed with ``e``: drop the member's trainable, the error into ``result``."""
        self.forget(task.member)
        if self._training is not None:
            _cleanup(self._training)
        result.error = "".join(traceback.format_exception(e)).rstrip()
        result.fatal = isinstance(e, TrainableError) and not isinstance(e, CheckpointError)
        result.reports = []
        result.checkpoint = None


def _cleanup(trainable: Trainable) -> None:
    """``trainable.cleanup()``, whose errors must not take the worker down."""
    try:
        trainable.cleanup()
    except Exception:  # noqa: BLE001
        pass


class _Stopwatch:
    """The seconds spent in its ``with`` blocks that finished (the user's code's time)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since = 0.0

    def __enter__(self) -> None:
        self._since = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is None:
            self.seconds += time.perf_counter() - self._since
