"""Welch t-test selection (Jaderberg et al. 2017, "Population Based Training", §3.1).

A member at a ready point compares itself with one other member drawn uniformly at random: it
copies the other when the other's mean over its last ``window`` ready scores is better *and*
Welch's t-test says the difference is unlikely to be noise (one-sided p-value below ``alpha``).
Compared with truncation it copies less often on noisy metrics and never copies on a lucky
evaluation alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from hyperpop.population import READY_WINDOW, MemberState
from hyperpop.strategies.base import Context, ExploitStrategy

__all__ = ["WelchTTest", "welch_test"]


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the incomplete beta function (Lentz's method).
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def welch_test(better: Sequence[float], worse: Sequence[float]) -> tuple[float, float]:
    """One-sided Welch t-test that ``better`` has a higher mean than ``worse``.

    Args:
        better: samples of the group claimed to be better (at least 2).
        worse: samples of the other group (at least 2).

    Returns:
        ``(t, p)``: the t statistic and the one-sided p-value. Two groups without any spread
        give ``p = 0`` if the claimed-better mean is higher, else ``p = 1``.
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
    return t, _t_sf(t, df)


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

    def _scores(self, m: MemberState, ctx: Context) -> list[float]:
        return [ctx.oriented(s) for s in m.ready_scores[-self.window :] if not math.isnan(s)]

    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        others = [m for m in ctx.candidates if m.id != member.id]
        if not others:
            return None
        other = others[int(ctx.rng.integers(len(others)))]
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
