"""Quality at equal compute: which model does each method find, over paired seeds?

For each task and seed, five runs with the same population, the same steps per member and the
same initial configs:

* ``async``: hyperpop's default, asynchronous PBT (truncation exploit + perturb explore);
* ``sync``: the same, synchronous (members wait for each other at every ready point);
* ``pb2``: asynchronous, truncation exploit + PB2 explore (a GP bandit);
* ``random``: random search at the same compute (the same configs, no exploit, no explore);
* ``ray``: Ray Tune's asynchronous ``PopulationBasedTraining`` (``synch=False``) on the *same*
  Trainable class through one generic adapter (``_raytune.py``), with the same settings:
  quantile 0.25, perturbation factors 0.8/1.2, resample probability 0.25 (hyperpop's perturb
  default), the same perturbation interval, 2 trials at once, ``reuse_actors=True``.

Tasks (``examples/*.py``): ``toy`` (the paper's toy, 2 members from the paper's initial configs,
asynchronous, 200 steps, ready every 4; also reported: seeds reaching Q > 1.19), ``nqm`` (a noisy
quadratic model whose best learning-rate schedule is known; its exact ceiling is printed),
``digits``, ``cartpole`` and ``charlm``.

The seed is a paired replicate: it draws the initial configs (the same for every method), seeds
hyperpop's decisions and Ray's scheduler, and is every member's training seed (the trainable's
``seed`` attribute: weight init, minibatch order, environment and gradient noise), which is
otherwise 0 in every run. The score is the held-out score of the member that selection picks (the
best by its last validation score): test accuracy (digits), greedy return on held-out
environment seeds (cartpole), test loss in nats per character (charlm), the exact loss of the
iterate (nqm) and Q (toy). Paired comparisons use scipy's Wilcoxon signed-rank test, one-sided
(H1: the first method scores better), on seeds both methods ran.

    python benchmarks/quality.py --out results.json                  # everything, 10 seeds
    python benchmarks/quality.py --tasks digits --out digits.json    # one task (resumes the file)
    python benchmarks/quality.py --tasks toy,nqm --methods async,ray --seeds 3 --out part.json
    python benchmarks/quality.py --from digits.json --from toy.json  # print saved results
    python benchmarks/quality.py --smoke          # tiny (toy and nqm, 2 seeds), for CI
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine  # noqa: E402

import hyperpop as hp  # noqa: E402
from hyperpop.space import Space  # noqa: E402

#: per task: population, steps per member, ready interval (and the toy's target)
TASKS: dict[str, dict[str, Any]] = {
    "toy": {"population": 2, "steps": 200, "ready": 4, "target": 1.19},
    "nqm": {"population": 8, "steps": 100, "ready": 10},
    "digits": {"population": 8, "steps": 16, "ready": 4},
    "cartpole": {"population": 8, "steps": 30, "ready": 5},
    "charlm": {"population": 8, "steps": 12, "ready": 3},
}
#: the tiny sizes of ``--smoke``
SMOKE: dict[str, dict[str, Any]] = {
    "toy": {"population": 2, "steps": 8, "ready": 4, "target": 1.19},
    "nqm": {"population": 4, "steps": 10, "ready": 5},
    "digits": {"population": 2, "steps": 2, "ready": 1},
    "cartpole": {"population": 2, "steps": 2, "ready": 1},
    "charlm": {"population": 2, "steps": 2, "ready": 1},
}
#: hyperpop methods: keyword arguments of hp.run; "ray" is Ray Tune's PBT
METHODS: dict[str, dict[str, Any] | None] = {
    "async": {"exploit": "truncation", "explore": "perturb", "synchronous": False},
    "sync": {"exploit": "truncation", "explore": "perturb", "synchronous": True},
    "pb2": {"exploit": "truncation", "explore": "pb2", "synchronous": False},
    "random": {"exploit": None, "explore": None, "synchronous": False},
    "ray": None,
}
#: paired comparisons printed: (method, baseline); H1: method scores better than baseline
COMPARISONS = [
    ("async", "random"),
    ("async", "ray"),
    ("async", "sync"),
    ("sync", "random"),
    ("pb2", "random"),
    ("ray", "random"),
]
SCORE = {
    "toy": "Q",
    "nqm": "loss",
    "digits": "test acc",
    "cartpole": "return",
    "charlm": "test nats/char",
}


def _seeded(cls: type, seed: int) -> type:
    """``cls`` with its ``seed`` attribute set (the members' training seed), if it has one."""
    if not hasattr(cls, "seed"):
        return cls
    return type(cls.__name__, (cls,), {"seed": seed})


def initial_configs(mod: Any, population: int, seed: int) -> list[dict[str, Any]]:
    """The initial configs of every method for this seed: the run file's own (the toy's
    paper configs), completed by sampling the space with ``seed``."""
    given = [dict(c) for c in mod.settings.get("configs", [])][:population]
    space = Space(mod.space)
    rng = np.random.default_rng(seed)
    return given + [space.sample(rng) for _ in range(population - len(given))]


def held_out(mod: Any, state: Any, val: float) -> float:
    """The task's held-out score of a saved state (the validation score where it has none)."""
    evaluate = getattr(mod, "evaluate", None)
    return float(evaluate(state)) if evaluate is not None else float(val)


def _finite(x: float, mode: str) -> float:
    """``x``, or the worst possible score where it is NaN or infinite (a diverged run: Ray's
    perturbations ignore the space's bounds, ray#5035), so medians and ranks stay defined."""
    x = float(x)
    if math.isfinite(x):
        return x
    return -math.inf if mode == "max" else math.inf


def one(task: str, method: str, seed: int, size: dict[str, Any], workers: int) -> dict[str, Any]:
    """One run; returns its held-out and validation scores, wall time and exploits."""
    mod = example(task)
    metric, mode = mod.settings["metric"], mod.settings["mode"]
    configs = initial_configs(mod, size["population"], seed)
    trainable = _seeded(mod.trainable, seed)
    row = {
        "task": task,
        "method": method,
        "seed": seed,
        "population": size["population"],
        "steps": size["steps"],
        "ready": size["ready"],
        "workers": workers,
        "mode": mode,
    }
    if method == "ray":
        import _raytune

        r = _raytune.run_pbt(
            trainable,
            mod.space,
            metric=metric,
            mode=mode,
            population=size["population"],
            steps=size["steps"],
            ready=size["ready"],
            configs=configs,
            seed=seed,
            concurrent=workers,
            modules=[mod],
        )
        return {
            **row,
            "score": _finite(held_out(mod, r["state"], r["score"]), mode),
            "val": _finite(r["score"], mode),
            "wall": r["wall"],
            "exploits": r["exploits"],
        }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = hp.run(
            trainable,
            mod.space,
            metric=metric,
            mode=mode,
            population=size["population"],
            workers=workers,
            budget=hp.Steps(size["steps"]),
            ready=size["ready"],
            configs=configs,
            seed=seed,
            storage=Path(tmp) / "q.db",
            **METHODS[method],
        )
        wall = time.perf_counter() - t0
        val = float(res.best.score)
        score = held_out(mod, res.load_checkpoint("best"), val)
        exploits = int(res.summary()["exploits"])
    return {
        **row,
        "score": _finite(score, mode),
        "val": _finite(val, mode),
        "wall": wall,
        "exploits": exploits,
    }


# --- results files ------------------------------------------------------------------------------
def load_runs(paths: Sequence[str | os.PathLike[str]]) -> dict[tuple[str, str, int], dict]:
    """Runs saved by ``--out``, keyed by (task, method, seed); later files win."""
    runs: dict[tuple[str, str, int], dict] = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for r in data["runs"] if isinstance(data, dict) else data:
            runs[(r["task"], r["method"], int(r["seed"]))] = r
    return runs


def save_runs(path: str | os.PathLike[str], runs: dict[tuple[str, str, int], dict]) -> None:
    """Write every run (atomically, so an interrupted run leaves a readable file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    ordered = sorted(runs.values(), key=lambda r: (r["task"], r["method"], r["seed"]))
    with open(tmp, "w") as f:
        json.dump({"machine": machine(), "runs": ordered}, f, indent=1)
    os.replace(tmp, path)


# --- statistics ---------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def wilcoxon_better(a: Sequence[float], b: Sequence[float], mode: str) -> float:
    """One-sided paired Wilcoxon signed-rank p-value of H1: ``a`` scores better than ``b``.

    Better is higher for ``mode="max"`` and lower for ``"min"``; zero differences are dropped
    (scipy's default ``zero_method="wilcox"``); NaN when every pair ties.
    """
    from scipy.stats import wilcoxon

    sign = 1.0 if mode == "max" else -1.0
    d = [sign * (x - y) for x, y in zip(a, b)]
    if all(v == 0 for v in d):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(d, alternative="greater").pvalue)


def summarise(runs: dict[tuple[str, str, int], dict], tasks: list[str], methods: list[str]):
    """Per (task, method): the summary rows; per (task, pair): the paired comparisons."""
    rows, pairs = [], []
    for task in tasks:
        by_method = {
            m: {s: r for (t, mm, s), r in runs.items() if t == task and mm == m} for m in methods
        }
        for m in methods:
            rs = [by_method[m][s] for s in sorted(by_method[m])]
            if not rs:
                continue
            scores = [r["score"] for r in rs]
            # linear interpolation, except where a diverged run (an infinite score) would make
            # it undefined
            how = "linear" if all(math.isfinite(x) for x in scores) else "nearest"
            q25, q75 = np.quantile(scores, [0.25, 0.75], method=how)
            target = TASKS.get(task, {}).get("target")
            rows.append(
                {
                    "task": task,
                    "method": m,
                    "population": rs[0]["population"],
                    "steps": rs[0]["steps"],
                    "ready": rs[0]["ready"],
                    "seeds": len(rs),
                    "median": statistics.median(scores),
                    "q25": float(q25),
                    "q75": float(q75),
                    "val_median": statistics.median(r["val"] for r in rs),
                    "wall": statistics.median(r["wall"] for r in rs),
                    "exploits": statistics.median(r["exploits"] for r in rs),
                    "reached": None if target is None else sum(x > target for x in scores),
                    "scores": {r["seed"]: r["score"] for r in rs},
                    "mode": rs[0]["mode"],
                }
            )
        for a, b in COMPARISONS:
            if a not in methods or b not in methods:
                continue
            seeds = sorted(set(by_method[a]) & set(by_method[b]))
            if not seeds:
                continue
            mode = by_method[a][seeds[0]]["mode"]
            x = [by_method[a][s]["score"] for s in seeds]
            y = [by_method[b][s]["score"] for s in seeds]
            sign = 1.0 if mode == "max" else -1.0
            wins = sum(sign * (u - v) > 0 for u, v in zip(x, y))
            losses = sum(sign * (u - v) < 0 for u, v in zip(x, y))
            pairs.append(
                {
                    "task": task,
                    "a": a,
                    "b": b,
                    "n": len(seeds),
                    "wins": wins,
                    "ties": len(seeds) - wins - losses,
                    "losses": losses,
                    "median_diff": statistics.median(u - v for u, v in zip(x, y)),
                    "p": wilcoxon_better(x, y, mode),
                }
            )
    return rows, pairs


def report(
    runs: dict[tuple[str, str, int], dict],
    tasks: list[str],
    methods: list[str],
    *,
    smoke: bool = False,
    estimate_seeds: int = 10,
) -> list[dict]:
    """Print the tables; returns the summary rows."""
    rows, pairs = summarise(runs, tasks, methods)
    print(f"machine: {machine()}")
    print(
        f"{'task':<9} {'method':<7} {'pop x steps':>11} {'seeds':>5} {'score':<20} "
        f"{'median':>9} {'q25':>9} {'q75':>9} {'reached':>7} {'val median':>10} "
        f"{'exploits':>8} {'wall s/run':>10}"
    )
    for r in rows:
        reached = "-" if r["reached"] is None else f"{r['reached']}/{r['seeds']}"
        better = "max" if r["mode"] == "max" else "min"
        print(
            f"{r['task']:<9} {r['method']:<7} {r['population']:>5} x {r['steps']:<3} "
            f"{r['seeds']:>5} {SCORE.get(r['task'], 'score') + ' (' + better + ')':<20} "
            f"{r['median']:>9.4g} {r['q25']:>9.4g} {r['q75']:>9.4g} {reached:>7} "
            f"{r['val_median']:>10.4g} {r['exploits']:>8g} {r['wall']:>10.1f}"
        )
    for task in tasks:
        if task == "toy" and any(r["task"] == "toy" for r in rows):
            print(f"toy: 'reached' counts seeds whose best Q > {TASKS['toy']['target']}")
        if task == "nqm" and any(r["task"] == "nqm" for r in rows):
            _print_nqm_ceiling(next(r for r in rows if r["task"] == "nqm"))
    if pairs:
        print(
            "paired comparisons (one-sided Wilcoxon signed-rank, H1: A scores better than B; "
            "W-T-L = seeds A wins, ties, loses):"
        )
        print(
            f"{'task':<9} {'A':<7} {'B':<7} {'seeds':>5} {'W-T-L':>8} {'median A-B':>11} {'p':>8}"
        )
        for p in pairs:
            wtl = f"{p['wins']}-{p['ties']}-{p['losses']}"
            print(
                f"{p['task']:<9} {p['a']:<7} {p['b']:<7} {p['n']:>5} {wtl:>8} "
                f"{p['median_diff']:>11.4g} {_fmt(p['p'], '.4f'):>8}"
            )
    print("score per seed:")
    for r in rows:
        cells = " ".join(f"{s}:{v:.4g}" for s, v in sorted(r["scores"].items()))
        print(f"{r['task']:<9} {r['method']:<7} {cells}")
    if not smoke:
        _print_estimate(rows, estimate_seeds)
    return rows


def _print_nqm_ceiling(row: dict) -> None:
    mod = example("nqm")
    steps, ready = row["steps"], row["ready"]
    top, schedule = mod.ceiling(steps, ready)
    fixed, fixed_lr = mod.best_constant(steps, ready)
    greedy, _ = mod.greedy(steps, ready)
    print(
        f"nqm: ceiling (expected final loss of the best schedule, lr per interval "
        f"{' '.join(f'{v:.2g}' for v in schedule)}): {top:.4g}; best constant lr "
        f"({fixed_lr:.2g}): {fixed:.4g}; greedy schedule: {greedy:.4g}"
    )


def _print_estimate(rows: list[dict], seeds: int) -> None:
    """Per task, the median wall time per run of each method, and what ``seeds`` seeds cost."""
    print(f"wall time per run (median over the seeds run) and an estimate for {seeds} seeds:")
    total = 0.0
    for task in dict.fromkeys(r["task"] for r in rows):
        walls = {r["method"]: r["wall"] for r in rows if r["task"] == task}
        est = seeds * sum(walls.values())
        total += est
        cells = " ".join(f"{m} {w:.1f}s" for m, w in walls.items())
        print(f"  {task:<9} {cells}  -> {est / 60:.1f} min")
    ray_start = (
        " (plus Ray's start, about 10 s per process)"
        if any(r["method"] == "ray" for r in rows)
        else ""
    )
    print(f"  total: {total / 60:.1f} min{ray_start}")


def _names(values: list[str] | None, allowed: Sequence[str], what: str) -> list[str] | None:
    if not values:
        return None
    out = [v for value in values for v in value.split(",") if v]
    bad = [v for v in out if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (toy and nqm), for CI")
    p.add_argument("--tasks", nargs="+", help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--methods", nargs="+", help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 10; smoke 2)")
    p.add_argument("--first-seed", type=int, default=0, help="start at this seed")
    p.add_argument("--workers", type=int, default=2, help="hyperpop workers / Ray trials at once")
    p.add_argument(
        "--out",
        help="save every run to this JSON file after each run; runs already in it are skipped",
    )
    p.add_argument(
        "--from",
        dest="from_",
        action="append",
        default=[],
        metavar="FILE",
        help="print (and merge into --out) saved results instead of running; repeatable",
    )
    args = p.parse_args(argv)
    tasks = _names(args.tasks, list(TASKS), "task") or (
        ["toy", "nqm"] if args.smoke else list(TASKS)
    )
    methods = _names(args.methods, list(METHODS), "method") or list(METHODS)
    n_seeds = args.seeds if args.seeds is not None else (2 if args.smoke else 10)
    seeds = range(args.first_seed, args.first_seed + n_seeds)

    if "ray" in methods and not args.from_:
        import _raytune

        if not _raytune.have_ray_tune():
            print("Ray Tune is not installed (pip install 'ray[tune]'): no ray rows")
            methods = [m for m in methods if m != "ray"]

    runs = load_runs(args.from_)
    if args.from_:
        if args.out:
            save_runs(args.out, runs)
        present = {t for t, _, _ in runs}
        order = list(TASKS) + sorted(present - set(TASKS))
        shown = tasks if args.tasks else [t for t in order if t in present]
        return report(runs, shown, methods, estimate_seeds=n_seeds)

    if args.out and Path(args.out).exists():
        runs = load_runs([args.out])
        print(f"resuming {args.out}: {len(runs)} runs already there", file=sys.stderr)
    sizes = SMOKE if args.smoke else TASKS
    t_start = time.perf_counter()
    for task in tasks:
        size = sizes[task]
        for method in methods:
            for s in seeds:
                key = (task, method, s)
                if key in runs and (
                    runs[key]["steps"] == size["steps"]
                    and runs[key]["population"] == size["population"]
                ):
                    continue
                r = one(task, method, s, size, args.workers)
                runs[key] = r
                if args.out:
                    save_runs(args.out, runs)
                print(  # progress, so a run cut short still shows its finished runs
                    f"  {task} {method} seed {s}: score {r['score']:.4g}, val {r['val']:.4g}, "
                    f"{r['exploits']} exploits, {r['wall']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    selected = {
        k: v for k, v in runs.items() if k[0] in tasks and v["steps"] == sizes[k[0]]["steps"]
    }
    rows = report(selected, tasks, methods, smoke=args.smoke, estimate_seeds=n_seeds)
    print(f"this invocation: {time.perf_counter() - t_start:.0f} s of wall time")
    return rows


if __name__ == "__main__":
    main()
