"""The digits CNN of ``examples/digits.py``, the whole population trained as one stacked model.

The same small CNN on scikit-learn's digits, but as a :class:`hyperpop.VectorizedTrainable`:
with ``backend="vectorized"`` every member's weights and SGD state are stacked along a member
dimension and trained together (``torch.func.vmap``), in one process; an exploit is an index copy
inside the stacked tensors. PBT tunes the learning rate, momentum and weight decay per member; the
batch size is a constant here because it changes tensor shapes (the vectorized backend refuses a
per-member batch size). Each training step is one epoch, each member in its own data order.

Run it:

    hyperpop run examples/digits_vectorized.py --overwrite     # PBT with the live view
    python examples/digits_vectorized.py                       # PBT, then held-out accuracy
    hyperpop run examples/digits_vectorized.py --backend local # the same members, one by one
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import hyperpop as hp

_DATA: dict[str, torch.Tensor] = {}


def data() -> dict[str, torch.Tensor]:
    """Digits as 1x8x8 images: train (1000), validation (400) and held-out test (397)."""
    if not _DATA:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(1234).permutation(len(y))
        images = torch.tensor(x[order] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
        labels = torch.tensor(y[order], dtype=torch.long)
        for name, rows in (("train", slice(0, 1000)), ("val", slice(1000, 1400))):
            _DATA[f"x_{name}"], _DATA[f"y_{name}"] = images[rows], labels[rows]
        _DATA["x_test"], _DATA["y_test"] = images[1400:], labels[1400:]
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


class DigitsVectorized(hp.VectorizedTrainable):
    """One member: the CNN trained by SGD with momentum and weight decay; a step is an epoch."""

    optimizer = "sgd"
    batch_size = 32

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        return make_model()

    def data(self, config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        d = data()
        return d["x_train"], d["y_train"]

    def loss(self, model: Any, batch: Any, hparams: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(self, model: Any, hparams: Any) -> dict[str, torch.Tensor]:
        d = data()
        logits = model(d["x_val"])
        return {
            "val_acc": (logits.argmax(-1) == d["y_val"]).float().mean(),
            "val_loss": F.cross_entropy(logits, d["y_val"]),
        }


def evaluate(state: dict[str, Any]) -> float:
    """Held-out test accuracy of a saved member state (``result.load_checkpoint()``)."""
    model = make_model()
    model.load_state_dict(state["model"])
    model.eval()
    d = data()
    with torch.no_grad():
        return float((model(d["x_test"]).argmax(1) == d["y_test"]).float().mean())


trainable = DigitsVectorized
space = {
    "lr": hp.loguniform(1e-3, 0.5),
    "momentum": hp.uniform(0.0, 0.99),
    "weight_decay": hp.loguniform(1e-6, 1e-2),
}
settings = dict(
    metric="val_acc",
    mode="max",
    population=32,
    budget=hp.Steps(24),
    ready=4,
    seed=0,
    backend="vectorized",
    storage="runs/digits_vectorized.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    print(f"best member {best.id}: val_acc {best.score:.4f}, config {best.config}")
    print(f"held-out test accuracy: {evaluate(result.load_checkpoint()):.4f}")
