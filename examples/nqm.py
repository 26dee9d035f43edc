"""A noisy quadratic model: SGD whose best learning rate falls over training, with a known ceiling.

Each member runs plain SGD on the quadratic loss L(θ) = ½ Σᵢ hᵢ θᵢ² in 100 dimensions, with
curvatures hᵢ spread log-uniformly from 1 down to 0.01, starting at θ = 1. Every gradient carries
independent Gaussian noise of variance c·hᵢ in coordinate i (c = 0.1), as a minibatch gradient
would. One training step is one SGD step; PBT tunes the learning rate η (log-uniform in
[0.001, 1]) every ``ready`` steps. The reported ``loss`` is the exact loss of the current iterate
(nothing is held out: the model *is* the objective), so the only noise is the gradient noise.

Why the best learning rate changes: a large η moves fast along the flat directions (small hᵢ),
but it leaves the iterate bouncing at a noise floor of about η·c/2 per coordinate; a small η
lowers that floor but barely moves along the flat directions. The best schedule therefore keeps η
at its largest for the first half of training and then lowers it step by step, about 20x by the
end. Choosing, at every ready point, the η that is best at the *next* ready point (what greedy
selection does) lowers η too early: the loss falls fastest right away, while the flat directions
are left unconverged (the short-horizon bias of Wu et al. 2018).

The ceiling (:func:`ceiling`) comes from the exact expected-loss recursion, not from sampling:
per coordinate, E[θᵢ²] ← (1 − η hᵢ)² E[θᵢ²] + η² c hᵢ, so over one ready interval at constant η
the vector s = E[θ²] goes through an affine map s ← a(η)·s + b(η), and the final expected loss is
linear in s at any intermediate point. With one η per ready interval (the schedules PBT can
express), every schedule on a grid of 8 learning rates (1e-3 to 1, log-spaced) is scored
exhaustively by meeting in the middle (:func:`grid_optimum`): the 8⁵ first halves give the state
at mid-training, the 8⁵ second halves give its affine map to the final loss, and one matrix
product scores all 8¹⁰ ≈ 10⁹ schedules (a few seconds on one core). The best grid schedule is then
refined continuously (L-BFGS-B on log η inside the bounds), which lowers it by 4%; the same
refinement from 20 random schedules finds nothing better. With the default sizes (100 steps,
ready every 10):

* the ceiling (the best piecewise-constant schedule): expected final loss 0.107, with η = 1 for
  the first 40 steps, then 0.69, 0.37, 0.21, 0.12, 0.074, 0.051;
* the best constant η (0.28, the most random search can find): 0.273;
* the greedy schedule (:func:`greedy`): 0.251, starting at 0.76 and already at 0.13 by step 40.

The ceiling is an *expected* loss: single runs along the optimal schedule land between 0.87 and
1.18 times it (10th and 90th percentiles over 300 noise seeds), so the best member of a population
can end a little below it by luck.

Run it:

    hyperpop run examples/nqm.py --overwrite      # PBT with the live view
    python examples/nqm.py                        # the ceiling and references, then PBT
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

import hyperpop as hp

DIM = 100
CURVATURE = np.logspace(0.0, -2.0, DIM)  # h: from 1 (steep) down to 0.01 (flat)
NOISE = 0.1 * CURVATURE  # gradient-noise variance per coordinate, c·h
LR_LOW, LR_HIGH = 1e-3, 1.0
STEPS, READY = 100, 10


class NoisyQuadratic(hp.Trainable):
    """One member: SGD with gradient noise on a fixed quadratic; one step per ``train``.

    Attributes:
        seed: seed of the gradient noise (every member of a run draws the same noise stream,
            so members differ only by their learning rates and what they copied).
    """

    seed: int = 0

    def setup(self, config):
        self.theta = np.ones(DIM)
        self.rng = np.random.default_rng(self.seed)
        self.apply(config)

    def apply(self, config):
        self.lr = float(config["lr"])

    def train(self):
        noise = np.sqrt(NOISE) * self.rng.standard_normal(DIM)
        self.theta = self.theta - self.lr * (CURVATURE * self.theta + noise)
        loss = loss_of(self.theta)
        return {"loss": loss, "log10_loss": math.log10(loss)}

    def save(self):
        return {"theta": self.theta.copy(), "rng": self.rng.bit_generator.state}

    def load(self, state):
        self.theta = np.array(state["theta"])
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]


def loss_of(theta: np.ndarray) -> float:
    """The exact loss ½ Σ hᵢ θᵢ² of an iterate."""
    return float(0.5 * np.sum(CURVATURE * theta**2))


def evaluate(state) -> float:
    """The loss of a saved member state (the same number it reported last)."""
    return loss_of(np.asarray(state["theta"]))


def _interval(lr: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine map s -> a·s + b of E[θ²] over ``steps`` SGD steps at each ``lr``.

    ``lr`` has any shape; the results have that shape plus one axis of length DIM.
    """
    lr = np.asarray(lr, dtype=float)[..., None]
    r = (1.0 - lr * CURVATURE) ** 2  # per-step contraction of E[θ²]
    rk = r**steps
    # the sum of r^j for j < steps, safe where r is 1 (lr = 0) or close to it
    geo = np.where(np.abs(1.0 - r) > 1e-12, (1.0 - rk) / np.where(r == 1.0, 2.0, 1.0 - r), steps)
    return rk, lr**2 * NOISE * geo


def expected_loss(schedule: Sequence[float], ready: int = READY) -> float:
    """Expected final loss of SGD that uses ``schedule[k]`` for the k-th interval of ``ready``
    steps (exact: the recursion of E[θ²], no sampling)."""
    s = np.ones(DIM)
    for lr in schedule:
        a, b = _interval(lr, ready)
        s = a * s + b
    return float(0.5 * np.sum(CURVATURE * s))


def _refine(schedule: Sequence[float], ready: int) -> tuple[float, list[float]]:
    """Continuous refinement of a schedule (L-BFGS-B on log η, inside the bounds)."""
    from scipy.optimize import minimize

    lo, hi = math.log(LR_LOW), math.log(LR_HIGH)
    res = minimize(
        lambda x: math.log(expected_loss(np.exp(x), ready)),
        np.log(np.asarray(schedule, dtype=float)),
        method="L-BFGS-B",
        bounds=[(lo, hi)] * len(schedule),
    )
    refined = [float(v) for v in np.exp(res.x)]
    if expected_loss(refined, ready) <= expected_loss(schedule, ready):
        return expected_loss(refined, ready), refined
    return expected_loss(schedule, ready), [float(v) for v in schedule]


def grid_optimum(
    steps: int = STEPS, ready: int = READY, grid: int = 8
) -> tuple[float, list[float]]:
    """The best schedule with one of ``grid`` log-spaced learning rates per ready interval.

    Exhaustive over all ``grid ** (steps // ready)`` schedules, by meeting in the middle.
    Returns (expected final loss, schedule).
    """
    k = steps // ready
    if k < 1 or steps % ready:
        raise ValueError(f"steps ({steps}) must be a positive multiple of ready ({ready})")
    lrs = np.logspace(math.log10(LR_LOW), math.log10(LR_HIGH), grid)
    a, b = _interval(lrs, ready)  # grid x DIM each
    k1 = k // 2
    k2 = k - k1
    # first halves: the state E[θ²] at mid-training; a row's index has the first interval's
    # choice as its least significant base-``grid`` digit
    mid = np.ones((1, DIM))
    for _ in range(k1):
        mid = (a[:, None, :] * mid[None] + b[:, None, :]).reshape(-1, DIM)
    # second halves: s_end = p·s_mid + q, composed interval by interval (same indexing)
    p, q = np.ones((1, DIM)), np.zeros((1, DIM))
    for _ in range(k2):
        p = (a[:, None, :] * p[None]).reshape(-1, DIM)
        q = (a[:, None, :] * q[None] + b[:, None, :]).reshape(-1, DIM)
    # single precision for the grid**k scores (it only has to find the best one; its value is
    # recomputed exactly below)
    w = np.ascontiguousarray((CURVATURE * p).T, dtype=np.float32)  # DIM x second halves
    c = (q @ CURVATURE).astype(np.float32)
    mid32 = mid.astype(np.float32)
    best, where = math.inf, (0, 0)
    chunk = max(1, 2**22 // max(1, len(c)))
    for i in range(0, len(mid32), chunk):
        scores = mid32[i : i + chunk] @ w
        scores += c
        j = int(np.argmin(scores))
        if scores.flat[j] < best:
            best, where = float(scores.flat[j]), (i + j // len(c), j % len(c))

    def digits(index: int, n: int) -> list[float]:
        out = []
        for _ in range(n):
            out.append(float(lrs[index % grid]))
            index //= grid
        return out

    schedule = digits(where[0], k1) + digits(where[1], k2)
    return expected_loss(schedule, ready), schedule


@functools.cache
def ceiling(
    steps: int = STEPS, ready: int = READY, grid: int = 8
) -> tuple[float, tuple[float, ...]]:
    """The best expected final loss of any schedule with one learning rate per ready interval.

    :func:`grid_optimum` (exhaustive on a grid), then refined continuously inside the bounds.
    Returns (expected loss, schedule).
    """
    value, schedule = _refine(grid_optimum(steps, ready, grid)[1], ready)
    return value, tuple(schedule)


def best_constant(steps: int = STEPS, ready: int = READY) -> tuple[float, float]:
    """The best fixed learning rate (what random search can at most find): (loss, lr)."""
    lrs = np.logspace(math.log10(LR_LOW), math.log10(LR_HIGH), 301)
    losses = [expected_loss([lr] * (steps // ready), ready) for lr in lrs]
    i = int(np.argmin(losses))
    return float(losses[i]), float(lrs[i])


def greedy(steps: int = STEPS, ready: int = READY) -> tuple[float, list[float]]:
    """The schedule that takes, at every ready point, the η best at the next ready point."""
    lrs = np.logspace(math.log10(LR_LOW), math.log10(LR_HIGH), 301)
    a, b = _interval(lrs, ready)
    s = np.ones(DIM)
    schedule = []
    for _ in range(steps // ready):
        nxt = a * s + b
        i = int(np.argmin(nxt @ CURVATURE))
        schedule.append(float(lrs[i]))
        s = nxt[i]
    return float(0.5 * s @ CURVATURE), schedule


trainable = NoisyQuadratic
space = {"lr": hp.loguniform(LR_LOW, LR_HIGH)}
settings = dict(
    metric="loss",
    mode="min",
    population=8,
    workers=2,
    budget=hp.Steps(STEPS),
    ready=READY,
    seed=0,
    storage="runs/nqm.db",
)


if __name__ == "__main__":
    top, schedule = ceiling()
    fixed, fixed_lr = best_constant()
    greedy_loss, _ = greedy()
    print(f"ceiling (best schedule): expected loss {top:.4f}")
    print("  schedule: " + " ".join(f"{v:.3g}" for v in schedule))
    print(f"best constant lr {fixed_lr:.3g}: {fixed:.4f}; greedy schedule: {greedy_loss:.4f}")
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    print(f"PBT: best member {result.best.id}, final loss {result.best.score:.4f}")
    for row in result.schedule_rows():
        print(row)
