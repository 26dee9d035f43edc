"""The quality benchmark's results: saved runs, paired statistics and the printed tables.

``quality.py`` runs the runs; this module reads them (from memory or from ``--out`` files) and
says what they show: medians and interquartile ranges, scores at matched compute read off each
run's anytime curve, and one-sided paired Wilcoxon signed-rank tests.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import example, machine

#: the score the toy must pass to count as reached
TARGETS = {"toy": 1.19}


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
    ("reserve", "random"),
    ("random", "reserve"),
    ("reserve", "async"),
    ("async", "reserve"),
    ("reserve", "firepbt"),
    ("firepbt", "reserve"),
    ("reserve", "ray"),
    ("ray", "reserve"),
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


def matched(run: dict, compute: int) -> float:
    """A run's score at ``compute`` executed training steps (from its anytime curve: the last
    point at or below it), or NaN where it has no curve."""
    curve = run.get("curve")
    if not curve:
        return math.nan
    i = math.floor(compute * CURVE_POINTS / run["nominal"] + 1e-9) - 1
    return float(curve[min(max(i, 0), len(curve) - 1)])


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
            target = TARGETS.get(task)
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
            print(f"toy: 'reached' counts seeds whose best Q > {TARGETS['toy']}")
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
