"""The toy problem of Jaderberg et al. 2017 ("Population Based Training of Neural Networks", §4).

The true objective is Q(θ) = 1.2 − (θ0² + θ1²). Each member only sees a surrogate
Q̂(θ|h) = 1.2 − (h0·θ0² + h1·θ1²) and takes gradient-ascent steps of size 0.01 on it. Starting from
θ = (0.9, 0.9) with h = (1, 0) and (0, 1), neither member alone can reach the optimum: each
shrinks only one coordinate. PBT combines them: at every ready point (4 steps) the worse member
copies the better one's θ and h, then perturbs h.

Run it:

    hyperpop run examples/toy.py            # the PBT run with the live view
    python examples/toy.py                  # the paper's ablations side by side
"""

from __future__ import annotations

import numpy as np

import hyperpop as hp


class Toy(hp.Trainable):
    """One member: θ trained by gradient ascent on the surrogate Q̂(θ|h)."""

    def setup(self, config):
        self.theta = np.array([0.9, 0.9])
        self.apply(config)

    def apply(self, config):
        self.h = np.array([config["h0"], config["h1"]])

    def train(self):
        self.theta = self.theta + 0.01 * (-2.0 * self.h * self.theta)  # ∇θ Q̂(θ|h)
        q = 1.2 - float(np.sum(self.theta**2))
        return {"Q": q, "theta0": float(self.theta[0]), "theta1": float(self.theta[1])}

    def save(self):
        return self.theta.copy()

    def load(self, state):
        self.theta = np.array(state)


trainable = Toy
space = {"h0": hp.uniform(0.0, 1.0), "h1": hp.uniform(0.0, 1.0)}
settings = dict(
    metric="Q",
    mode="max",
    population=2,
    workers=2,
    budget=hp.Steps(200),
    ready=4,
    configs=[{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}],
    synchronous=True,
    seed=0,
    storage="runs/toy.db",
)

#: the paper's ablations: (exploit, explore)
ABLATIONS = {
    "pbt": ("truncation", "perturb"),
    "exploit only": ("truncation", None),
    "explore only": (None, "perturb"),
    "grid search": (None, None),
}


def ablation(name: str, *, seed: int = 0, workers: int = 2) -> hp.Result:
    """Run one ablation of the toy problem (no store: results stay in memory)."""
    exploit, explore = ABLATIONS[name]
    kw = {k: v for k, v in settings.items() if k not in ("storage", "workers", "seed")}
    return hp.run(Toy, space, exploit=exploit, explore=explore, seed=seed, workers=workers, **kw)


if __name__ == "__main__":
    print(f"{'variant':<14} {'best Q':>8} {'steps to Q>1.18':>16}")
    for name in ABLATIONS:
        res = ablation(name)
        rows = res.records()
        reached = [r["step"] for r in rows if r["score"] > 1.18]
        first = min(reached) if reached else "never"
        print(f"{name:<14} {res.best.score:>8.4f} {first!s:>16}")
