"""Measurements the vectorized backend chooses its chunks from, taken on scratch copies of real
members: seconds per member and batch (one chunk, or several at once in threads), the bytes one
batch's activations keep per member, and whether a step draws from PyTorch's global random
generator. Nothing held changes, and the global random state is put back, so a run trains the
same whatever was measured before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from hyperpop.vectorized.lane import Lane
from hyperpop.vectorized.trainable import Members

if TYPE_CHECKING:
    from hyperpop.vectorized.engine import StackedPopulation

__all__ = ["activation_bytes", "draws_global_random", "measure"]


class Scratch:
    """Scratch copies of some slots (repeated to fill ``size``), trained a batch at a time on
    one lane; a new pass over the step's batches whenever one runs out."""

    def __init__(self, engine: StackedPopulation, slots: Sequence[int], size: int, lane: Lane):
        if not slots:
            raise ValueError("measuring needs at least one slot to copy")
        self.engine, self.lane, self.size = engine, lane, size
        idx = torch.tensor([slots[i % len(slots)] for i in range(size)], device=engine.device)
        self.chunk = engine.chunk(idx)
        for v in self.chunk.params.values():
            v.requires_grad_(True)
        forward = lane.forward(self.chunk.params, self.chunk.buffers)
        self.members = Members(size, self.chunk.hp, torch.Generator().manual_seed(0), forward, 0)
        self._batches: Iterator[Any] = iter(())

    def step(self) -> None:
        """One batch: draw it, forward, backward, the optimiser step."""
        batch = next(self._batches, None)
        if batch is None:  # the step's batches ran out: a new pass
            self._batches = iter(self.engine.spec.batches(self.members))
            batch = next(self._batches)
        self.lane.module.train()
        self.lane.batch(self.chunk, batch)
        if self.engine.device.type == "cuda":
            torch.cuda.synchronize(self.engine.device)


@contextmanager
def _random_state_kept(device: torch.device) -> Iterator[None]:
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def measure(
    engine: StackedPopulation,
    slots: Sequence[int],
    size: int,
    batches: int = 3,
    limit: float | None = None,
    parallel: int = 1,
) -> float:
    """Seconds per member and batch of training ``size`` members at once: the median of
    ``batches`` timed batches after one untimed, on scratch copies of ``slots``.

    With ``parallel`` > 1, that many chunks of ``size`` train at the same time, each in a
    thread and a lane of its own (each untimed batch first, then all start together), and a
    batch's time counts for ``parallel * size`` members. ``limit``: stop after the batch that
    takes the measurement past this many seconds (the first batch's time counts if it is the
    only one).
    """
    if parallel <= 1:
        times: list[float] = []
        scratch = Scratch(engine, slots, size, engine.lane(0))
        with _random_state_kept(engine.device):
            for _ in range(batches + 1):
                t = time.perf_counter()
                scratch.step()
                times.append(time.perf_counter() - t)
                if limit is not None and sum(times) >= limit:
                    break
        kept = sorted(times[1:] or times)
        return kept[len(kept) // 2] / size
    engine.lanes(parallel)
    scratches = [Scratch(engine, slots, size, engine.lane(j)) for j in range(parallel)]
    start = [0.0]
    ready = threading.Barrier(parallel, action=lambda: start.__setitem__(0, time.perf_counter()))
    steps: list[list[float]] = [[] for _ in range(parallel)]

    def run(j: int) -> None:
        try:
            scratches[j].step()  # untimed: this thread's first use
            ready.wait()
        except BaseException:
            ready.abort()  # the others stop waiting
            raise
        for _ in range(batches):
            t = time.perf_counter()
            scratches[j].step()
            steps[j].append(time.perf_counter() - t)
            if limit is not None and time.perf_counter() - start[0] >= limit:
                break

    with _random_state_kept(engine.device), ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(run, j) for j in range(parallel)]
        errors = [f.exception() for f in futures]
    # a thread that failed aborted the start, which the others report as a broken barrier
    failed = [
        e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)
    ]
    if failed:
        raise failed[0]
    kept = sorted(t for ts in steps for t in ts)
    return kept[len(kept) // 2] / (size * parallel)


def activation_bytes(engine: StackedPopulation, slots: Sequence[int], size: int) -> int:
    """Bytes that one batch's forward keeps for the backward pass, per member, measured on
    ``size`` members at once (scratch copies of ``slots``)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # no plain storage (a tensor subclass)
            pass
        return t

    scratch = Scratch(engine, slots, size, engine.lane(0))
    with _random_state_kept(engine.device):
        with torch.autograd.graph.saved_tensors_hooks(pack, _same):
            scratch.step()
    return sum(seen.values()) // max(size, 1)


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def draws_global_random(engine: StackedPopulation, slots: Sequence[int]) -> bool:
    """Whether one training batch (drawing it, the loss, backward, the optimiser step) of
    scratch copies of ``slots`` draws from PyTorch's global random generator (dropout does):
    chunks that train in parallel would interleave such draws in no fixed order."""
    scratch = Scratch(engine, slots, max(1, len(slots)), engine.lane(0))

    def state() -> list[torch.Tensor]:
        cuda = torch.cuda.get_rng_state_all() if engine.device.type == "cuda" else []
        return [torch.get_rng_state(), *cuda]

    with _random_state_kept(engine.device):
        before = state()
        scratch.step()
        after = state()
    return any(not torch.equal(a, b) for a, b in zip(before, after))
