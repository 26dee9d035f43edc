"""A noisy task whose best learning rate rises, then falls, with progress.

The family of Ray Tune's ``pbt_function`` example (``python/ray/tune/examples/pbt_function.py``),
in hyperpop's own code. A member's "accuracy" a starts at 0. Its best learning rate is a
triangle in a: ``0.01 · a / MIDPOINT`` while a < MIDPOINT, then ``0.01 · (2 − a / MIDPOINT)``,
clipped to [0.001, 0.01]. Each step, with q the ratio between the member's lr and the best one
(at least 1):

* q < TOLERANCE (3): a grows by u / q, u uniform in [0, 1);
* else, if the lr is too large: a shrinks by (q − TOLERANCE) · u;
* then Gaussian noise of standard deviation NOISE (2) is added, and a is kept at 0 or above.

The noise is part of the state (the accuracy *is* the model), so a lucky member really is
ahead, and a copier inherits its luck; the learning rate is searched uniformly in
[0.0001, 0.02]. With the default 300 steps an ideal schedule passes MIDPOINT about two thirds
of the way through, so the best lr rises for most of the run and falls at the end.

Noise is drawn from a generator keyed by the run's ``seed`` attribute, the member's step and
its accuracy, never by its config: two members in the same state draw the same noise whatever
their learning rates, and a member restored from a checkpoint (by a copy, a resume, or Ray
Tune's restart after a pause) goes on drawing fresh noise from where its state stands instead
of replaying a stream from its start. (Ray's own example draws from the process's global
generator; a seed taken from the config there lets selection learn lucky seeds.)

Run it:

    hyperpop run examples/pbt_function.py --overwrite    # PBT with the live view
    python examples/pbt_function.py                      # PBT, then the best member's schedule
"""

from __future__ import annotations

import math
import struct

import numpy as np

import hyperpop as hp

MIDPOINT = 100.0  #: accuracy at which the best lr peaks
TOLERANCE = 3.0  #: lr ratios below this make progress
NOISE = 2.0  #: standard deviation of the noise added each step
LR_LOW, LR_HIGH = 1e-4, 0.02
STEPS, READY = 300, 5


def best_lr(accuracy: float) -> float:
    """The learning rate that makes the fastest progress at ``accuracy``."""
    if accuracy < MIDPOINT:
        lr = 0.01 * accuracy / MIDPOINT
    else:
        lr = 0.01 - 0.01 * (accuracy - MIDPOINT) / MIDPOINT
    return min(0.01, max(0.001, lr))


def advance(accuracy: float, lr: float, u: float, z: float) -> float:
    """One step from ``accuracy`` at ``lr``, with uniform draw ``u`` and standard normal ``z``."""
    best = best_lr(accuracy)
    q = max(lr, best) / min(lr, best)
    if q < TOLERANCE:
        accuracy += u / q
    elif lr > best:
        accuracy -= (q - TOLERANCE) * u
    return max(0.0, accuracy + NOISE * z)


class PBTFunction(hp.Trainable):
    """One member: its accuracy and step count.

    Attributes:
        seed: seed of the noise (with the step and the accuracy; see the module docstring).
    """

    seed: int = 0

    def setup(self, config):
        self.accuracy, self.step = 0.0, 0
        self.apply(config)

    def apply(self, config):
        self.lr = float(config["lr"])

    def _draws(self) -> tuple[float, float]:
        bits = struct.unpack("<Q", struct.pack("<d", self.accuracy))[0]
        rng = np.random.default_rng([self.seed, self.step, bits])
        return float(rng.random()), float(rng.standard_normal())

    def train(self):
        u, z = self._draws()
        self.accuracy = advance(self.accuracy, self.lr, u, z)
        self.step += 1
        return {"accuracy": self.accuracy, "best_lr": best_lr(self.accuracy)}

    def save(self):
        return {"accuracy": self.accuracy, "step": self.step}

    def load(self, state):
        self.accuracy, self.step = float(state["accuracy"]), int(state["step"])


def ideal(steps: int = STEPS, seeds: int = 200) -> float:
    """Median final accuracy of a single member that always trains at the best lr (no
    selection), over ``seeds`` noise seeds: what a perfect schedule reaches without copying
    anyone's luck."""
    out = []
    for s in range(seeds):
        m = PBTFunction()
        m.seed = s
        m.setup({"lr": 0.001})
        for _ in range(steps):
            m.apply({"lr": best_lr(m.accuracy)})
            m.train()
        out.append(m.accuracy)
    return float(np.median(out))


def evaluate(state) -> float:
    """The accuracy of a saved member state (the same number it reported last)."""
    return float(state["accuracy"])


trainable = PBTFunction
space = {"lr": hp.uniform(LR_LOW, LR_HIGH)}
settings = dict(
    metric="accuracy",
    mode="max",
    population=8,
    workers=2,
    budget=hp.Steps(STEPS),
    ready=READY,
    seed=0,
    storage="runs/pbt_function.db",
)


if __name__ == "__main__":
    print(f"a single member at the best lr every step: median accuracy {ideal():.1f}")
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    print(f"PBT: best member {result.best.id}, accuracy {result.best.score:.1f}")
    for row in result.schedule_rows()[:: max(1, math.ceil(len(result.schedule_rows()) / 12))]:
        print(row)
