"""How the vectorized backend trains a population: how many members at once (the chunk size),
how many chunks at once (each in a thread of its own) and on how many PyTorch threads.

:func:`choose` decides from measurements it asks for (``measure(chunk, threads, parallel)``:
seconds per member and batch), so it is deterministic given them and needs neither PyTorch nor
a model; :class:`ChunkChoice` is what it decided, as the log, the live view and a checkpoint
show it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GAIN",
    "PARALLEL_SLACK",
    "PROBE",
    "THREADS_GAIN",
    "ChunkChoice",
    "Measure",
    "available_memory",
    "choose",
    "chunk_for",
    "cores",
]

#: ``measure(chunk, threads, parallel)``: seconds per member and batch of training ``parallel``
#: chunks of ``chunk`` members at once, each on ``threads`` PyTorch threads
Measure = Callable[[int, "int | None", int], float]

#: a chunk grows past the memory budget only if it trains a member this much faster than half
#: of it
GAIN = 1.3
#: thread counts and parallel chunks are timed on at most this many members per chunk
PROBE = 8
#: chunks trained in parallel (a Python thread each, one PyTorch thread each) are taken unless
#: they train a member this much slower than one chunk at a time. They never wait for each
#: other, so when other jobs keep the cores busy they cost little (the digits CNN: the same
#: CPU time and wall time as one chunk at a time at load 9 on 2 cores), and they gain up to
#: a core's worth when one frees up; the timing sees only one moment of a long run
PARALLEL_SLACK = 1.1
#: more threads inside each op only if they train a member this much faster than the best so
#: far: spinning threads on a busy machine cost 2-15x, they gained at most 1.6x on a quiet one
THREADS_GAIN = 1.5


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory(device: str) -> int | None:
    """Bytes free for new tensors on ``device`` (None: unknown)."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class ChunkChoice:
    """How many members train at once, how many chunks at once, on how many threads, and how
    that was decided.

    Attributes:
        chunk_size: members trained at once, in one stacked step.
        threads: ``torch.set_num_threads`` while training (None: left as it is, off the CPU).
        source: ``"measured"``, ``"given"`` (nothing left to measure) or ``"recorded"`` (read
            from the checkpoints of the run being resumed).
        timings: ``(chunk, threads, parallel, seconds per member and batch)`` of each
            measurement, in the order taken.
        seconds: what choosing took (after the model's first batch, whose first-use costs the
            training would pay anyway).
        activation_bytes: what one batch's activations take per member (0: not measured).
        parallel: chunks trained at the same time, each in a Python thread of its own.
        note: why parallel chunks were not considered, if that is worth saying.
    """

    chunk_size: int
    threads: int | None
    source: str = "measured"
    timings: tuple[tuple[int, int | None, int, float], ...] = field(default=())
    seconds: float = 0.0
    activation_bytes: int = 0
    parallel: int = 1
    note: str = ""

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps: enough for a resume to train the same way."""
        return {"chunk_size": self.chunk_size, "threads": self.threads, "parallel": self.parallel}

    def summary(self) -> str:
        """The choice in a few words, e.g. ``16 members at once, 2 chunks in parallel on 1
        thread each``."""
        line = f"{self.chunk_size} members at once"
        if self.parallel > 1:
            line += f", {self.parallel} chunks in parallel"
        if self.threads is not None:
            line += f" on {self.threads} thread{'' if self.threads == 1 else 's'}"
            line += " each" if self.parallel > 1 else ""
        return line

    def headline(self) -> str:
        """One line for the live view: the choice and where it came from."""
        how = {"measured": f"measured in {self.seconds:.1f} s"}.get(self.source, self.source)
        return f"vectorized backend: {self.summary()} ({how})"

    def describe(self) -> str:
        """One line for the log, e.g. ``16 members at once on 1 thread (measured: ...)``."""
        line = f"{self.summary()} ({self.source}"
        if self.timings:
            ms = ", ".join(
                f"{'' if p == 1 else f'{p}x'}{c}{'' if t is None else f' on {t}'}: {s * 1e3:.3g}"
                for c, t, p, s in self.timings
            )
            line += f"; ms per member and batch, [chunks x] members at once on threads: {ms}"
        if self.activation_bytes:
            kib = self.activation_bytes / 2**10
            size = f"{kib / 2**10:.2f} MiB" if kib >= 1024 else f"{kib:.0f} KiB"
            line += f"; activations {size} per member and batch"
        if self.note:
            line += f"; {self.note}"
        if self.timings:
            line += f"; choosing took {self.seconds:.1f} s"
        return line + ")"


def chunk_for(population: int, per_member_bytes: int = 0, budget: int | None = None) -> int:
    """Members to train at once: the whole ``population`` if its activations
    (``per_member_bytes`` each) fit ``budget``, else as many as fit, in chunks of equal size
    (64 members of which 20 fit: 4 chunks of 16, not 20, 20, 20 and 4)."""
    population = max(1, int(population))
    if budget is None or per_member_bytes <= 0:
        return population
    fit = max(1, int(budget) // int(per_member_bytes))
    if fit >= population:
        return population
    return math.ceil(population / math.ceil(population / fit))


def balanced(population: int, chunk: int, parallel: int) -> int:
    """A chunk size no larger than ``chunk`` whose number of chunks is a multiple of
    ``parallel``, so that no thread waits for the last round (48 members, chunks of 16 on 2
    threads: 4 chunks of 12, not 3 of 16)."""
    count = math.ceil(population / max(1, chunk))
    count = math.ceil(count / parallel) * parallel
    return max(1, math.ceil(population / count))


def choose(
    population: int,
    measure: Measure,
    *,
    chunk: int | None = None,
    threads: Sequence[int | None] = (None,),
    parallel: int = 1,
    per_member_bytes: int = 0,
    budget: int | None = None,
    cap: int | None = None,
) -> ChunkChoice:
    """Choose the chunk size, the chunks in parallel and the threads: deterministic given the
    measurements.

    1. The chunk size is ``chunk`` if given, else :func:`chunk_for` the measured activations
       and ``budget``.
    2. Without a given chunk, and if the population does not fit at once: the chunk and its
       half are timed one at a time on the first thread count, and if the chunk trains a member
       at least :data:`GAIN` times faster than its half (the step is bound by per-call
       overhead, e.g. a rollout of many tiny steps), the largest chunk within ``cap`` (the
       population if it fits) is timed and kept if it is no slower per member.
    3. Unless the step is bound by per-call overhead (tiny calls gain nothing from more
       threads: they wait for the interpreter, and spinning threads can make one batch of a
       rollout take seconds), the other layouts are timed on the chunk or :data:`PROBE` members
       if fewer, against one chunk at a time on the first thread count:

       * if ``parallel`` > 1 and the population takes at least two chunks, ``parallel``
         chunks at once on one thread each, each within its share of ``budget`` (the budget
         holds for every chunk in flight), taken unless :data:`PARALLEL_SLACK` times slower
         per member; the number of chunks is then a multiple of ``parallel``;
       * the other thread counts, one chunk at a time, each taken only if
         :data:`THREADS_GAIN` times faster than the best so far (more threads inside each op
         risk much more on a busy machine than they gain on a quiet one).

    Args:
        population: members to train.
        measure: ``measure(chunk, threads, parallel)``: seconds per member and batch of
            training ``parallel`` chunks of ``chunk`` members at once on ``threads`` threads.
        chunk: a given chunk size.
        threads: the thread counts to choose from, the default first (one: nothing to time).
        parallel: the chunks that may train at once (1: one at a time, nothing to time).
        per_member_bytes: what one batch's activations take per member.
        budget: bytes the activations of the chunks in flight should take (None: no limit).
        cap: bytes one chunk's activations may take at most when larger chunks are faster.
    """
    size = int(chunk) if chunk else chunk_for(population, per_member_bytes, budget)
    options = list(threads) or [None]
    timings: list[tuple[int, int | None, int, float]] = []
    known: dict[tuple[int, int | None, int], float] = {}

    def timed(c: int, t: int | None, p: int = 1) -> float:
        if (c, t, p) not in known:
            known[c, t, p] = float(measure(c, t, p))
            timings.append((c, t, p, known[c, t, p]))
        return known[c, t, p]

    chosen, lanes = options[0], 1
    overhead_bound = False
    if not chunk and 1 < size < population:
        current = timed(size, chosen)
        if timed(max(1, size // 2), chosen) >= GAIN * current:
            # bound by per-call overhead: the most members the cap allows, if not slower
            overhead_bound = True
            larger = chunk_for(population, per_member_bytes, cap)
            if larger > size and timed(larger, chosen) <= current:
                size = larger
    if not overhead_bound and (parallel > 1 and size < population or len(options) > 1):
        probe = min(size, PROBE)
        best = timed(probe, chosen)
        share = None if budget is None else budget // parallel
        split = chunk_for(population, per_member_bytes, share) if not chunk else size
        if parallel > 1 and size < population and 1 in options:
            if timed(min(split, PROBE), 1, parallel) <= PARALLEL_SLACK * best:
                chosen, lanes, best = 1, parallel, known[min(split, PROBE), 1, parallel]
        for t in options[1:]:
            if t != chosen and timed(probe, t) * THREADS_GAIN <= best:
                chosen, lanes, best = t, 1, known[probe, t, 1]
        if lanes > 1:
            size = balanced(population, split, lanes)
    source = "measured" if timings or not chunk else "given"
    return ChunkChoice(size, chosen, source, tuple(timings), 0.0, per_member_bytes, parallel=lanes)
