"""A PyTorch Lightning module on scikit-learn's bundled digits, PBT-trained with its Trainer.

``LitDigits`` is an ordinary ``LightningModule``: it reads its hyperparameters from
``self.hparams`` (``save_hyperparameters()``), logs ``val_acc`` in ``validation_step``, and builds
its optimiser and dataloaders from the hparams. ``LightningTrainable.wrap`` turns it into a
hyperpop trainable: one interval is one epoch of ``Trainer.fit``; an exploit restores the donor's
weights, SGD momentum buffers and LR-scheduler position, then the member's own explored learning
rate, momentum, weight decay and batch size take over. The test split is held out: only
:func:`evaluate` reads it. docs/integrations.md shows the plain Lightning script this came from.

Run it (needs ``pip install "hyperpop[lightning,examples]"``):

    hyperpop run examples/digits_lightning.py --overwrite   # PBT with the live view
    python examples/digits_lightning.py                     # PBT, then the held-out accuracy
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import hyperpop as hp
from hyperpop.integrations.lightning import LightningTrainable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits

data = digits.data


class LitDigits(L.LightningModule):
    """A small CNN (about 40k parameters) trained by SGD with a cosine learning-rate decay."""

    def __init__(self, lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=32, epochs=24):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.SGD(
            self.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay
        )
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=h.epochs, eta_min=h.lr / 20)}  # fmt: skip

    def train_dataloader(self):
        d = data()
        ds = TensorDataset(d["x_train"], d["y_train"])
        return DataLoader(ds, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        d = data()
        return DataLoader(TensorDataset(d["x_val"], d["y_val"]), batch_size=400)


@torch.no_grad()
def evaluate(state: dict[str, Any]) -> float:
    """Held-out test accuracy of a saved member state (``result.load_checkpoint()``)."""
    model = LitDigits()
    model.load_state_dict(state["state_dict"])
    model.eval()
    d = data()
    return float((model(d["x_test"]).argmax(1) == d["y_test"]).float().mean())


trainable = LightningTrainable.wrap(LitDigits, epochs=1, trainer_kwargs={"accelerator": "cpu"})
space = digits.space
settings = dict(
    metric="val_acc",
    mode="max",
    population=8,
    workers=2,
    budget=hp.Steps(24),
    ready=4,
    seed=0,
    storage="runs/digits_lightning.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    print(f"best member {best.id}: val_acc {best.score:.4f}, config {best.config}")
    print(f"held-out test accuracy: {evaluate(result.load_checkpoint()):.4f}")
