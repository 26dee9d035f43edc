"""A trainable for the steering tests (importable by worker processes)."""

from __future__ import annotations

from pathlib import Path

from reliability_trainables import Walker


class Paced(Walker):
    """A :class:`Walker` that sleeps ``config['sleep']`` a step only while the file
    ``config['slow']`` exists: a run kept slow until a test has done what it must do to it
    (a later resume, the file gone, trains at full speed)."""

    def apply(self, config):
        super().apply(config)
        self.pace, self.slow = self.sleep, Path(config["slow"])

    def train(self):
        self.sleep = self.pace if self.slow.exists() else 0.0
        return super().train()
