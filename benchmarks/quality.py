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
* ``reserve``: asynchronous reserve PBT (``exploit="reserve"``: per 8 ids, 6 greedy members, 1
  reserve member and 1 evaluator testing the reserve's weights under the best greedy member's
  hyperparameters, FIRE-PBT's way; the roles dissolve into truncation PBT after 8 evaluations in
  a row come to nothing) + perturb explore; its result is the best member of the population;
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
    python benchmarks/quality.py --smoke          # tiny (toy and nqm, 2 seeds, 1 worker), for CI
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example
from _quality_report import (  # noqa: F401 - wilcoxon_better, matched, _at_matched: the tests use them
    CURVE_POINTS,
    _at_matched,
    anytime,
    load_runs,
    matched,
    report,
    save_runs,
    wilcoxon_better,
)

import hyperpop as hp
from hyperpop.space import Space

#: per task: population, steps per member, ready interval
TASKS: dict[str, dict[str, Any]] = {
    "toy": {"population": 2, "steps": 200, "ready": 4},
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
    "toy": {"population": 2, "steps": 8, "ready": 4},
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
    "reserve": {"exploit": "reserve", "explore": "perturb", "synchronous": False},
    "random": {"exploit": None, "explore": None, "synchronous": False},
    "ray": None,
}


#: paired comparisons printed: (method, baseline); H1: method scores better than baseline
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
            linear = [mod.target(i * mod.PERIOD) for i in range(step // mod.PERIOD)]
            ref = f" linear {reference(linear, step):.3f}"
        moved = " ".join(f"{e.member}<-{e.donor}@{e.step}" for e in copies)
        print(
            f"  step {step:>4}: {param} [{values}] best {best[1]:.4g} ({param} {best[0]:.2f})"
            f"{ref} | copies: {moved or '-'}"
        )
    return rows


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
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="hyperpop workers / Ray trials at once (default 2; smoke 1: one Ray actor per run)",
    )
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
    if args.workers is None:
        args.workers = 1 if args.smoke else 2
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
