"""The interfaces every exploit and explore strategy implements, and the context they get."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hyperpop.population import MemberState, Population
from hyperpop.space import Space

__all__ = ["Context", "ExploitStrategy", "ExploreStrategy"]


@dataclass
class Context:
    """What a strategy may look at when it decides for one member.

    Attributes:
        mode: ``"max"`` or ``"min"``.
        rng: the controller's seeded generator (use it for every random choice).
        candidates: members with a ready score that may serve as donors (the deciding member
            included).
        population: the whole population state (history, lineage, settings).
        space: the search space.
        now: the current time as the driver sees it.
        batch: configs already chosen by other members deciding in the same round (for batch
            strategies such as PB2 that must spread their picks).
    """

    mode: str
    rng: np.random.Generator
    candidates: Sequence[MemberState]
    population: Population
    space: Space
    now: float = 0.0
    batch: list[dict[str, Any]] = field(default_factory=list)

    def value(self, m: MemberState) -> float:
        """The member's ready score oriented so that higher is better (NaN is worst)."""
        s = m.ready_score
        if s is None or math.isnan(s):
            return -math.inf
        return s if self.mode == "max" else -s

    def oriented(self, score: float) -> float:
        """A raw score oriented so that higher is better (NaN is worst)."""
        if score is None or math.isnan(score):
            return -math.inf
        return score if self.mode == "max" else -score


class ExploitStrategy(ABC):
    """Chooses whose weights a member should copy at a ready point."""

    #: short name used in settings and tables
    name: str = "exploit"

    @abstractmethod
    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        """Return the donor to copy, ``member`` itself to keep the weights but still explore,
        or None to carry on unchanged."""

    def bind(self, space: Space) -> None:  # noqa: B027 - optional hook
        """Check the strategy's settings against the space; called once when a run starts."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (recorded in the store)."""
        return {"name": self.name}


class ExploreStrategy(ABC):
    """Chooses the hyperparameters a member trains with after an exploit."""

    name: str = "explore"

    @abstractmethod
    def explore(
        self, config: dict[str, Any], member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any]:
        """Return the new config, starting from the donor's ``config``."""

    def bind(self, space: Space) -> None:  # noqa: B027 - optional hook
        """Check the strategy's settings against the space; called once when a run starts."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (recorded in the store)."""
        return {"name": self.name}
