"""The run's rules that people set: when a member is ready (:class:`Ready`), when a stalled
member is reset (:class:`Rejuvenate`) and when training stops (the budgets :class:`Steps`,
:class:`WallTime`, :class:`Target`).

Plain frozen values, low enough that the fold, the settings and the controller all read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Budget",
    "Ready",
    "Rejuvenate",
    "Steps",
    "Target",
    "WallTime",
    "budget_from_dict",
    "step_limit",
]


@dataclass(frozen=True)
class Ready:
    """When a member is ready: every ``steps`` training steps or ``seconds`` of training.

    Args:
        steps: training steps between ready points.
        seconds: or seconds of training between ready points (wins over ``steps`` if both).
        burn_in: no exploit before a member's model has trained this many steps.
    """

    steps: int | None = 4
    seconds: float | None = None
    burn_in: int = 0

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise ValueError("Ready needs steps or seconds")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"Ready(steps=...) must be a positive int, got {self.steps!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"Ready(seconds=...) must be positive, got {self.seconds!r}")
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"steps": self.steps, "seconds": self.seconds, "burn_in": self.burn_in}


@dataclass(frozen=True)
class Rejuvenate:
    """Rejuvenation: reset a stalled member's weights, keep its hyperparameter lineage.

    Args:
        patience: ready points without improvement before the reset.
        config: the hyperparameters it trains with after the reset: ``"explore"`` (perturbed
            from its current ones, default), ``"keep"`` (its current ones) or ``"resample"``
            (fresh from the space).
        reset: ``"full"`` (fresh weights from ``setup(config)``, default) or a name passed to
            the trainable's ``reset(how)`` hook for a partial reset (``TorchTrainable``
            knows ``"shrink_perturb"`` and ``"reinit:<module>,<module>"``).
        grace: ready points after a reset during which the member is neither copied over
            nor reset again, so its fresh start gets a chance.

    The member keeps its step count and its schedule goes on, with the reset marked in it;
    the member holding the population's best ready score is never reset.
    """

    patience: int
    config: str = "explore"
    reset: str = "full"
    grace: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int):
            raise ValueError(f"rejuvenate patience must be an int, got {self.patience!r}")
        if self.patience < 1:
            raise ValueError("rejuvenate must be a positive number of ready points or None")
        if self.config not in ("explore", "keep", "resample"):
            raise ValueError(
                f"Rejuvenate(config=...) must be 'explore', 'keep' or 'resample', "
                f"got {self.config!r}"
            )
        if not isinstance(self.reset, str) or not self.reset:
            raise ValueError(f"Rejuvenate(reset=...) must be 'full' or a name, got {self.reset!r}")
        if not isinstance(self.grace, int) or self.grace < 0:
            raise ValueError(f"Rejuvenate(grace=...) must be an int >= 0, got {self.grace!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"patience": self.patience, "config": self.config, "reset": self.reset,
                "grace": self.grace}  # fmt: skip

    @classmethod
    def of(cls, value: Any) -> Rejuvenate | None:
        """From ``None``, a patience, a dict (:meth:`to_dict`) or a ``Rejuvenate``."""
        if value is None or isinstance(value, Rejuvenate):
            return value
        if isinstance(value, dict):
            return cls(**value)
        return cls(value)


class Budget:
    """Base class of stopping criteria."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        raise NotImplementedError

    def describe(self) -> str:
        """In words (``"16 steps"``), as a run's interventions list it."""
        return str(self.to_dict())


@dataclass(frozen=True)
class Steps(Budget):
    """Each member trains until its model has ``n`` training steps."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Steps(n) needs a positive int, got {self.n!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "steps", "n": self.n}

    def describe(self) -> str:
        return f"{self.n} steps"


@dataclass(frozen=True)
class WallTime(Budget):
    """The run stops after ``seconds`` of wall time (across resumes: time the driver ran)."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"WallTime(seconds) must be positive, got {self.seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "wall_time", "seconds": self.seconds}

    def describe(self) -> str:
        return f"{self.seconds:g}s wall time"


@dataclass(frozen=True)
class Target(Budget):
    """The run stops as soon as a member's ready score reaches ``score``."""

    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "target", "score": self.score}

    def describe(self) -> str:
        return f"target {self.score:g}"


def budget_from_dict(d: dict[str, Any]) -> Budget:
    """Inverse of :meth:`Budget.to_dict`."""
    t = d.get("type")
    if t == "steps":
        return Steps(int(d["n"]))
    if t == "wall_time":
        return WallTime(float(d["seconds"]))
    if t == "target":
        return Target(float(d["score"]))
    raise ValueError(f"unknown budget {d!r}")


def step_limit(budget: Iterable[Budget]) -> int | None:
    """The steps each member trains under ``budget`` (the smallest :class:`Steps`), or None."""
    return min((b.n for b in budget if isinstance(b, Steps)), default=None)
