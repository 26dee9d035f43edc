"""The local workers' cache: what keeping members in memory saves, and what bounding it costs.

A worker keeps the trainables of members it trained, so a member that trains there again goes
on without loading its checkpoint. The cache is bounded by default (``cache_bytes="auto"``: a
quarter of the worker's memory, by saved-state size). Two questions:

* **speed** (small model): digits, population 16 on 2 workers, with no cache
  (``cache_size=0``: every interval loads its checkpoint), the default, and no limit. Printed:
  wall time and the intervals that had to load a checkpoint (or build a fresh member).
* **memory** (large state): a 100 MB state, population 8 on 2 workers, with no limit, the
  default, a 256 MB budget and ``cache_size=1``. Printed: each worker's peak resident memory.

    python benchmarks/worker_cache.py
    python benchmarks/worker_cache.py --smoke   # tiny sizes; a numpy member instead of digits
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine

import hyperpop as hp
from hyperpop.backends.local import LocalBackend


class CountingBackend(LocalBackend):
    """The local backend, counting the intervals whose worker had to load or build a member."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.restored = 0
        self.intervals = 0

    def poll(self, timeout: float | None) -> list:
        out = super().poll(timeout)
        for r in out:
            if r.error is None:
                self.intervals += 1
                self.restored += int(r.restored)
        return out


class Big(hp.Trainable):
    """A member whose state is ``config["mb"]`` MB of weights; reports its process's peak RSS."""

    def setup(self, config: dict[str, Any]) -> None:
        self.w = np.zeros(int(config["mb"] * 1e6) // 8)

    def apply(self, config: dict[str, Any]) -> None:
        pass

    def train(self) -> dict[str, float]:
        self.w += self.config["lr"]
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"score": float(self.w[0]), "peak_rss_mb": peak_kb / 1024, "pid": os.getpid()}

    def save(self) -> dict[str, Any]:
        return {"w": self.w}

    def load(self, state: dict[str, Any]) -> None:
        self.w = state["w"].copy()


def speed(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    if args.smoke:  # what is counted needs no PyTorch: a small numpy member
        trainable, space, metric = Big, {"lr": hp.uniform(0.1, 1.0), "mb": 0.01}, "score"
    else:
        digits = example("digits")
        trainable, space, metric = digits.trainable, digits.space, "val_acc"
    backend = CountingBackend(args.workers, **options)
    t0 = time.perf_counter()
    hp.run(
        trainable,
        space,
        metric=metric,
        mode="max",
        population=args.population,
        budget=hp.Steps(args.steps),
        ready=args.ready,
        seed=0,
        backend=backend,
        progress=False,
    )
    return {
        "wall": time.perf_counter() - t0,
        "restored": backend.restored,
        "intervals": backend.intervals,
    }


def memory(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    backend = CountingBackend(args.workers, **options)
    result = hp.run(
        Big,
        {"lr": hp.uniform(0.1, 1.0), "mb": args.mb},
        metric="score",
        population=args.big_population,
        budget=hp.Steps(args.big_steps),
        ready=1,
        seed=0,
        backend=backend,
        progress=False,
    )
    peaks: dict[int, float] = {}
    for r in result.records():
        peaks[int(r["pid"])] = max(peaks.get(int(r["pid"]), 0.0), r["peak_rss_mb"])
    return {
        "peaks": [peaks[p] for p in sorted(peaks)],
        "restored": backend.restored,
        "intervals": backend.intervals,
    }


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--ready", type=int, default=4)
    p.add_argument("--mb", type=float, default=100.0, help="state size of the memory question")
    p.add_argument("--big-population", type=int, default=8)
    p.add_argument("--big-steps", type=int, default=4)
    args = p.parse_args(argv)
    if args.smoke:
        args.workers, args.population, args.steps, args.ready = 1, 2, 2, 1
        args.mb, args.big_population, args.big_steps = 4.0, 2, 2
    speed_variants = [
        ("no cache (cache_size=0)", {"cache_size": 0}),
        ("default (cache_bytes='auto')", {}),
        ("no limit (cache_bytes=None)", {"cache_bytes": None}),
    ]
    budget = f"{round(2.5 * args.mb)}MB"
    memory_variants = [
        ("no limit (cache_bytes=None)", {"cache_bytes": None}),
        ("default (cache_bytes='auto')", {}),
        (f"cache_bytes='{budget}'", {"cache_bytes": budget}),
        ("cache_size=1", {"cache_size": 1}),
    ]
    out: dict[str, list[dict[str, Any]]] = {"speed": [], "memory": []}
    for name, options in speed_variants:
        out["speed"].append({"variant": name, **speed(args, options)})
    for name, options in memory_variants:
        out["memory"].append({"variant": name, **memory(args, options)})
    budgets = LocalBackend(args.workers)._budgets()
    print(f"machine: {machine()}")
    print(f"default budget per worker here: {budgets[0] / 2**20:.0f} MiB")
    print(
        f"speed: digits, population {args.population}, {args.workers} workers, {args.steps} "
        f"steps, ready every {args.ready}"
    )
    print(f"{'variant':<30} {'wall s':>7} {'loads':>11}")
    for r in out["speed"]:
        loads = f"{r['restored']}/{r['intervals']}"
        print(f"{r['variant']:<30} {r['wall']:>7.1f} {loads:>11}")
    print(
        f"memory: {args.mb:g} MB state, population {args.big_population}, {args.workers} "
        f"workers, {args.big_steps} steps, ready every 1"
    )
    print(f"{'variant':<30} {'peak RSS per worker MB':>22} {'loads':>11}")
    for r in out["memory"]:
        loads = f"{r['restored']}/{r['intervals']}"
        peaks = " / ".join(f"{p:.0f}" for p in r["peaks"])
        print(f"{r['variant']:<30} {peaks:>22} {loads:>11}")
    return out


if __name__ == "__main__":
    main()
