"""Quality at equal compute: PBT vs random search vs a fixed grid, same total training steps.

For each task (digits, CartPole) and each seed, three runs with the same population and the same
steps per member:

* ``pbt``: truncation exploit + perturb explore, ready every few steps;
* ``random``: the same number of sampled configs, no exploit, no explore;
* ``grid``: a fixed grid of configs (the same for every seed), no exploit, no explore.

The score is the held-out score of the member selection picks (the best by its last validation
score): test accuracy for digits, greedy return on held-out environment seeds for CartPole.

The seed sets the sampled configs and PBT's decisions, and also the training seed of every member
(``TorchTrainable.seed``: weight init, minibatch order, CartPole's environment seeds), which is
otherwise 0 in every run; so the grid's configs are the same for every seed but its training is not.

    python benchmarks/quality.py                  # 5 seeds, both tasks
    python benchmarks/quality.py --task digits --seeds 7
    python benchmarks/quality.py --task cartpole --synchronous   # PBT waits at ready points
    python benchmarks/quality.py --smoke          # tiny (digits, 2 x 2, one worker), for CI
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine  # noqa: E402

import hyperpop as hp  # noqa: E402

#: per task: population, steps per member, ready interval, and the fixed grid's axes
TASKS = {
    "digits": {
        "population": 8,
        "steps": 16,
        "ready": 4,
        "grid": {
            "lr": [0.01, 0.1],
            "momentum": [0.0, 0.9],
            "batch_size": [32, 128],
            "weight_decay": [1e-4],
        },
    },
    "cartpole": {
        "population": 8,
        "steps": 30,
        "ready": 5,
        "grid": {"lr": [3e-4, 3e-3], "ent_coef": [1e-3, 1e-2], "gamma": [0.95, 0.99]},
    },
}
METHODS = {"pbt": ("truncation", "perturb"), "random": (None, None), "grid": (None, None)}


def grid(axes: dict[str, list], n: int) -> list[dict]:
    """The first ``n`` points of the full grid over ``axes`` (cycled if it has fewer)."""
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    return [points[i % len(points)] for i in range(n)]


def one(
    task: str, method: str, seed: int, size: dict, workers: int, synchronous: bool = False
) -> dict:
    """One run; returns its validation and held-out scores and wall time."""
    mod = example(task)
    exploit, explore = METHODS[method]
    configs = grid(size["grid"], size["population"]) if method == "grid" else None
    # the examples' TorchTrainable seeds torch with 0 in every run; make the seed a replicate
    trainable = type(mod.trainable.__name__, (mod.trainable,), {"seed": seed})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = hp.run(
            trainable,
            mod.space,
            metric=mod.settings["metric"],
            mode=mod.settings["mode"],
            population=size["population"],
            workers=workers,
            budget=hp.Steps(size["steps"]),
            ready=size["ready"],
            exploit=exploit,
            explore=explore,
            configs=configs,
            seed=seed,
            synchronous=synchronous,
            storage=Path(tmp) / "q.db",
        )
        wall = time.perf_counter() - t0
        held_out = mod.evaluate(res.load_checkpoint("best"))
    return {"val": res.best.score, "held_out": held_out, "wall": wall}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--task", choices=sorted(TASKS), action="append")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--synchronous",
        action="store_true",
        help="synchronous PBT (members wait for each other at every ready point)",
    )
    args = p.parse_args(argv)
    tasks = args.task or (["digits"] if args.smoke else ["digits", "cartpole"])
    seeds = 1 if args.smoke else args.seeds
    workers = 1 if args.smoke else args.workers
    rows = []
    print(f"machine: {machine()}")
    for task in tasks:
        size = dict(TASKS[task])
        if args.smoke:
            size.update(population=2, steps=2, ready=1)
        for method in METHODS:
            runs = []
            for s in range(seeds):
                runs.append(one(task, method, s, size, workers, args.synchronous))
                r = runs[-1]
                print(  # progress, so a run cut short still leaves its finished runs
                    f"  {task} {method} seed {s}: held-out {r['held_out']:.4g}, "
                    f"val {r['val']:.4g}, {r['wall']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            held = [r["held_out"] for r in runs]
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "population": size["population"],
                    "steps": size["steps"],
                    "seeds": seeds,
                    "median": statistics.median(held),
                    "min": min(held),
                    "max": max(held),
                    "val_median": statistics.median(r["val"] for r in runs),
                    "wall": statistics.median(r["wall"] for r in runs),
                    "held_out": held,
                }
            )
    print(
        f"{'task':<9} {'method':<7} {'pop x steps':>11} {'seeds':>5} {'held-out median':>16} "
        f"{'min':>8} {'max':>8} {'val median':>11} {'wall s/run':>10}"
    )
    for r in rows:
        print(
            f"{r['task']:<9} {r['method']:<7} {r['population']:>5} x {r['steps']:<3} "
            f"{r['seeds']:>5} {r['median']:>16.4g} {r['min']:>8.4g} {r['max']:>8.4g} "
            f"{r['val_median']:>11.4g} {r['wall']:>10.1f}"
        )
    print("held-out score per seed (seeds 0, 1, ...):")
    for r in rows:
        print(f"{r['task']:<9} {r['method']:<7} " + " ".join(f"{x:.4g}" for x in r["held_out"]))
    return rows


if __name__ == "__main__":
    main()
