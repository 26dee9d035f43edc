"""The vectorized backend: the members it holds train together as one stacked model.

It runs in the driver's process. The driver submits up to :attr:`capacity` tasks (the whole
population, or a chunk of it); :meth:`VectorizedBackend.poll` trains every task it holds at once
for their intervals and returns one result per member, each with its own checkpoint. Members keep
their state in a slot of the stacked tensors between intervals; a task that starts from a blob
another slot holds (an exploit) is an index copy between slots, read before anything is written,
and a task that starts from a blob nobody holds loads it from the checkpoint store.

The trainable must be a :class:`hyperpop.vectorized.VectorizedTrainable` (the backend reaches it
through its ``stacked()`` method only, so this module does not import PyTorch).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.checkpoints import CheckpointError, CheckpointStore
from hyperpop.trainable import Trainable, TrainableError

__all__ = ["VectorizedBackend"]

#: members trained at once when no chunk size is given (the whole population in practice)
DEFAULT_CHUNK = 4096


def _cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class VectorizedBackend(Backend):
    """Trains the members it holds as one stacked PyTorch model, in this process.

    Args:
        workers: members trained at once (the chunk size); same as ``chunk_size``.
        chunk_size: members trained at once; a larger population runs in chunks, in turn
            (default :data:`DEFAULT_CHUNK`, i.e. the whole population).
        device: where the stacked tensors live (``"cpu"``, ``"cuda"``...).
        threads: ``torch.set_num_threads`` while the run trains (restored at shutdown).
            Default on a CPU: the cores this process may use (the one training process
            should use them all, as the local backend's workers do together). On a machine
            whose cores other jobs keep busy, 1 can be much faster: threads spin waiting for
            each other.
    """

    name = "vectorized"

    def __init__(
        self,
        workers: int | None = None,
        *,
        chunk_size: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ):
        chunk = chunk_size or workers or DEFAULT_CHUNK
        if int(chunk) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk!r}")
        self.chunk_size = int(chunk)
        self.device = device
        self.threads = threads
        self._spec: Any = None
        self._engine: Any = None
        self._checkpoints: CheckpointStore | None = None
        self._pending: list[Task] = []
        self._slot: dict[int, int] = {}  # member -> slot
        self._free: list[int] = []
        self._blob: dict[int, str | None] = {}  # slot -> the blob its content equals
        self._held: dict[str, int] = {}  # blob -> a slot whose content equals it
        self._threads_before: int | None = None

    @property
    def capacity(self) -> int:
        return self.chunk_size

    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        spec = factory()
        if not callable(getattr(spec, "stacked", None)):
            raise TypeError(
                f"the vectorized backend needs a hyperpop.vectorized.VectorizedTrainable, got "
                f"{type(spec).__name__}; subclass hp.VectorizedTrainable (model, loss, data) "
                "or use backend='local'"
            )
        self._spec = spec
        self._checkpoints = checkpoints
        threads = self.threads or (_cores() if str(self.device).startswith("cpu") else None)
        if threads:
            import torch

            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(int(threads))

    def submit(self, task: Task, slot: int | None = None) -> None:
        if len(self._pending) >= self.capacity:
            raise RuntimeError("the driver submitted beyond capacity")
        self._pending.append(task)

    def free_slots(self) -> list[int]:
        return []

    def affinity(self, member: int) -> int | None:
        return None

    def forget(self, member: int) -> None:
        slot = self._slot.pop(member, None)
        if slot is None:
            return
        blob = self._blob.pop(slot, None)
        if blob is not None and self._held.get(blob) == slot:
            del self._held[blob]
        self._free.append(slot)

    def shutdown(self) -> None:
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        self._pending = []
        self._engine = None
        self._slot, self._free, self._blob, self._held = {}, [], {}, {}

    # --- the work --------------------------------------------------------------------------
    def poll(self, timeout: float | None) -> list[TaskResult]:
        if not self._pending:
            return []
        tasks, self._pending = self._pending, []
        t0 = time.perf_counter()
        try:
            results = self._train(tasks)
        except BaseException as e:  # noqa: BLE001 - reported to the driver per member
            if isinstance(e, KeyboardInterrupt):
                raise
            error = "".join(traceback.format_exception(e)).rstrip()
            fatal = isinstance(e, TrainableError) and not isinstance(e, CheckpointError)
            for task in tasks:  # their slots no longer equal any checkpoint
                self._dirty(task.member)
            results = [
                TaskResult(task=t, error=error, fatal=fatal, worker="vectorized") for t in tasks
            ]
        share = (time.perf_counter() - t0) / len(tasks)
        for r in results:
            r.seconds = share
            if r.error is None:
                r.user_seconds = share
        return results

    def _dirty(self, member: int) -> None:
        slot = self._slot.get(member)
        if slot is None:
            return
        blob = self._blob.get(slot)
        if blob is not None and self._held.get(blob) == slot:
            del self._held[blob]
        self._blob[slot] = None

    def _slot_for(self, member: int) -> int:
        slot = self._slot.get(member)
        if slot is None:
            used = len(self._slot) + len(self._free)
            slot = self._free.pop() if self._free else used
            self._slot[member] = slot
            self._blob[slot] = None
            self._engine.grow(slot + 1)
        return slot

    def _train(self, tasks: list[Task]) -> list[TaskResult]:
        assert self._checkpoints is not None
        if self._engine is None:
            self._engine = self._spec.stacked(dict(tasks[0].config), self.device)
        engine = self._engine
        engine.check_configs([t.config for t in tasks])
        slots = [self._slot_for(t.member) for t in tasks]
        restored = [False] * len(tasks)
        copies: list[tuple[int, int]] = []
        loads: list[int] = []
        for i, (task, slot) in enumerate(zip(tasks, slots)):
            if task.checkpoint is not None and self._blob.get(slot) == task.checkpoint:
                continue  # training goes on in memory
            restored[i] = True
            source = self._held.get(task.checkpoint) if task.checkpoint is not None else None
            if source is not None and source != slot:
                copies.append((slot, source))
            else:
                loads.append(i)
        # every copy reads the slots as they are before this batch writes anything
        engine.copy([d for d, _ in copies], [s for _, s in copies])
        for i in loads:
            task = tasks[i]
            if task.checkpoint is None:
                engine.fresh(slots[i], task.config)
            else:
                engine.load(slots[i], self._checkpoints.load(task.checkpoint))
        for task, slot in zip(tasks, slots):
            engine.set_config(slot, task.config)  # after any load: the config has the last word
            self._dirty(task.member)
        order = sorted(range(len(tasks)), key=lambda i: slots[i])
        seed = min(t.step for t in tasks) * 7919 + len(tasks)
        reports = engine.train(
            [slots[i] for i in order],
            [tasks[i].steps for i in order],
            [tasks[i].seconds for i in order],
            seed,
        )
        results: list[TaskResult | None] = [None] * len(tasks)
        for j, i in enumerate(order):
            task, slot = tasks[i], slots[i]
            result = TaskResult(task=task, reports=reports[j], worker="vectorized")
            result.restored = restored[i]
            blob = self._checkpoints.save(task.member, result.end_step, engine.save(slot))
            result.checkpoint = blob
            self._blob[slot] = blob
            self._held[blob] = slot
            results[i] = result
        return [r for r in results if r is not None]
