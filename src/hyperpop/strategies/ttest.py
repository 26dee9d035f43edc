"""Welch t-test selection (Jaderberg et al. 2017, "Population Based Training", §3.1).

A member at a ready point compares itself with one other member drawn uniformly at random: it
copies the other when the other's mean over its last ``window`` ready scores is better *and*
Welch's t-test says the difference is unlikely to be noise (one-sided p-value below ``alpha``).
Compared with truncation it copies less often on noisy metrics and never copies on a lucky
evaluation alone.

Needs SciPy (``pip install 'hyperpop[ttest]'``), imported when a run with it starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hyperpop.population import READY_WINDOW, MemberState
from hyperpop.space import Space
from hyperpop.strategies.base import Context, ExploitStrategy

__all__ = ["WelchTTest", "welch_test"]


def _stdtr() -> Any:
    """Student's t CDF from SciPy, imported on first use (``scipy.stats.t.sf`` calls the same
    function; ``scipy.special`` alone imports in a quarter of the time)."""
    try:
        from scipy.special import stdtr
    except ImportError:
        raise ImportError(
            "the ttest exploit strategy needs SciPy: pip install 'hyperpop[ttest]'"
        ) from None
    return stdtr


def welch_test(better: Sequence[float], worse: Sequence[float]) -> tuple[float, float]:
    """One-sided Welch t-test that ``better`` has a higher mean than ``worse``.

    Args:
        better: samples of the group claimed to be better (at least 2).
        worse: samples of the other group (at least 2).

    Returns:
        ``(t, p)``: the t statistic and the one-sided p-value. Two groups without any spread
        give ``p = 0`` if the claimed-better mean is higher, else ``p = 1``.

    Raises:
        ValueError: a group has fewer than 2 samples.
        ImportError: SciPy is not installed.
    """
    n1, n2 = len(better), len(worse)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"Welch's t-test needs at least 2 samples per group, got {n1} and {n2}")
    m1, m2 = math.fsum(better) / n1, math.fsum(worse) / n2
    v1 = math.fsum((x - m1) ** 2 for x in better) / (n1 - 1)
    v2 = math.fsum((x - m2) ** 2 for x in worse) / (n2 - 1)
    se2 = v1 / n1 + v2 / n2
    if se2 <= 0.0:
        return (math.inf, 0.0) if m1 > m2 else (-math.inf if m1 < m2 else 0.0, 1.0)
    t = (m1 - m2) / math.sqrt(se2)
    df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    return t, float(_stdtr()(df, -t))  # P(T > t)


class WelchTTest(ExploitStrategy):
    """Copy a random other member when Welch's t-test says it is better.

    Args:
        window: how many of each member's latest ready scores to compare (the paper uses 10
            episode returns); at most 32, the number a member keeps.
        alpha: the one-sided p-value below which the other member counts as better.
        min_samples: fewer ready scores than this on either side means no copy yet.
    """

    name = "ttest"

    def __init__(self, window: int = 10, alpha: float = 0.05, min_samples: int = 3):
        if not isinstance(window, int) or not 2 <= window <= READY_WINDOW:
            raise ValueError(f"ttest window must be an int in [2, {READY_WINDOW}], got {window!r}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"ttest alpha must be a p-value threshold in (0, 1), got {alpha!r}")
        if not isinstance(min_samples, int) or not 2 <= min_samples <= window:
            raise ValueError(
                f"ttest min_samples must be an int in [2, window={window}], got {min_samples!r}"
            )
        self.window, self.alpha, self.min_samples = window, float(alpha), min_samples

    def bind(self, space: Space) -> None:
        _stdtr()  # fail at the start of a run, not at the first decision

    def _scores(self, m: MemberState, ctx: Context) -> list[float]:
        return [ctx.oriented(s) for s in m.ready_scores[-self.window :] if not math.isnan(s)]

    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        other = ctx.random_other(member)
        if other is None:
            return None
        mine, theirs = self._scores(member, ctx), self._scores(other, ctx)
        if len(theirs) < self.min_samples:
            return None
        if not mine:  # a member with only NaN scores copies anyone with real scores
            return other
        if len(mine) < self.min_samples:
            return None
        _, p = welch_test(theirs, mine)
        return other if p < self.alpha else None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "window": self.window,
            "alpha": self.alpha,
            "min_samples": self.min_samples,
        }
