"""Quality at equal compute: which model does each method find, over paired seeds?

For each task and seed, one run per method with the same population, the same steps per member
and the same initial configs:

* ``async``: hyperpop's default, asynchronous PBT (truncation exploit + perturb explore);
* ``sync``: the same, synchronous (members wait for each other at every ready point);
* ``pb2``: asynchronous, truncation exploit + PB2 explore (a GP bandit);
* ``resample``: asynchronous, truncation exploit + resample explore (fresh configs);
* ``mfpbt``: asynchronous multiple-frequencies PBT (``exploit="mfpbt"``: sub-populations judged
  every 1 and every 4 ready points, asymmetric migration) + perturb explore;
* ``firepbt``: asynchronous FIRE-PBT (``exploit="firepbt"``: per 8 ids, 3 greedy members, 3
  parents judged by how fast their offspring improve, 2 evaluators) + perturb explore; its
  result (and its anytime curve) comes from the greedy members only, and the evaluators'
  training counts as compute;
* ``random``: random search at the same compute (the same configs, no exploit, no explore);
* ``ray``: Ray Tune's asynchronous ``PopulationBasedTraining`` (``synch=False``) on the *same*
  Trainable class through one generic adapter (``_raytune.py``), with the same settings:
  quantile 0.25, perturbation factors 0.8/1.2, resample probability 0.25 (hyperpop's perturb
  default), the same perturbation interval, 2 trials at once, ``reuse_actors=True``.

Tasks: ``toy`` (the paper's toy, 2 members from the paper's initial configs, asynchronous, 200
steps, ready every 4; also reported: seeds reaching Q > 1.19), ``nqm`` (a noisy quadratic model
whose best learning-rate schedule is known; its exact ceiling is printed), ``deceptive`` (greedy
selection is wrong: the hyperparameter must fall linearly; the linear schedule's score is printed
as the ceiling), ``pbt_function`` (the family of Ray Tune's example: the best lr rises, then
falls, noisy), ``delayed`` (``benchmarks/strategies.py``'s problem: capacity first, score later;
the best switch schedule is printed as the ceiling), ``digits``, ``cartpole`` and ``charlm``.
The first five are pure functions of their state: they run in this process on the simulated
backend (no processes, about a second per run), with each interval taking its steps times a
seeded factor in [0.8, 1.2) of simulated time, so asynchronous runs see workers drift apart.

The seed is a paired replicate: it draws the initial configs (the same for every method), seeds
hyperpop's decisions, the simulated durations and Ray's scheduler, and is every member's training
seed (the trainable's ``seed`` attribute: weight init, minibatch order, environment and gradient
noise), which is otherwise 0 in every run. No task draws noise from its config: the noisy cheap
tasks key it by the member's state, so a restored checkpoint goes on drawing fresh noise. The
score is the held-out score of the member that selection picks (the best by its last validation
score): test accuracy (digits), greedy return on held-out environment seeds (cartpole), test loss
in nats per character (charlm), the exact loss of the iterate (nqm), Q (toy, deceptive), accuracy
(pbt_function) and w (delayed).

Compute: ``executed`` counts the training steps a method actually ran (every report is one; a
member that copies another jumps to the donor's step and skips the steps between; Ray Tune
re-runs steps when it restores an older checkpoint). Besides the scores at equal steps per
member, the cheap tasks are scored at **matched compute**: per seed, the fewest steps any method
shown executed; a method that executed more is scored by the member it would have picked (the
best by its latest report) when it had executed that many, read off its log. Paired comparisons
use scipy's Wilcoxon signed-rank test, one-sided (H1: the first method scores better), on seeds
both methods ran.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine

import hyperpop as hp
from hyperpop.space import Space

#: per task: population, steps per member, ready interval (and the toy's target)
TASKS: dict[str, dict[str, Any]] = {
    "toy": {"population": 2, "steps": 200, "ready": 4, "target": 1.19},
    "nqm": {"population": 8, "steps": 100, "ready": 10},
    "digits": {"population": 8, "steps": 16, "ready": 4},
    "cartpole": {"population": 8, "steps": 30, "ready": 5},
    "charlm": {"population": 8, "steps": 12, "ready": 3},
    "deceptive": {"population": 8, "steps": 400, "ready": 20},
    "pbt_function": {"population": 8, "steps": 300, "ready": 5},
    "delayed": {"population": 8, "steps": 60, "ready": 4},
}
#: tasks that are pure functions of their state: they run in this process on the simulated
#: backend (no worker processes; intervals take their steps times a seeded jitter of +-20% of
#: simulated time, so the asynchronous order varies as on real workers), and their held-out
#: score is the score they report, so quality at matched compute is read off the run's log
CHEAP = ("toy", "nqm", "deceptive", "pbt_function", "delayed")
#: the tiny sizes of ``--smoke``
SMOKE: dict[str, dict[str, Any]] = {
    "toy": {"population": 2, "steps": 8, "ready": 4, "target": 1.19},
    "nqm": {"population": 4, "steps": 10, "ready": 5},
    "digits": {"population": 2, "steps": 2, "ready": 1},
    "cartpole": {"population": 2, "steps": 2, "ready": 1},
    "charlm": {"population": 2, "steps": 2, "ready": 1},
    "deceptive": {"population": 4, "steps": 40, "ready": 20},
    "pbt_function": {"population": 4, "steps": 10, "ready": 5},
    "delayed": {"population": 4, "steps": 8, "ready": 4},
}
#: hyperpop methods: keyword arguments of hp.run; "ray" is Ray Tune's PBT
METHODS: dict[str, dict[str, Any] | None] = {
    "async": {"exploit": "truncation", "explore": "perturb", "synchronous": False},
    "sync": {"exploit": "truncation", "explore": "perturb", "synchronous": True},
    "pb2": {"exploit": "truncation", "explore": "pb2", "synchronous": False},
    "resample": {"exploit": "truncation", "explore": "resample", "synchronous": False},
    "mfpbt": {"exploit": "mfpbt", "explore": "perturb", "synchronous": False},
    "firepbt": {"exploit": "firepbt", "explore": "perturb", "synchronous": False},
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
    ("resample", "async"),
    ("random", "async"),
    ("mfpbt", "random"),
    ("mfpbt", "async"),
    ("mfpbt", "ray"),
    ("random", "mfpbt"),
    ("async", "mfpbt"),
    ("firepbt", "random"),
    ("random", "firepbt"),
    ("firepbt", "async"),
    ("async", "firepbt"),
    ("firepbt", "mfpbt"),
    ("mfpbt", "firepbt"),
]
SCORE = {
    "toy": "Q",
    "nqm": "loss",
    "digits": "test acc",
    "cartpole": "return",
    "charlm": "test nats/char",
    "deceptive": "Q",
    "pbt_function": "accuracy",
    "delayed": "w",
}


def _seeded(cls: type, seed: int) -> type:
    """``cls`` with its ``seed`` attribute set (the members' training seed), if it has one."""
    if not hasattr(cls, "seed"):
        return cls
    return type(cls.__name__, (cls,), {"seed": seed})


def task_module(task: str) -> Any:
    """The run file of a task: ``examples/<task>.py``, or for ``delayed`` a namespace around
    ``benchmarks/strategies.py``'s problem (``trainable``, ``space``, ``settings``)."""
    if task != "delayed":
        return example(task)
    import strategies

    problem = strategies.PROBLEMS["delayed"]
    return SimpleNamespace(
        trainable=problem["trainable"],
        space=problem["space"],
        settings={"metric": "score", "mode": "max"},
    )


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


def simulated_backend(seed: int, workers: int) -> Any:
    """A simulated backend whose intervals take their steps times a factor in [0.8, 1.2),
    drawn from (seed, member, step): workers drift apart as real ones do, reproducibly."""
    from hyperpop.backends.simulated import SimulatedBackend

    def duration(task: Any, reports: list[dict[str, Any]]) -> float:
        u = np.random.default_rng([seed, task.member, task.step]).random()
        return len(reports) * (0.8 + 0.4 * float(u))

    return SimulatedBackend(workers=workers, duration=duration)


#: points of the anytime curve: the pick's score after each 1% of the nominal compute
CURVE_POINTS = 100


def anytime(
    records: Sequence[dict[str, Any]],
    mode: str,
    nominal: int,
    eligible: Callable[[int], bool] | None = None,
) -> list[float]:
    """The score of the member selection would pick (the best by its latest report) after each
    ``nominal / CURVE_POINTS`` training steps executed, in the order the log recorded them.
    With ``eligible``, only members it accepts may be picked (FIRE-PBT: the greedy ones), while
    every member's reports count as executed steps.

    Entry ``i`` is the pick after ``(i + 1) * nominal / CURVE_POINTS`` executed steps (the
    last entries repeat the final pick when the run executed fewer steps). Every report is one
    executed training step, so a member that copied another and jumped forward adds nothing
    for the steps it skipped."""
    sign = 1.0 if mode == "max" else -1.0
    latest: dict[int, float] = {}
    out: list[float] = []
    marks = [math.ceil((i + 1) * nominal / CURVE_POINTS) for i in range(CURVE_POINTS)]
    best = math.nan
    j = 0
    for n, r in enumerate(records, start=1):
        score = float(r["score"])
        if eligible is None or eligible(int(r["member"])):
            latest[int(r["member"])] = score if math.isfinite(score) else -sign * math.inf
        while j < len(marks) and n >= marks[j] and latest:
            best = max(latest.values(), key=lambda v: sign * v)
            out.append(best)
            j += 1
    if latest:
        best = max(latest.values(), key=lambda v: sign * v)
    out += [best] * (CURVE_POINTS - len(out))
    return out


def one(task: str, method: str, seed: int, size: dict[str, Any], workers: int) -> dict[str, Any]:
    """One run; returns its held-out and validation scores, wall time, exploits, the training
    steps it executed and (cheap tasks) its anytime curve."""
    mod = task_module(task)
    metric, mode = mod.settings["metric"], mod.settings["mode"]
    configs = initial_configs(mod, size["population"], seed)
    trainable = _seeded(mod.trainable, seed)
    nominal = size["population"] * size["steps"]
    row = {
        "task": task,
        "method": method,
        "seed": seed,
        "population": size["population"],
        "steps": size["steps"],
        "ready": size["ready"],
        "workers": workers,
        "mode": mode,
        "nominal": nominal,
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
            modules=[mod if isinstance(mod, ModuleType) else sys.modules["strategies"]],
        )
        return {
            **row,
            "score": _finite(held_out(mod, r["state"], r["score"]), mode),
            "val": _finite(r["score"], mode),
            "wall": r["wall"],
            "exploits": r["exploits"],
            "executed": r.get("executed"),
        }
    cheap = task in CHEAP
    backend: Any = simulated_backend(seed, workers) if cheap else "local"
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
            backend=backend,
            progress=False,
            **method_kwargs(method),
        )
        wall = time.perf_counter() - t0
        val = float(res.best.score)
        score = held_out(mod, res.load_checkpoint("best"), val)
        summary = res.summary()
        records = res.records() if cheap else []
        eligible = res.population.in_result
    out = {
        **row,
        "score": _finite(score, mode),
        "val": _finite(val, mode),
        "wall": wall,
        "exploits": int(summary["exploits"]),
        "executed": int(summary["reports"]),
    }
    if cheap:
        curve = anytime(records, mode, nominal, eligible)
        out["curve"] = [_finite(x, mode) for x in curve]
    return out


def method_kwargs(method: str) -> dict[str, Any]:
    """Keyword arguments of ``hp.run`` for a hyperpop method (fresh strategy objects)."""
    return dict(METHODS[method] or {})


def matched(run: dict, compute: int) -> float:
    """A run's score at ``compute`` executed training steps (from its anytime curve: the last
    point at or below it), or NaN where it has no curve."""
    curve = run.get("curve")
    if not curve:
        return math.nan
    i = math.floor(compute * CURVE_POINTS / run["nominal"] + 1e-9) - 1
    return float(curve[min(max(i, 0), len(curve) - 1)])


def trace(task: str, method: str, seed: int, workers: int = 2) -> list[dict[str, Any]]:
    """Run one cheap task and print, ready point by ready point, what selection did: each
    member's hyperparameter and score there (from its own reports), the best score, and who
    copied whom. Returns the rows printed."""
    if task not in CHEAP:
        raise SystemExit(f"--trace runs the in-process tasks only ({', '.join(CHEAP)})")
    mod = task_module(task)
    size = TASKS[task]
    metric, mode = mod.settings["metric"], mod.settings["mode"]
    res = hp.run(
        _seeded(mod.trainable, seed),
        mod.space,
        metric=metric,
        mode=mode,
        population=size["population"],
        workers=workers,
        budget=hp.Steps(size["steps"]),
        ready=size["ready"],
        configs=initial_configs(mod, size["population"], seed),
        seed=seed,
        backend=simulated_backend(seed, workers),
        progress=False,
        **method_kwargs(method),
    )
    param = next(iter(Space(mod.space).searchable))
    at: dict[int, dict[int, tuple[float, float]]] = {}
    for r in res.records():  # the newest report of each member at each step
        at.setdefault(int(r["step"]), {})[int(r["member"])] = (r[f"config/{param}"], r["score"])
    edges = [e for e in res.population.edges if e.kind == "exploit"]
    sign = 1.0 if mode == "max" else -1.0
    reference = getattr(mod, "score", None) if task == "deceptive" else None
    rows = []
    print(f"{task}, {method}, seed {seed}: per ready point, each member's {param} and score")
    for step in range(size["ready"], size["steps"] + 1, size["ready"]):
        here = at.get(step, {})
        if not here:
            continue
        best = max(here.values(), key=lambda v: sign * v[1])
        copies = [e for e in edges if e.at == step]
        row = {
            "step": step,
            "values": {m: v[0] for m, v in sorted(here.items())},
            "best": best[1],
            "best_value": best[0],
            "copies": [(e.member, e.donor, e.step) for e in copies],
        }
        rows.append(row)
        values = " ".join(f"{v[0]:.2f}" for _, v in sorted(here.items()))
        ref = ""
        if reference is not None:
            ref = f" linear {reference([mod.target(i * mod.PERIOD) for i in range(step // mod.PERIOD)], step):.3f}"  # noqa: E501
        moved = " ".join(f"{e.member}<-{e.donor}@{e.step}" for e in copies)
        print(
            f"  step {step:>4}: {param} [{values}] best {best[1]:.4g} ({param} {best[0]:.2f})"
            f"{ref} | copies: {moved or '-'}"
        )
    return rows


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


def _compute(by_method: dict[str, dict[int, dict]], seed: int) -> int | None:
    """Matched compute on a seed: the fewest training steps any method executed there."""
    done = [r[seed].get("executed") for r in by_method.values() if seed in r]
    done = [int(x) for x in done if x is not None]
    return min(done) if done else None


def _at_matched(run: dict, compute: int | None) -> float:
    """A run's score at matched compute: its final score when it executed no more than that,
    else its anytime curve's point there (NaN without a curve, as for Ray Tune)."""
    executed = run.get("executed")
    if compute is None or executed is None:
        return math.nan
    if executed <= compute:
        return float(run["score"])
    return matched(run, compute)


def _pair(task: str, a: str, b: str, x: list[float], y: list[float], mode: str) -> dict:
    sign = 1.0 if mode == "max" else -1.0
    wins = sum(sign * (u - v) > 0 for u, v in zip(x, y))
    losses = sum(sign * (u - v) < 0 for u, v in zip(x, y))
    return {
        "task": task,
        "a": a,
        "b": b,
        "n": len(x),
        "wins": wins,
        "ties": len(x) - wins - losses,
        "losses": losses,
        "median_diff": statistics.median(u - v for u, v in zip(x, y)),
        "p": wilcoxon_better(x, y, mode),
    }


def _quantiles(scores: list[float]) -> tuple[float, float]:
    # linear interpolation, except where a diverged run (an infinite score) would make it
    # undefined
    how = "linear" if all(math.isfinite(x) for x in scores) else "nearest"
    q25, q75 = np.quantile(scores, [0.25, 0.75], method=how)
    return float(q25), float(q75)


def summarise(runs: dict[tuple[str, str, int], dict], tasks: list[str], methods: list[str]):
    """Per (task, method): the summary rows; per (task, pair): the paired comparisons, at equal
    steps per member and at matched compute (``pairs`` and ``matched_pairs``)."""
    rows, pairs, matched_pairs = [], [], []
    for task in tasks:
        by_method = {
            m: {s: r for (t, mm, s), r in runs.items() if t == task and mm == m} for m in methods
        }
        seeds_all = sorted({s for r in by_method.values() for s in r})
        compute = {s: _compute(by_method, s) for s in seeds_all}
        for m in methods:
            rs = [by_method[m][s] for s in sorted(by_method[m])]
            if not rs:
                continue
            scores = [r["score"] for r in rs]
            q25, q75 = _quantiles(scores)
            at = [_at_matched(r, compute[r["seed"]]) for r in rs]
            at_ok = [x for x in at if not math.isnan(x)]
            mq25, mq75 = _quantiles(at_ok) if at_ok else (math.nan, math.nan)
            executed = [r["executed"] for r in rs if r.get("executed") is not None]
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
                    "q25": q25,
                    "q75": q75,
                    "val_median": statistics.median(r["val"] for r in rs),
                    "wall": statistics.median(r["wall"] for r in rs),
                    "exploits": statistics.median(r["exploits"] for r in rs),
                    "executed": statistics.median(executed) if executed else None,
                    "nominal": rs[0]["population"] * rs[0]["steps"],
                    "matched_median": statistics.median(at_ok) if at_ok else math.nan,
                    "matched_q25": mq25,
                    "matched_q75": mq75,
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
            pairs.append(_pair(task, a, b, x, y, mode))
            xm = [_at_matched(by_method[a][s], compute[s]) for s in seeds]
            ym = [_at_matched(by_method[b][s], compute[s]) for s in seeds]
            keep = [i for i in range(len(seeds)) if not (math.isnan(xm[i]) or math.isnan(ym[i]))]
            if keep:
                xs, ys = [xm[i] for i in keep], [ym[i] for i in keep]
                matched_pairs.append(_pair(task, a, b, xs, ys, mode))
    return rows, pairs, matched_pairs


def _print_pairs(pairs: list[dict]) -> None:
    print(f"{'task':<12} {'A':<8} {'B':<8} {'seeds':>5} {'W-T-L':>8} {'median A-B':>11} {'p':>8}")
    for p in pairs:
        wtl = f"{p['wins']}-{p['ties']}-{p['losses']}"
        print(
            f"{p['task']:<12} {p['a']:<8} {p['b']:<8} {p['n']:>5} {wtl:>8} "
            f"{p['median_diff']:>11.4g} {_fmt(p['p'], '.4f'):>8}"
        )


def report(
    runs: dict[tuple[str, str, int], dict],
    tasks: list[str],
    methods: list[str],
    *,
    smoke: bool = False,
    estimate_seeds: int = 10,
) -> list[dict]:
    """Print the tables; returns the summary rows."""
    rows, pairs, matched_pairs = summarise(runs, tasks, methods)
    print(f"machine: {machine()}")
    print(
        f"{'task':<12} {'method':<8} {'pop x steps':>11} {'seeds':>5} {'score':<20} "
        f"{'median':>9} {'q25':>9} {'q75':>9} {'reached':>7} {'val median':>10} "
        f"{'exploits':>8} {'executed':>8} {'wall s/run':>10}"
    )
    for r in rows:
        reached = "-" if r["reached"] is None else f"{r['reached']}/{r['seeds']}"
        better = "max" if r["mode"] == "max" else "min"
        executed = "-" if r["executed"] is None else f"{r['executed'] / r['nominal']:.0%}"
        print(
            f"{r['task']:<12} {r['method']:<8} {r['population']:>5} x {r['steps']:<3} "
            f"{r['seeds']:>5} {SCORE.get(r['task'], 'score') + ' (' + better + ')':<20} "
            f"{r['median']:>9.4g} {r['q25']:>9.4g} {r['q75']:>9.4g} {reached:>7} "
            f"{r['val_median']:>10.4g} {r['exploits']:>8g} {executed:>8} {r['wall']:>10.1f}"
        )
    print(
        "executed: median training steps the method executed, as a share of population x "
        "steps (a copier jumps forward; Ray Tune re-runs steps after restoring an older "
        "checkpoint)"
    )
    for task in tasks:
        if not any(r["task"] == task for r in rows):
            continue
        if task == "toy":
            print(f"toy: 'reached' counts seeds whose best Q > {TASKS['toy']['target']}")
        elif task == "nqm":
            _print_nqm_ceiling(next(r for r in rows if r["task"] == "nqm"))
        elif task in ("deceptive", "delayed", "pbt_function"):
            first = next(r for r in rows if r["task"] == task)
            print(ceiling_line(task, first["steps"], first["ready"]))
    if pairs:
        print(
            "paired comparisons at equal steps per member (one-sided Wilcoxon signed-rank, "
            "H1: A scores better than B; W-T-L = seeds A wins, ties, loses):"
        )
        _print_pairs(pairs)
    shown = [r for r in rows if not math.isnan(r["matched_median"])]
    if shown:
        print(
            "at matched compute (per seed, the fewest training steps any method shown executed; "
            "a method that executed more is scored by the member it would have picked at that "
            "point of its run; tasks with an anytime curve only):"
        )
        print(f"{'task':<12} {'method':<8} {'median':>9} {'q25':>9} {'q75':>9}")
        for r in shown:
            print(
                f"{r['task']:<12} {r['method']:<8} {r['matched_median']:>9.4g} "
                f"{r['matched_q25']:>9.4g} {r['matched_q75']:>9.4g}"
            )
        if matched_pairs:
            print("paired comparisons at matched compute:")
            _print_pairs(matched_pairs)
    print("score per seed:")
    for r in rows:
        cells = " ".join(f"{s}:{v:.4g}" for s, v in sorted(r["scores"].items()))
        print(f"{r['task']:<12} {r['method']:<8} {cells}")
    if not smoke:
        _print_estimate(rows, estimate_seeds)
    return rows


def ceiling_line(task: str, steps: int, ready: int) -> str:
    """The reference scores of a task, computed directly (no search)."""
    if task == "deceptive":
        mod = example("deceptive")
        best, k = mod.best_score(steps)
        return (
            f"deceptive: ceiling (linear schedule) Q = {mod.linear_score(steps):.4f}; linear "
            f"then h = {mod.H_LOW:g} for the last {k} periods: {best:.4f}; greedy schedule: "
            f"{mod.greedy_score(steps):.4f}; constant h = 1: {mod.score([1.0], steps):.4f}"
        )
    if task == "delayed":
        import strategies

        r = strategies.delayed_reference(steps, ready)
        return (
            f"delayed: ceiling (e = 1 for {r['switch_step']} steps, then e = 0) "
            f"{r['schedule']:.4f}; best fixed e ({r['fixed_e']:.2f}): {r['fixed']:.4f}; greedy "
            f"schedule: {r['greedy']:.4f}"
        )
    if task == "pbt_function":
        mod = example("pbt_function")
        return (
            f"pbt_function: a single member at the best lr every step reaches a median accuracy "
            f"of {mod.ideal(steps):.1f} (no ceiling: a population also copies lucky noise)"
        )
    return ""


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
    p.add_argument(
        "--trace",
        metavar="TASK",
        help="print one run of a cheap task ready point by ready point (--methods: the first, "
        "--first-seed: the seed) instead of the tables",
    )
    args = p.parse_args(argv)
    if args.trace:
        for method in _names(args.methods, list(METHODS), "method") or ["async"]:
            trace(args.trace, method, args.first_seed, args.workers)
        return []
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
