"""Overhead: a PBT run on digits vs the same training with no framework at all.

* ``plain loop``: the same members (same configs, same ``Digits`` trainable) trained for the same
  steps by a plain loop, split over the same number of processes (spawned, one thread each);
  no checkpoints, no store, no decisions.
* ``hyperpop, no exploit``: hyperpop with exploit and explore off (the framework alone).
* ``hyperpop PBT``: truncation + perturb (the framework plus PBT's exploits: checkpoints loaded).

Reported: wall time and its ratio to the plain loop, and the share of worker time spent inside
user code (``Result.overhead``). Target: at least 98% with population 16 on 2 workers.

    python benchmarks/overhead.py              # population 16, 2 workers, 12 steps
    python benchmarks/overhead.py --smoke      # tiny, for CI (the plain loop in this process)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, example, machine

import hyperpop as hp


def _plain_worker(configs: list[dict], steps: int) -> float:
    import torch

    torch.set_num_threads(1)
    from hyperpop.userfile import load_file

    digits = load_file(ROOT / "examples" / "digits.py").module
    last = 0.0
    for config in configs:
        member = digits.Digits()
        member.setup(config)
        for _ in range(steps):
            last = member.train()["val_acc"]
    return last


def plain_loop(configs: list[dict], steps: int, workers: int, in_process: bool = False) -> float:
    """Wall seconds to train ``configs`` for ``steps`` each, split over ``workers`` processes
    (``in_process``: in this process instead, one after the other)."""
    if in_process:
        t0 = time.perf_counter()
        _plain_worker(configs, steps)
        return time.perf_counter() - t0
    ctx = mp.get_context("spawn")
    chunks = [configs[i::workers] for i in range(workers)]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    with ctx.Pool(workers) as pool:
        pool.starmap(_plain_worker, [(c, steps) for c in chunks])
    return time.perf_counter() - t0


def framework(
    configs: list[dict], steps: int, workers: int, pbt: bool, ready: int, threads: int | None = None
) -> dict:
    """One hyperpop run of ``configs`` (``threads``: each worker's, default the backend's own
    choice, cores / workers)."""
    digits = example("digits")
    t0 = time.perf_counter()
    res = hp.run(
        digits.trainable,
        digits.space,
        metric="val_acc",
        mode="max",
        population=len(configs),
        workers=workers,
        budget=hp.Steps(steps),
        ready=ready,
        configs=configs,
        exploit="truncation" if pbt else None,
        explore="perturb" if pbt else None,
        seed=0,
        backend_options=None if threads is None else {"threads_per_worker": threads},
    )
    wall = time.perf_counter() - t0
    o = res.overhead
    exploits = sum(1 for e in res.events if e.kind == "exploited")
    return {
        "wall": wall,
        "user_share": o["user_seconds"] / o["worker_seconds"],
        "exploits": exploits,
        "best": res.best.score,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--ready", type=int, default=4)
    args = p.parse_args(argv)
    threads = None
    if args.smoke:
        # The plain loop runs in this process and the one hyperpop worker on one thread (as
        # the plain loop's): the smoke shows that every variant runs and the table prints, at
        # the cost of two worker processes importing PyTorch and scikit-learn, not three (and
        # a lone worker's second thread only spins on a busy machine).
        args.population, args.workers, args.steps, args.ready, threads = 2, 1, 2, 1, 1
    import numpy as np

    from hyperpop.space import Space

    digits = example("digits")
    rng = np.random.default_rng(0)
    space = Space(digits.space)
    configs = [space.sample(rng) for _ in range(args.population)]
    plain = plain_loop(configs, args.steps, args.workers, in_process=args.smoke)
    rows = [{"variant": "plain loop", "wall": plain, "user_share": None, "exploits": 0}]
    rows.append(
        {
            "variant": "hyperpop, no exploit",
            **framework(configs, args.steps, args.workers, False, args.ready, threads),
        }
    )
    rows.append(
        {
            "variant": "hyperpop PBT",
            **framework(configs, args.steps, args.workers, True, args.ready, threads),
        }
    )
    print(f"machine: {machine()}")
    print(
        f"digits: population {args.population}, {args.workers} workers, {args.steps} steps "
        f"(epochs) per member, ready every {args.ready}"
    )
    print(f"{'variant':<22} {'wall s':>8} {'vs plain':>9} {'user share':>11} {'exploits':>9}")
    for r in rows:
        share = "-" if r["user_share"] is None else f"{100 * r['user_share']:.2f}%"
        print(
            f"{r['variant']:<22} {r['wall']:>8.1f} {r['wall'] / plain:>8.2f}x {share:>11} "
            f"{r['exploits']:>9}"
        )
    return rows


if __name__ == "__main__":
    main()
