"""A counter trainable, and a small run file of it for command-line tests (simulated backend)."""

from __future__ import annotations

import inspect
from pathlib import Path

import hyperpop as hp


class Counter(hp.Trainable):
    """Adds its learning rate every step; its state is the running total."""

    def setup(self, config):
        self.total = 0.0
        self.apply(config)

    def apply(self, config):
        self.lr = config["lr"]

    def train(self):
        self.total += self.lr
        return {"score": self.total}

    def save(self):
        return {"total": self.total}

    def load(self, state):
        self.total = state["total"]


_JOB = """
import hyperpop as hp

{counter}
trainable = Counter
space = {{"lr": hp.uniform(0.1, 1.0)}}
settings = dict(
    metric="score", population=2, workers=2, ready=2, budget={budget}, backend="simulated"{extra}
)
"""


def counter_job(tmp_path: Path, *, budget: int = 4, extra: str = "", name: str = "job") -> Path:
    """Write the run file ``name.py`` in ``tmp_path`` (``extra`` is appended to its settings,
    e.g. ``", populaton=3"``) and return its path."""
    path = tmp_path / f"{name}.py"
    counter = inspect.getsource(Counter)
    path.write_text(_JOB.format(counter=counter, budget=budget, extra=extra))
    return path
