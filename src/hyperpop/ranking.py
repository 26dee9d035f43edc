"""Which scores are better: one :class:`Ranking` per optimisation direction.

Every comparison of scores in hyperpop goes through a ``Ranking`` (the fold's best and stall
counts, the controller's candidates and targets, the strategies' oriented values, the read
side's sort orders), so "better" means the same everywhere: higher for ``"max"``, lower for
``"min"``, and a missing score (None) or NaN is worse than any number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = ["MODES", "Ranking"]

T = TypeVar("T")

#: the optimisation directions
MODES = ("max", "min")


@dataclass(frozen=True)
class Ranking:
    """How scores rank under ``mode`` (``"max"``: higher is better; ``"min"``: lower).

    None and NaN are worse than any number: a diverged member never ranks first.

    Raises:
        ValueError: ``mode`` is neither ``"max"`` nor ``"min"``.
    """

    mode: str = "max"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    @staticmethod
    def of(mode: str) -> Ranking:
        """The ranking of ``mode`` (shared instances: cheap to ask for per event)."""
        ranking = _SHARED.get(mode)
        return Ranking(mode) if ranking is None else ranking

    @property
    def sign(self) -> float:
        """+1.0 for ``"max"``, -1.0 for ``"min"``: ``sign * score`` is higher when better."""
        return 1.0 if self.mode == "max" else -1.0

    @property
    def worst(self) -> float:
        """The worst possible number: -inf for ``"max"``, +inf for ``"min"``."""
        return -self.sign * math.inf

    def better(self, a: float | None, b: float | None) -> bool:
        """Whether ``a`` is strictly better than ``b`` (any number beats None and NaN)."""
        if a is None or math.isnan(a):
            return False
        if b is None or math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b

    def at_least(self, a: float | None, b: float | None) -> bool:
        """Whether ``a`` is as good as ``b`` or better (anything is as good as a missing ``b``;
        a missing ``a`` is as good as nothing else)."""
        if b is None or math.isnan(b):
            return True
        if a is None or math.isnan(a):
            return False
        return a >= b if self.mode == "max" else a <= b

    def oriented(self, score: float | None) -> float:
        """``score`` turned so that higher is better (None and NaN are -inf)."""
        if score is None or math.isnan(score):
            return -math.inf
        return self.sign * score

    def oriented_array(self, scores: np.ndarray) -> np.ndarray:
        """:meth:`oriented` of every entry of an array (NaN becomes -inf)."""
        values = self.sign * np.asarray(scores, dtype=float)
        return np.where(np.isnan(values), -math.inf, values)

    def key(self, score: float | None) -> tuple[int, float]:
        """A sort key that puts the best score first (ascending sort), None and NaN last."""
        if score is None or math.isnan(score):
            return (1, 0.0)
        return (0, -self.sign * score)

    def best_of(self, items: Iterable[T], score: Callable[[T], float | None]) -> T | None:
        """The item with the best ``score(item)``, the first among equals; items scored None
        are skipped, NaN wins only when every score is NaN; None when no item has a score."""
        best: T | None = None
        best_score: float | None = None
        for item in items:
            s = score(item)
            if s is None:
                continue
            if best is None or self.better(s, best_score):
                best, best_score = item, s
        return best

    def reached(self, score: float | None, target: float) -> bool:
        """Whether ``score`` reaches ``target`` (at or beyond it on the better side)."""
        return score is not None and not math.isnan(score) and self.at_least(score, target)

    def toward_better(self, score: float) -> float:
        """The next float after ``score`` on the better side."""
        return float(np.nextafter(score, self.sign * math.inf))

    def toward_worse(self, score: float) -> float:
        """The next float after ``score`` on the worse side."""
        return float(np.nextafter(score, -self.sign * math.inf))


_SHARED = {mode: Ranking(mode) for mode in MODES}
