"""The trainable the backend contract trains by default (importable by worker processes)."""

from __future__ import annotations

from typing import Any

from hyperpop.trainable import Trainable

__all__ = ["Climber"]


class Climber(Trainable):
    """Adds ``lr`` to its total each step and reports ``score`` (the total) and ``step`` (its own
    count of steps, kept in its checkpoints); a config with a true ``fail`` makes ``train``
    raise ``ValueError``."""

    def setup(self, config: dict[str, Any]) -> None:
        self.total, self.steps = 0.0, 0
        self.apply(config)

    def apply(self, config: dict[str, Any]) -> None:
        self.lr = float(config["lr"])
        self.fail = bool(config.get("fail"))

    def train(self) -> dict[str, Any]:
        if self.fail:
            raise ValueError(f"Climber fails as its config asks (at step {self.steps + 1})")
        self.total += self.lr
        self.steps += 1
        return {"score": self.total, "step": self.steps}

    def save(self) -> dict[str, Any]:
        return {"total": self.total, "steps": self.steps}

    def load(self, state: dict[str, Any]) -> None:
        self.total, self.steps = float(state["total"]), int(state["steps"])
