"""A small character-level language model (a GRU) on Python's own standard-library sources.

The text is read from the standard library of the Python running this file (no download): a
fixed list of modules, split into training, validation and held-out test text. PBT tunes the
learning rate, dropout and gradient-clipping norm of Adam; one training step is 12 batches of 32
sequences of 64 characters. Selection sees the validation loss (nats per character); only
:func:`evaluate` reads the test text.

Run it:

    hyperpop run examples/charlm.py --overwrite     # PBT with the live view
    python examples/charlm.py                       # PBT, the winner's test loss and a sample
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import hyperpop as hp
from hyperpop.torch import TorchTrainable

#: standard-library modules whose sources make the corpus (about 300k characters)
MODULES = ("textwrap", "string", "shlex", "fractions", "argparse", "calendar", "difflib", "heapq")
SEQ, BATCH, BATCHES = 64, 32, 12
VOCAB = 96  # printable ASCII (32..126) plus newline; anything else becomes "?"

_DATA: dict[str, torch.Tensor] = {}


def encode(text: str) -> torch.Tensor:
    """Characters to ids: newline is 0, printable ASCII 1..95, anything else is ``?``."""
    ids = [0 if c == "\n" else (ord(c) - 31 if 32 <= ord(c) < 127 else ord("?") - 31) for c in text]
    return torch.tensor(ids, dtype=torch.long)


def decode(ids: list[int]) -> str:
    """Inverse of :func:`encode`."""
    return "".join("\n" if i == 0 else chr(i + 31) for i in ids)


def data() -> dict[str, torch.Tensor]:
    """Train (92%), validation (4%) and held-out test (4%) character ids, in file order."""
    if not _DATA:
        root = os.path.dirname(os.__file__)
        parts = []
        for name in MODULES:
            with open(os.path.join(root, name + ".py"), encoding="utf-8") as f:
                parts.append(f.read())
        ids = encode("\n".join(parts))
        n = len(ids)
        a, b = int(n * 0.92), int(n * 0.96)
        _DATA.update(train=ids[:a], val=ids[a:b], test=ids[b:])
    return _DATA


class CharGRU(nn.Module):
    """Embedding, a one-layer GRU with dropout around it, and a linear read-out."""

    def __init__(self, hidden: int = 96, embed: int = 32):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed)
        self.drop = nn.Dropout(0.0)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, VOCAB)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None):
        y, h = self.gru(self.drop(self.embed(x)), h)
        return self.out(self.drop(y)), h


@torch.no_grad()
def loss_on(model: nn.Module, ids: torch.Tensor, chunk: int = 256) -> float:
    """Mean next-character cross-entropy (nats) over ``ids``, in non-overlapping chunks."""
    model.eval()
    n = (len(ids) - 1) // chunk
    x = ids[: n * chunk].view(n, chunk)
    y = ids[1 : n * chunk + 1].view(n, chunk)
    logits, _ = model(x)
    model.train()
    return float(F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)))


class CharLM(TorchTrainable):
    """One member: a character GRU trained with Adam on random windows of the training text."""

    def build(self, config: dict[str, Any]) -> None:
        self.data = data()
        self.model = CharGRU()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"])
        self.generator = torch.Generator().manual_seed(int(torch.initial_seed()) % 2**31)

    def apply(self, config: dict[str, Any]) -> None:
        super().apply(config)  # the learning rate goes into Adam's param groups, moments kept
        for m in self.model.modules():
            if isinstance(m, nn.Dropout):
                m.p = float(config["dropout"])

    def train(self) -> dict[str, float]:
        train = self.data["train"]
        offsets = torch.arange(SEQ + 1)
        total = 0.0
        for _ in range(BATCHES):
            starts = torch.randint(0, len(train) - SEQ - 1, (BATCH, 1), generator=self.generator)
            window = train[starts + offsets]
            logits, _ = self.model(window[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), window[:, 1:].reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config["clip"])
            self.optimizer.step()
            total += float(loss.detach())
        self.steps += 1
        val = loss_on(self.model, self.data["val"])
        return {"val_loss": val, "val_bpc": val / math.log(2), "train_loss": total / BATCHES}


def evaluate(state: dict[str, Any]) -> float:
    """Held-out test loss (nats per character) of a saved member state."""
    model = CharGRU()
    model.load_state_dict(state["model"])
    return loss_on(model, data()["test"])


@torch.no_grad()
def sample(state: dict[str, Any], prompt: str = "def ", length: int = 300, seed: int = 0) -> str:
    """Text generated by a saved model from ``prompt`` (temperature 0.8)."""
    model = CharGRU()
    model.load_state_dict(state["model"])
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = encode(prompt).tolist()
    logits, h = model(torch.tensor([ids]))
    for _ in range(length):
        probs = F.softmax(logits[0, -1] / 0.8, -1)
        ids.append(int(torch.multinomial(probs, 1, generator=g)))
        logits, h = model(torch.tensor([[ids[-1]]]), h)
    return decode(ids)


trainable = CharLM
space = {
    "lr": hp.loguniform(3e-4, 3e-2),
    "dropout": hp.uniform(0.0, 0.5),
    "clip": hp.loguniform(0.05, 5.0),
}
settings = dict(
    metric="val_loss",
    mode="min",
    population=8,
    workers=2,
    budget=hp.Steps(20),
    ready=4,
    seed=0,
    storage="runs/charlm.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    state = result.load_checkpoint()
    print(f"best member {best.id}: val_loss {best.score:.3f}, config {best.config}")
    print(f"held-out test loss: {evaluate(state):.3f} nats/char")
    print(sample(state))
