"""A small CNN on scikit-learn's bundled digits (8x8 images), tuned by PBT.

PBT tunes the learning rate, momentum, weight decay and batch size of SGD; each training step is
one epoch over the training split. Selection sees only the validation accuracy; the test split is
held out and only :func:`evaluate` looks at it (for the winner, after the run).

Run it:

    hyperpop run examples/digits.py --overwrite     # PBT with the live view
    python examples/digits.py                       # PBT, then the winner's held-out accuracy
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import hyperpop as hp
from hyperpop.torch import TorchTrainable, minibatches

_DATA: dict[str, Any] = {}


def data() -> dict[str, torch.Tensor]:
    """The digits split into train (1000), validation (400) and held-out test (397) tensors."""
    if not _DATA:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(1234).permutation(len(y))
        x = torch.tensor(x[order] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
        y = torch.tensor(y[order], dtype=torch.long)
        for name, sl in (("train", slice(0, 1000)), ("val", slice(1000, 1400))):
            _DATA[f"x_{name}"], _DATA[f"y_{name}"] = x[sl], y[sl]
        _DATA["x_test"], _DATA["y_test"] = x[1400:], y[1400:]
    return _DATA


def make_model() -> nn.Module:
    """Two 3x3 convolutions, a max-pool and two dense layers (about 40k parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``x``, ``y``."""
    model.eval()
    logits = model(x)
    model.train()
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


class Digits(TorchTrainable):
    """One member: a CNN trained by SGD; one step is one epoch."""

    def build(self, config: dict[str, Any]) -> None:
        self.data = data()
        self.model = make_model()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        self.generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**31)

    def train(self) -> dict[str, float]:
        d = self.data
        total, n = 0.0, 0
        for x, y in minibatches(
            d["x_train"],
            d["y_train"],
            batch_size=self.config["batch_size"],
            generator=self.generator,
        ):
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        self.steps += 1
        val_acc, val_loss = accuracy(self.model, d["x_val"], d["y_val"])
        return {"val_acc": val_acc, "val_loss": val_loss, "train_loss": total / n}


def evaluate(state: dict[str, Any]) -> float:
    """Held-out test accuracy of a saved member state (``result.load_checkpoint()``)."""
    model = make_model()
    model.load_state_dict(state["model"])
    d = data()
    return accuracy(model, d["x_test"], d["y_test"])[0]


trainable = Digits
space = {
    "lr": hp.loguniform(1e-3, 0.5),
    "momentum": hp.uniform(0.0, 0.99),
    "weight_decay": hp.loguniform(1e-6, 1e-2),
    "batch_size": hp.choice([16, 32, 64, 128]),
}
settings = dict(
    metric="val_acc",
    mode="max",
    population=16,
    workers=2,
    budget=hp.Steps(24),
    ready=4,
    seed=0,
    storage="runs/digits.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    print(f"best member {best.id}: val_acc {best.score:.4f}, config {best.config}")
    print(f"held-out test accuracy: {evaluate(result.load_checkpoint()):.4f}")
    for row in result.schedule_rows():
        print(row)
