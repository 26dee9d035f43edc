"""Ablation of the PBT strategies at equal compute, on two toy problems.

* ``toy``: the paper's toy (Jaderberg et al. 2017, §4): Q(θ) = 1.2 − |θ|², trained by gradient
  ascent on a surrogate weighted by h = (h0, h1) ∈ [0, 1]². Greedy copying is right here.
* ``delayed``: greedy copying is wrong. A member trains "capacity" c while its knob e is high,
  but its score w only grows when e is low, and grows faster the more capacity it built:
  ``c += 0.08·e·(1−c)``, ``w += (1−e)·(0.002 + 0.03·c²)``. The best final score needs e high
  first and low later, a schedule that scores worse in the short term. Before the table the
  script prints reference scores computed directly (no search): with 60 steps the best fixed e
  (0.44) ends at 0.47, the greedy schedule (each 4-step interval takes the e that is best at its
  end) keeps e = 0 and ends at 0.12, and "e = 1 for 23 steps, then e = 0" ends at 0.88 while
  trailing the best fixed e until step 27. The target (0.5) is above what any fixed e reaches.

Every variant trains the same population (9 members) for the same steps, so compute is equal.
Variants: the exploit strategies with perturb (truncation, tournament, t-test), the explore
strategies behind truncation (perturb, resample, PB2), truncation+perturb with a longer ready
interval (12 steps instead of 4: the usual remedy for greedy copying), random search (sampled
configs, no exploit, no explore) and grid search (a 3x3 or 9-point grid). For each variant and
problem it prints the median and interquartile range over seeds of the final best score and of
the first step at which any member reached the target, and the per-decision cost of PB2.

Then PB2's cost at scale, side by side with truncation+perturb: the toy with population 16 for
200 steps, ready every 4 (800 ready points), asynchronous and synchronous, on the simulated
backend (no training cost, so the wall time is the decisions' and the engine's): wall and CPU
time per ready point, and one decision's median and 95th percentile, overall, by quarter of the
run (is the cost flat as observations accumulate?) and once PB2 has 600 observations or more.

Run:  python benchmarks/strategies.py            (10 seeds, a few minutes on 2 busy cores)
      python benchmarks/strategies.py --smoke    (tiny, for CI; on the simulated backend)
      python benchmarks/strategies.py --json out.json   (also every seed's score and timings)
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

import hyperpop as hp


class Toy(hp.Trainable):
    """The paper's toy, with a little evaluation noise (deterministic given the state)."""

    def setup(self, config):
        self.theta = np.array([0.9, 0.9])
        self.steps = 0
        self.apply(config)

    def apply(self, config):
        self.h = np.array([config["h0"], config["h1"]])

    def train(self):
        self.theta = self.theta + 0.01 * (-2.0 * self.h * self.theta)
        self.steps += 1
        q = 1.2 - float(np.sum(self.theta**2))
        seed = zlib.crc32(self.theta.tobytes())
        return {"score": q + 0.002 * float(np.random.default_rng(seed).standard_normal())}

    def save(self):
        return (self.theta.copy(), self.steps)

    def load(self, state):
        self.theta, self.steps = np.array(state[0]), state[1]


class Delayed(hp.Trainable):
    """Capacity now, score later: the greedy choice of e is wrong in the long run."""

    def setup(self, config):
        self.c, self.w = 0.0, 0.0
        self.apply(config)

    def apply(self, config):
        self.e = float(config["e"])

    def train(self):
        self.w += (1.0 - self.e) * (0.002 + 0.03 * self.c**2)
        self.c += 0.08 * self.e * (1.0 - self.c)
        return {"score": self.w}

    def save(self):
        return (self.c, self.w)

    def load(self, state):
        self.c, self.w = state


PROBLEMS: dict[str, dict[str, Any]] = {
    "toy": {
        "trainable": Toy,
        "space": {"h0": hp.uniform(0.0, 1.0), "h1": hp.uniform(0.0, 1.0)},
        "grid": [{"h0": a, "h1": b} for a, b in itertools.product([0.1, 0.5, 0.9], repeat=2)],
        "steps": 100,
        "target": 1.1,
    },
    "delayed": {
        "trainable": Delayed,
        "space": {"e": hp.uniform(0.0, 1.0)},
        "grid": [{"e": round(0.05 + 0.1125 * i, 4)} for i in range(9)],
        "steps": 60,
        "target": 0.5,
    },
}

#: Steps between ready points, unless a variant says otherwise.
READY = 4

#: name -> (exploit, explore, kind, ready): kind "pbt", "random" or "grid"
VARIANTS: dict[str, tuple[str | None, str | None, str, int]] = {
    "truncation+perturb": ("truncation", "perturb", "pbt", READY),
    "tournament+perturb": ("tournament", "perturb", "pbt", READY),
    "ttest+perturb": ("ttest", "perturb", "pbt", READY),
    "truncation+resample": ("truncation", "resample", "pbt", READY),
    "truncation+pb2": ("truncation", "pb2", "pbt", READY),
    # The usual remedy for greedy copying: judge members over a longer interval.
    "truncation+perturb r12": ("truncation", "perturb", "pbt", 12),
    "random search": (None, None, "random", READY),
    "grid search": (None, None, "grid", READY),
}


def _delayed_score(schedule: Sequence[float]) -> list[float]:
    """Scores after each step of one ``Delayed`` member trained with e = schedule[t]."""
    m = Delayed.__new__(Delayed)
    m.setup({"e": schedule[0]})
    scores = []
    for e in schedule:
        m.apply({"e": e})
        scores.append(m.train()["score"])
    return scores


def delayed_reference(steps: int, ready: int = READY) -> dict[str, Any]:
    """Scores of ``Delayed`` computed directly, without any search.

    ``fixed``: the best fixed e on a 101-point grid (what random and grid search can at most
    find). ``greedy``: every ready interval takes the e that scores best at the interval's end
    (what copying the current leader rewards). ``schedule``: the best "e = 1 for k steps, then
    e = 0", with the last step at which it still trails the best fixed e.
    """
    grid = np.round(np.linspace(0.0, 1.0, 101), 2)
    fixed = {float(e): _delayed_score([e] * steps) for e in grid}
    e_fix = max(fixed, key=lambda e: fixed[e][-1])
    greedy: list[float] = []
    for start in range(0, steps, ready):
        n = min(ready, steps - start)
        e_g = max(grid, key=lambda e: _delayed_score(greedy + [e] * n)[-1])
        greedy += [float(e_g)] * n
    switch = {k: _delayed_score([1.0] * k + [0.0] * (steps - k)) for k in range(steps + 1)}
    k = max(switch, key=lambda j: switch[j][-1])
    behind = [t + 1 for t in range(steps) if switch[k][t] < fixed[e_fix][t]]
    at = max(k, 1)  # the step at which the schedule switches e to 0
    return {
        "fixed_e": e_fix,
        "fixed": fixed[e_fix][-1],
        "greedy_e": (min(greedy), max(greedy)),
        "greedy": _delayed_score(greedy)[-1],
        "switch_step": k,
        "schedule": switch[k][-1],
        "trails_until": max(behind) if behind else 0,
        "at_switch": (switch[k][at - 1], fixed[e_fix][at - 1]),
    }


def references(problem: str, steps: int, ready: int = READY) -> list[str]:
    """Lines with scores computed directly, without any search, to read the table against."""
    if problem == "toy":
        grid = np.linspace(0.0, 1.0, 11)
        best = max(
            ((_toy_final(a, b, steps), a, b) for a, b in itertools.product(grid, repeat=2)),
            key=lambda x: x[0],
        )
        score, h0, h1 = best
        return [f"best fixed h on an 11x11 grid: h = ({h0:.1f}, {h1:.1f}) -> {score:.4f}"]
    if problem != "delayed":
        return []
    r = delayed_reference(steps, ready)
    g_lo, g_hi = r["greedy_e"]
    g_desc = f"e = {g_lo:.2f} throughout" if g_lo == g_hi else f"e from {g_lo:.2f} to {g_hi:.2f}"
    k = r["switch_step"]
    return [
        f"best fixed e (101-point grid): e = {r['fixed_e']:.2f} -> {r['fixed']:.4f}",
        f"greedy schedule (each {ready}-step interval takes the e best at its end): "
        f"{g_desc} -> {r['greedy']:.4f}",
        f"schedule e = 1 for {k} steps, then e = 0 -> {r['schedule']:.4f}; it trails the best "
        f"fixed e until step {r['trails_until']} (at step {max(k, 1)}: "
        f"{r['at_switch'][0]:.4f} vs {r['at_switch'][1]:.4f})",
    ]


def _toy_final(h0: float, h1: float, steps: int) -> float:
    m = Toy.__new__(Toy)
    m.setup({"h0": h0, "h1": h1})
    score = float("nan")
    for _ in range(steps):
        score = m.train()["score"]
    return score


def run_one(
    problem: str, variant: str, seed: int, *, population: int, steps: int, backend: str = "local"
) -> dict:
    """One run; returns final best score, first step reaching the target, PB2 timings."""
    p = PROBLEMS[problem]
    exploit, explore, kind, ready = VARIANTS[variant]
    strategy: Any = explore
    if explore == "pb2":
        strategy = hp.PB2(seed=seed)
    configs = p["grid"][:population] if kind == "grid" else None
    res = hp.run(
        p["trainable"],
        p["space"],
        metric="score",
        mode="max",
        population=population,
        workers=2,
        backend=backend,
        budget=hp.Steps(steps),
        ready=ready,
        exploit=exploit,
        explore=strategy,
        configs=configs,
        synchronous=True,
        seed=seed,
    )
    reached = [r["step"] for r in res.records() if r["score"] >= p["target"]]
    out: dict[str, Any] = {
        "final": res.best.score,
        "reach": min(reached) if reached else None,
        "decisions": [],
    }
    if explore == "pb2":
        out["decisions"] = list(strategy.decision_seconds)
    return out


class _CountedPB2(hp.PB2):
    """PB2 that also records how many observations it had at each decision."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.decision_observations: list[int] = []

    def explore(self, config, member, donor, ctx):
        try:
            return super().explore(config, member, donor, ctx)
        finally:
            self.decision_observations.append(self.observations)


def cost_one(
    explore: str, *, population: int, steps: int, synchronous: bool, seed: int = 0
) -> dict[str, Any]:
    """The toy at scale on the simulated backend: wall and CPU seconds, ready points, and
    PB2's decisions (seconds, observations at each)."""
    strategy: Any = _CountedPB2(seed=seed) if explore == "pb2" else explore
    wall, cpu = time.perf_counter(), time.process_time()
    res = hp.run(
        Toy,
        PROBLEMS["toy"]["space"],
        metric="score",
        mode="max",
        population=population,
        budget=hp.Steps(steps),
        ready=READY,
        exploit="truncation",
        explore=strategy,
        synchronous=synchronous,
        seed=seed,
        backend="simulated",
        workers=4,
        progress=False,
    )
    out: dict[str, Any] = {
        "explore": explore,
        "synchronous": synchronous,
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "ready_points": population * steps // READY,
        "final": res.best.score,
    }
    if explore == "pb2":
        out.update(
            decisions=list(strategy.decision_seconds),
            observations=strategy.decision_observations,
            fits=strategy.fits,
            tunes=strategy.tunes,
        )
    return out


def _ms(values: Sequence[float], q: float) -> float:
    return 1000.0 * float(np.percentile(values, q)) if len(values) else float("nan")


def cost_table(population: int, steps: int) -> list[dict[str, Any]]:
    """Print PB2's cost at scale beside truncation+perturb's; returns the runs."""
    import scipy.optimize  # noqa: F401 - imported before the clock starts, as in a long run

    rows = []
    print(
        f"\n## PB2's cost: the toy, population {population} x {steps} steps, ready every "
        f"{READY} ({population * steps // READY} ready points), simulated backend, 4 workers"
    )
    print(
        "| mode  | explore | wall s | ms/ready point | CPU ms/ready point | decisions | "
        "median ms | p95 ms | p95 ms at >= 600 obs | tunes/fits |"
    )
    print(
        "|-------|---------|--------|----------------|--------------------|-----------|"
        "-----------|--------|----------------------|------------|"
    )
    for synchronous in (False, True):
        for explore in ("perturb", "pb2"):
            r = cost_one(explore, population=population, steps=steps, synchronous=synchronous)
            rows.append(r)
            n = r["ready_points"]
            mode = "sync" if synchronous else "async"
            d = r.get("decisions", [])
            late = [t for t, o in zip(d, r.get("observations", [])) if o >= 600]
            cells = [
                f"{mode:<5}",
                f"{explore:<7}",
                f"{r['wall']:6.1f}",
                f"{1000 * r['wall'] / n:14.1f}",
                f"{1000 * r['cpu'] / n:18.1f}",
                f"{len(d) if d else '-':>9}",
                f"{_ms(d, 50):9.1f}" if d else f"{'-':>9}",
                f"{_ms(d, 95):6.1f}" if d else f"{'-':>6}",
                f"{_ms(late, 95):20.1f}" if late else f"{'-':>20}",
                f"{r['tunes']}/{r['fits']}" if d else "-",
            ]
            print("| " + " | ".join(cells) + " |")
    for r in rows:
        d, obs = r.get("decisions", []), r.get("observations", [])
        if not d:
            continue
        top = max(obs) if obs else 0
        quarters = []
        for k in range(4):
            lo, hi = top * k / 4, top * (k + 1) / 4
            part = [t for t, o in zip(d, obs) if lo < o <= hi or (k == 0 and o <= hi)]
            quarters.append(f"{1000 * float(np.mean(part)):.1f} ({len(part)})" if part else "-")
        mode = "sync" if r["synchronous"] else "async"
        print(
            f"PB2 mean ms per decision by quarter of its observations (up to {top}), {mode}: "
            + ", ".join(quarters)
        )
    return rows


def _q(values: Sequence[float]) -> tuple[float, float, float]:
    q50, q25, q75 = np.percentile(np.asarray(values, dtype=float), [50, 25, 75], method="nearest")
    return float(q50), float(q25), float(q75)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Run the ablation and print the table; returns the numbers by problem and variant."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI")
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--no-cost", action="store_true", help="skip PB2's cost at scale")
    ap.add_argument("--json", help="also write every seed's scores and the timings here")
    args = ap.parse_args(argv)
    seeds = 1 if args.smoke else args.seeds
    # The smoke's runs train in this process on the simulated backend, not in 2 worker
    # processes per run: synchronous runs make the same decisions there, to the last digit.
    backend = "simulated" if args.smoke else "local"
    population = 9
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for problem in args.problems:
        p = PROBLEMS[problem]
        steps = 12 if args.smoke else p["steps"]
        table[problem] = {}
        print(
            f"\n## {problem}: population {population}, {steps} steps each, ready every {READY} "
            f"(unless the variant says rN), {seeds} seeds, target {p['target']:g}"
        )
        for line in references(problem, steps):
            print(f"reference: {line}")
        print(
            f"| {'variant':<22} | {'final best: median [IQR]':<28} | "
            f"{'step reaching target: median [IQR]':<36} | reached |"
        )
        print(f"|{'-' * 24}|{'-' * 30}|{'-' * 38}|---------|")
        for variant in args.variants:
            t0 = time.perf_counter()
            runs = [
                run_one(problem, variant, s, population=population, steps=steps, backend=backend)
                for s in range(seeds)
            ]
            finals = [r["final"] for r in runs]
            never = steps + 1  # a run that never reached the target counts as "after the end"
            reach = [r["reach"] if r["reach"] is not None else never for r in runs]
            n_reached = sum(r["reach"] is not None for r in runs)
            fm, f25, f75 = _q(finals)
            rm, r25, r75 = _q(reach)

            def step(x: float, never: int = never) -> str:
                return "never" if x >= never else f"{x:.0f}"

            decisions = [d for r in runs for d in r["decisions"]]
            table[problem][variant] = {
                "finals": finals,
                "final": (fm, f25, f75),
                "reach": (rm, r25, r75),
                "reached": n_reached,
                "seconds": time.perf_counter() - t0,
                "decision_ms": (
                    (1000 * float(np.median(decisions)), 1000 * float(np.percentile(decisions, 95)))
                    if decisions
                    else None
                ),
            }
            final = f"{fm:.4f} [{f25:.4f}, {f75:.4f}]"
            when = f"{step(rm)} [{step(r25)}, {step(r75)}]"
            print(f"| {variant:<22} | {final:<28} | {when:<36} | {n_reached:>3}/{seeds:<3} |")
        for variant, row in table[problem].items():
            if row["decision_ms"]:
                med, p95 = row["decision_ms"]
                print(
                    f"\nPB2 cost per decision on {problem}: median {med:.1f} ms, 95th percentile "
                    f"{p95:.1f} ms ({variant}, {row['seconds']:.1f}s for {seeds} runs)"
                )
    cost: list[dict[str, Any]] = []
    if not args.no_cost:
        cost = cost_table(4, 20) if args.smoke else cost_table(16, 200)
        table["cost"] = {
            f"{'sync' if r['synchronous'] else 'async'} {r['explore']}": r for r in cost
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return table


if __name__ == "__main__":
    main()
