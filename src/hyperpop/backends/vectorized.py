"""The vectorized backend: the members it holds train together as one stacked model.

It runs in the driver's process. The driver submits up to :attr:`capacity` tasks (the whole
population, or a chunk of it); :meth:`VectorizedBackend.poll` trains every task it holds, a chunk
of members at once, for their intervals and returns one result per member, each with its own
checkpoint. Members keep their state in a slot of the stacked tensors between intervals; a task
that starts from a blob another slot holds (an exploit) is an index copy between slots, read
before anything is written, and a task that starts from a blob nobody holds loads it from the
checkpoint store.

**The chunk size, the chunks in parallel and the threads choose themselves** unless given
(:func:`hyperpop.backends.chunking.choose`). Before the first training step the backend
measures what one batch's activations take per member (on scratch copies of the real members)
and trains as many members at once as fit a memory budget: on a CPU 16 MiB of activations, past
which a step is compute-bound, so the whole population of a small MLP fits and a small CNN
trains in chunks. Where a chunk trains a member clearly faster than half of it (a rollout of
many tiny steps), it tries the largest chunk the memory allows; otherwise it times one batch
one chunk at a time on one thread, a chunk per core at once (each in a Python thread on one
PyTorch thread: PyTorch releases the interpreter inside its ops), and one chunk on a thread per
core, and takes what is clearly faster. The choice is logged, shown in the progress display
(:meth:`VectorizedBackend.notes`), kept in :attr:`VectorizedBackend.choice`, and recorded in
every checkpoint the backend saves (``state["extra"]["vectorized"]``), so a resume trains the
same way without measuring again.

The trainable must be :class:`Stackable`, as :class:`hyperpop.vectorized.VectorizedTrainable` is:
this module reaches it and its engine (``hyperpop.vectorized.StackedPopulation``) through the
two protocols below only, so it imports neither that package nor PyTorch.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.chunking import (
    ChunkChoice,
    Measure,
    available_memory,
    choose,
    chunk_for,
    cores,
)
from hyperpop.checkpoints import CheckpointError, CheckpointStore
from hyperpop.trainable import Trainable, TrainableError

__all__ = ["ChunkChoice", "Engine", "Stackable", "VectorizedBackend", "choose", "chunk_for"]

log = logging.getLogger("hyperpop")

#: the capacity of a backend that chooses its chunk size (the driver submits every waiting
#: member); a run records it as its ``workers``, and a resume that passes it back as ``workers``
#: gets the automatic choice again (which the checkpoints recorded)
DEFAULT_CHUNK = 4096
#: members whose activations are measured to estimate one member's
MIN_CANDIDATE = 4
#: batches drawn per timing (one untimed, then the median of the rest)
BATCHES = 4
#: a timing stops once it is this many times slower than the best so far, or after
#: :data:`MEASURE_SECONDS` (the untimed batch then counts)
STOP = 2.0
MEASURE_SECONDS = 0.5
#: on a CPU, one chunk's activations stay under this by default: past a few MiB a step is
#: compute-bound (more members at once save no per-call overhead, they only take memory)
WORKING_SET = 16 * 2**20
#: the default memory budget for one chunk's activations: this fraction of the memory available
MEMORY_FRACTION = 0.25
#: the key under a checkpoint's ``extra`` that records the choice
RECORD_KEY = "vectorized"
#: why chunks train one at a time although they could train in parallel
SERIAL_RANDOM = (
    "chunks one at a time: a step draws from PyTorch's global random generator (dropout?), "
    "whose draws parallel chunks would interleave in no fixed order"
)


class Engine(Protocol):
    """What the backend trains with: every held member's state stacked in slots
    (``hyperpop.vectorized.StackedPopulation``). Slots of different chunks may train at the
    same time, each chunk in its own thread and lane (:meth:`lanes`)."""

    def check_configs(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Refuse configs that differ in a key that cannot differ between stacked members."""

    def grow(self, size: int) -> None:
        """Make room for at least ``size`` slots."""

    def fresh(self, slot: int, config: Mapping[str, Any]) -> None:
        """A newly initialised member in ``slot``."""

    def set_config(self, slot: int, config: Mapping[str, Any]) -> None:
        """Write a member's hyperparameters into its slot."""

    def copy(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Copy slots ``src`` into slots ``dst`` (all reads before any write)."""

    def save(self, slot: int) -> dict[str, Any]:
        """The plain trainable's state of the member in ``slot``."""
        ...

    def load(self, slot: int, state: Mapping[str, Any]) -> None:
        """Write a plain trainable's state into ``slot``."""

    def lanes(self, count: int) -> None:
        """From now on ``count`` chunks train at once, on lanes ``0 .. count - 1``."""

    def train(
        self,
        slots: Sequence[int],
        steps: Sequence[int | None],
        seconds: Sequence[float | None],
        seed: int = 0,
        lane: int = 0,
        members: Sequence[int] | None = None,
    ) -> list[list[dict[str, float]]]:
        """Train ``slots`` (of ``members``) together in ``lane``; each slot's metrics, one
        dict per step. A member's random draws depend on ``seed``, its id and its step only."""
        ...

    def measure(
        self,
        slots: Sequence[int],
        size: int,
        batches: int = 3,
        limit: float | None = None,
        parallel: int = 1,
    ) -> float:
        """Seconds per member and batch of training ``parallel`` chunks of ``size`` members
        at once (scratch copies)."""
        ...

    def activation_bytes(self, slots: Sequence[int], size: int) -> int:
        """Bytes one batch's forward keeps for the backward pass, per member."""
        ...

    def draws_global_random(self, slots: Sequence[int]) -> bool:
        """Whether a training step draws from PyTorch's global random generator."""
        ...


@runtime_checkable
class Stackable(Protocol):
    """A trainable the vectorized backend can train: it builds the stacked engine
    (:class:`hyperpop.vectorized.VectorizedTrainable` is one)."""

    def stacked(self, config: dict[str, Any], device: str) -> Engine:
        """The engine, with shapes taken from ``config``, its tensors on ``device``."""
        ...


class VectorizedBackend(Backend):
    """Trains the members it holds as one stacked PyTorch model, in this process.

    Args:
        workers: members trained at once (the chunk size); same as ``chunk_size``.
            :data:`DEFAULT_CHUNK` (what a run with an automatic chunk size records) means
            automatic.
        chunk_size: members trained at once; a larger population runs in chunks, in turn.
            Default: as many as fit ``memory_budget`` (:func:`choose`), measured before the
            first training step.
        device: where the stacked tensors live (``"cpu"``, ``"cuda"``...).
        threads: ``torch.set_num_threads`` while the run trains (restored at shutdown).
            Default on a CPU: chosen by measuring, a thread per core or one (a machine whose
            cores other jobs keep busy is often faster on one: threads spin waiting for each
            other), with a chunk per core training at once where that measures faster.
        memory_budget: bytes one chunk's activations may take (default: on a CPU
            :data:`WORKING_SET`, 16 MiB, or up to a quarter of the available memory where
            larger chunks measure clearly faster; on a GPU a quarter of its free memory).
        measure: ``measure(chunk, threads, parallel) -> seconds per member and batch``, to
            replace the timing (tests); None: time the real model.
    """

    name = "vectorized"

    def __init__(
        self,
        workers: int | None = None,
        *,
        chunk_size: int | None = None,
        device: str = "cpu",
        threads: int | None = None,
        memory_budget: int | None = None,
        measure: Measure | None = None,
    ):
        chunk = chunk_size or (None if workers == DEFAULT_CHUNK else workers)
        if chunk is not None and int(chunk) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk!r}")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        #: the given chunk size (None: chosen when training starts, see :attr:`choice`)
        self.chunk_size = None if chunk is None else int(chunk)
        self.device = device
        self.threads = threads
        self.memory_budget = memory_budget
        self._measure = measure
        #: the chunk size, chunks in parallel and threads in use, once the first poll decided
        self.choice: ChunkChoice | None = None
        self._notes: list[str] = []
        self._spec: Stackable | None = None
        self._engine: Engine | None = None
        self._checkpoints: CheckpointStore | None = None
        self._pending: list[Task] = []
        self._slot: dict[int, int] = {}  # member -> slot
        self._free: list[int] = []
        self._blob: dict[int, str | None] = {}  # slot -> the blob its content equals
        self._held: dict[str, int] = {}  # blob -> a slot whose content equals it
        self._threads_before: int | None = None
        self._first_use = 0.0

    @property
    def capacity(self) -> int:
        return self.chunk_size or DEFAULT_CHUNK

    def _on_cpu(self) -> bool:
        return str(self.device).startswith("cpu")

    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        spec = factory()
        if not isinstance(spec, Stackable):
            raise TypeError(
                f"the vectorized backend needs a hyperpop.vectorized.VectorizedTrainable, got "
                f"{type(spec).__name__}; subclass hp.VectorizedTrainable (model, loss, data) "
                "or use backend='local'"
            )
        self._spec = spec
        self._checkpoints = checkpoints
        threads = self.threads or (cores() if self._on_cpu() else None)
        if threads:
            self._set_threads(int(threads))

    def _set_threads(self, threads: int) -> None:
        import torch

        if self._threads_before is None:
            self._threads_before = torch.get_num_threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def submit(self, task: Task, slot: int | None = None) -> None:
        if len(self._pending) >= self.capacity:
            raise RuntimeError("the driver submitted beyond capacity")
        self._pending.append(task)

    def free_slots(self) -> list[int]:
        return []

    def notes(self) -> list[str]:
        """What it chose, once (the progress display shows it)."""
        notes, self._notes = self._notes, []
        return notes

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
        except BaseException as e:  # reported to the driver per member
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
            assert self._engine is not None
            self._engine.grow(slot + 1)
        return slot

    def _choose(
        self, tasks: list[Task], slots: list[int], recorded: Mapping[str, Any] | None
    ) -> ChunkChoice:
        """The chunk size, chunks in parallel and threads: given, else as the resumed run
        recorded, else measured on scratch copies of ``slots``."""
        engine = self._engine
        assert engine is not None
        chunk = self.chunk_size
        threads: int | None = self.threads
        on_cpu = self._on_cpu()
        if recorded:
            chunk = chunk or _positive(recorded.get("chunk_size"))
            threads = threads or _positive(recorded.get("threads"))
            if chunk is not None and (threads is not None or not on_cpu):
                parallel = _positive(recorded.get("parallel")) or 1
                return ChunkChoice(chunk, threads, "recorded", parallel=parallel)
        options: list[int | None] = [threads] if threads is not None or not on_cpu else []
        options = options or [*sorted({1, cores()})]
        # parallel chunks: only where the backend takes the whole population (a given chunk
        # size is its capacity: one chunk a poll), on a CPU, one PyTorch thread each
        parallel = cores() if on_cpu and chunk is None and threads in (None, 1) else 1
        measure = self._measure
        if measure is None:
            best: list[float] = []

            def measure(c: int, t: int | None, p: int) -> float:
                if t is not None:
                    self._set_threads(t)
                # an option already STOP times slower than the best is not timed to the end
                limit = min(MEASURE_SECONDS, STOP * min(best) * c * BATCHES if best else math.inf)
                seconds = float(engine.measure(slots, c, BATCHES - 1, limit, p))
                best.append(seconds)
                return seconds

        # the model's first batch (which also pays PyTorch's first-use costs) measures the
        # activations; the timings come after it
        per_member = int(engine.activation_bytes(slots, min(len(slots), MIN_CANDIDATE)))
        note = ""
        if parallel > 1 and engine.draws_global_random(slots[:MIN_CANDIDATE]):
            parallel, note = 1, SERIAL_RANDOM
        self._first_use = time.perf_counter()
        budget = cap = self.memory_budget
        if chunk is None and budget is None:
            available = available_memory(self.device)
            cap = None if available is None else int(available * MEMORY_FRACTION)
            budget = min(WORKING_SET, cap or WORKING_SET) if on_cpu else cap
        choice = choose(
            len(tasks),
            measure,
            chunk=chunk,
            threads=options,
            parallel=parallel,
            per_member_bytes=0 if chunk else per_member,
            budget=budget,
            cap=cap,
        )
        return replace(choice, note=note)

    def _train(self, tasks: list[Task]) -> list[TaskResult]:
        assert self._checkpoints is not None and self._spec is not None
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
        recorded: Mapping[str, Any] | None = None
        for i in loads:
            task = tasks[i]
            if task.checkpoint is None:
                engine.fresh(slots[i], task.config)
            else:
                state = self._checkpoints.load(task.checkpoint)
                extra = state.get("extra") if isinstance(state, Mapping) else None
                if recorded is None and isinstance(extra, Mapping):
                    recorded = extra.get(RECORD_KEY)
                engine.load(slots[i], state)
        for task, slot in zip(tasks, slots):
            engine.set_config(slot, task.config)  # after any load: the config has the last word
            self._dirty(task.member)
        if self.choice is None:
            self._first_use = time.perf_counter()
            choice = self._choose(tasks, slots, recorded)
            self.choice = replace(choice, seconds=time.perf_counter() - self._first_use)
            log.info("vectorized backend: %s", self.choice.describe())
            self._notes.append(self.choice.headline())
        if self.choice.threads is not None:
            self._set_threads(self.choice.threads)
        order = sorted(range(len(tasks)), key=lambda i: slots[i])
        size = self.choice.chunk_size
        chunks = [order[a : a + size] for a in range(0, len(order), size)]
        reports = self._train_chunks(tasks, slots, chunks, self.choice.parallel)
        results: list[TaskResult] = []
        for i, task in enumerate(tasks):
            slot = slots[i]
            result = TaskResult(task=task, reports=reports[i], worker="vectorized")
            result.restored = restored[i]
            state = engine.save(slot)
            state["extra"][RECORD_KEY] = self.choice.record()
            blob = self._checkpoints.save(task.member, result.end_step, state)
            result.checkpoint = blob
            self._blob[slot] = blob
            self._held[blob] = slot
            results.append(result)
        return results

    def _train_chunks(
        self, tasks: list[Task], slots: list[int], chunks: list[list[int]], parallel: int
    ) -> dict[int, list[dict[str, float]]]:
        """Train each chunk of task indices; each task's reports. With ``parallel`` > 1 that
        many chunks train at once, a thread and a lane of the engine each (lane ``j`` takes
        chunks ``j``, ``j + parallel``...); the results are the same as one at a time."""
        engine = self._engine
        assert engine is not None
        reports: dict[int, list[dict[str, float]]] = {}
        stop = threading.Event()

        def lane(j: int) -> None:
            for chunk in chunks[j::parallel]:
                if stop.is_set():
                    return
                # each member's data order comes from the member (its id and step), never
                # from the chunk: a resumed asynchronous run groups members otherwise
                out = engine.train(
                    [slots[i] for i in chunk],
                    [tasks[i].steps for i in chunk],
                    [tasks[i].seconds for i in chunk],
                    0,
                    j,
                    [tasks[i].member for i in chunk],
                )
                reports.update(zip(chunk, out))

        parallel = max(1, min(parallel, len(chunks)))
        engine.lanes(parallel)
        if parallel == 1:
            lane(0)
            return reports
        with ThreadPoolExecutor(parallel, thread_name_prefix="hyperpop-lane") as pool:
            futures = [pool.submit(lane, j) for j in range(parallel)]
            try:
                for future in futures:
                    future.result()
            finally:  # a lane that failed (or an interrupt) stops the others after their chunk
                stop.set()
        return reports


def _positive(value: Any) -> int | None:
    """A recorded count, or None where it is missing or not a positive int."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
