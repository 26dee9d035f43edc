"""A deceptive toy task: the greedy schedule is wrong, a linear decay is right.

The facts are those of the deceptive toy problem of Chebykin, Alderliesten and Bosman, "To Be
Greedy, or Not to Be - That Is the Question for Population Based Training Variants" (TMLR 2025,
Section 5.2); the code is hyperpop's own. One member holds a scalar θ (starting at 0.9) and a
penalty; its score is Q = 1.2 − θ². Each training step is a gradient step on a surrogate:

    θ ← θ − 0.001 · 2 · max(2 − h − 0.2 · D, 0) · θ

where h ∈ [0.0001, 1.1] is the hyperparameter and D is the penalty the member's weights carry:
at the first step of each period of ``PERIOD`` steps (period i, starting at step i·PERIOD) D
grows by |h − g_i|, with g_i = 1 − i·PERIOD/HORIZON, a target that falls linearly from 1 to 0.
A smaller h makes each step larger *now*, so the member that lowered h leads after one
interval; but every period that h sits below (or above) its target adds to D for the rest of
training and slows every later step. The best final score therefore follows the linear
schedule h = g_i (no penalty at all), while greedy selection drives h to 0 early and pays for
it later. The paper draws the initial values of h from [0.9, 1.1] (:func:`paper_configs`);
here members are sampled from the whole range, so random search is the ordinary one and finds
the best constant h (about 0.5, Q = 1.023).

The task is deterministic (no noise), so every method is judged on its schedule alone.

:func:`linear_score` is the final Q of the linear schedule (the ceiling
``benchmarks/quality.py`` prints); :func:`best_score` that of the best schedule of the form
"linear, then h as low as it goes for the last k periods" (lowering h is worth its penalty once
fewer than 5 periods remain); :func:`greedy_score` that of the schedule that takes, period by
period, the h whose Q is best at the period's end.

Run it:

    hyperpop run examples/deceptive.py --overwrite     # PBT with the live view
    python examples/deceptive.py                       # the references, then PBT
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import hyperpop as hp

HORIZON = 400  #: steps of training the target schedule spans
PERIOD = 20  #: steps per penalty period (the ready interval of the run below)
H_LOW, H_HIGH = 1e-4, 1.1
STEP, PENALTY = 0.001, 0.2


def target(step: int) -> float:
    """The linear schedule's h for the period that contains ``step``."""
    return max(1.0 - (step // PERIOD) * PERIOD / HORIZON, 0.0)


class Deceptive(hp.Trainable):
    """One member: θ, the penalty D its weights carry, and its step count."""

    def setup(self, config):
        self.theta, self.penalty, self.step = 0.9, 0.0, 0
        self.apply(config)

    def apply(self, config):
        self.h = float(config["h"])

    def train(self):
        if self.step % PERIOD == 0:  # a new period: charge its distance from the target
            self.penalty += abs(self.h - target(self.step))
        rate = max(2.0 - self.h - PENALTY * self.penalty, 0.0)
        self.theta -= STEP * 2.0 * rate * self.theta
        self.step += 1
        return {"Q": 1.2 - self.theta**2, "penalty": self.penalty}

    def save(self):
        return {"theta": self.theta, "penalty": self.penalty, "step": self.step}

    def load(self, state):
        self.theta, self.penalty, self.step = state["theta"], state["penalty"], state["step"]


def score(schedule: Sequence[float], steps: int = HORIZON) -> float:
    """Final Q of a member trained ``steps`` steps with ``schedule[i]`` in period i."""
    m = Deceptive()
    m.setup({"h": schedule[0]})
    q = float("nan")
    for t in range(steps):
        m.apply({"h": schedule[min(t // PERIOD, len(schedule) - 1)]})
        q = m.train()["Q"]
    return q


def periods(steps: int = HORIZON) -> int:
    """Number of penalty periods in ``steps`` steps."""
    return -(-steps // PERIOD)


def linear_score(steps: int = HORIZON) -> float:
    """Final Q of the linear schedule (no penalty): the ceiling the benchmark prints."""
    return score([target(i * PERIOD) for i in range(periods(steps))], steps)


def best_score(steps: int = HORIZON) -> tuple[float, int]:
    """Best final Q of "linear, then h = H_LOW for the last k periods", and its k."""
    n = periods(steps)
    lin = [target(i * PERIOD) for i in range(n)]
    out = [(score(lin[: n - k] + [H_LOW] * k, steps), k) for k in range(n + 1)]
    return max(out)


def greedy_score(steps: int = HORIZON) -> float:
    """Final Q of the schedule that takes, each period, the h best at the period's end."""
    grid = np.linspace(H_LOW, H_HIGH, 111)
    chosen: list[float] = []
    for i in range(periods(steps)):
        end = min((i + 1) * PERIOD, steps)
        chosen.append(float(max(grid, key=lambda h: score(chosen + [float(h)], end))))
    return score(chosen, steps)


def paper_configs(population: int, seed: int) -> list[dict[str, float]]:
    """Initial configs as the paper draws them: h uniform in [0.9, 1.1] (``hp.run(...,
    configs=paper_configs(8, 0))``). The run below and the benchmark sample the whole range
    instead, so that random search is the ordinary one."""
    rng = np.random.default_rng(seed)
    return [{"h": float(h)} for h in rng.uniform(0.9, 1.1, population)]


trainable = Deceptive
space = {"h": hp.uniform(H_LOW, H_HIGH)}
settings = dict(
    metric="Q",
    mode="max",
    population=8,
    workers=2,
    budget=hp.Steps(HORIZON),
    ready=PERIOD,
    seed=0,
    storage="runs/deceptive.db",
)


if __name__ == "__main__":
    best, k = best_score()
    print(f"linear schedule: Q = {linear_score():.4f}")
    print(f"best schedule (linear, then h = {H_LOW:g} for the last {k} periods): Q = {best:.4f}")
    print(f"greedy schedule: Q = {greedy_score():.4f}")
    print(f"constant h = 1: Q = {score([1.0]):.4f}")
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    print(f"PBT: best member {result.best.id}, Q = {result.best.score:.4f}")
