"""The cost of ``deterministic=True``: wall time of the same asynchronous run, as results arrive
and in simulated-clock order, side by side (alternating, so both see the same machine load).

    python benchmarks/deterministic.py              # digits, population 8 x 8 epochs, 3 pairs
    python benchmarks/deterministic.py --smoke      # tiny, for CI: 1 pair, 2 x 2 epochs, 1 worker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine

import hyperpop as hp


def one(
    deterministic: bool,
    population: int,
    steps: int,
    seed: int,
    workers: int = 2,
    threads: int | None = None,
) -> dict:
    """One run; its wall time and lineage (``threads``: each worker's, default the backend's
    own choice, cores / workers)."""
    mod = example("digits")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = hp.run(
            mod.trainable,
            mod.space,
            metric="val_acc",
            mode="max",
            population=population,
            workers=workers,
            budget=hp.Steps(steps),
            ready=4,
            seed=seed,
            deterministic=deterministic,
            backend_options=None if threads is None else {"threads_per_worker": threads},
            storage=Path(tmp) / "d.db",
            progress=False,
        )
        wall = time.perf_counter() - t0
    edges = [(e["member"], e["donor"], e["step"]) for e in res.population.edges]
    return {"deterministic": deterministic, "wall": wall, "lineage": edges}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    threads = None
    if args.smoke:
        # one worker process per run (each imports PyTorch and scikit-learn), on one thread (on
        # a busy machine a second PyTorch thread only waits, spinning): the smoke shows that
        # both modes run and the table prints
        args.pairs, args.population, args.steps, args.workers, threads = 1, 2, 2, 1, 1
    rows = []
    for i in range(args.pairs):
        for det in (False, True) if i % 2 == 0 else (True, False):
            rows.append(
                one(det, args.population, args.steps, seed=0, workers=args.workers, threads=threads)
            )
    print(f"machine: {machine()}")
    print(
        f"digits, population {args.population} x {args.steps} epochs, {args.workers} workers, "
        "seed 0"
    )
    print(f"{'mode':<16} {'runs':>4} {'wall s (median)':>16} {'distinct lineages':>18}")
    for det in (False, True):
        mine = [r for r in rows if r["deterministic"] == det]
        walls = statistics.median(r["wall"] for r in mine)
        lineages = len({tuple(r["lineage"]) for r in mine})
        name = "deterministic" if det else "as they arrive"
        print(f"{name:<16} {len(mine):>4} {walls:>16.1f} {lineages:>18}")
    base = statistics.median(r["wall"] for r in rows if not r["deterministic"])
    det = statistics.median(r["wall"] for r in rows if r["deterministic"])
    print(f"deterministic / as they arrive: {det / base:.2f}x wall time")
    return rows


if __name__ == "__main__":
    main()
