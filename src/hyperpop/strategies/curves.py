"""Learning curves compared at equal level: FIRE-PBT's improvement-rate tests.

Two members' curves (their reports since their weights were last replaced) are compared where
they reach the same score: from the first point at which the lower-starting one reaches the
other's start, over the points both have from there. FIRE-PBT (Dalibard & Jaderberg 2021) asks
of such a pair whether one improves faster (:func:`binomial`: a one-sided sign test over the
paired points) and by how much (:func:`best_difference`: the difference of the best scores each
reaches over the same number of points).
"""

from __future__ import annotations

import math

import numpy as np

from hyperpop.population import MemberState

__all__ = ["SMOOTH", "best_difference", "binomial", "curve", "overlap", "smooth"]

#: reports smoothed together when looking for where two curves overlap
SMOOTH = 5
#: finite stand-ins for a diverged report (NaN or infinite), so comparisons stay defined
BIG = 1e300


def curve(m: MemberState, since: int | None, mode: str) -> np.ndarray:
    """Member ``m``'s reports since its weights were last replaced at step ``since`` (None:
    all of them), oriented so that higher is better, diverged reports made finite."""
    h = m.history
    lo = -1 if since is None else since
    i = len(h) - 1
    if i < 0 or h[i][0] <= lo:
        return np.zeros(0)
    while i > 0 and h[i - 1][0] < h[i][0] and h[i - 1][0] > lo:
        i -= 1
    c = np.array([s for _, s in h[i:]], dtype=float)
    if mode != "max":
        c = -c
    return np.nan_to_num(c, nan=-BIG, posinf=BIG, neginf=-BIG)


def smooth(c: np.ndarray) -> np.ndarray:
    """A centred moving average over :data:`SMOOTH` reports (fewer at the ends)."""
    w = min(SMOOTH, len(c))
    if w <= 1:
        return c.copy()
    k = np.ones(w)
    return np.convolve(c, k, "same") / np.convolve(np.ones(len(c)), k, "same")


def overlap(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int] | None:
    """Where smoothed curves ``a`` and ``b`` overlap: the first point at which the lower one
    reaches the other's start, the other's start, and how many points both have from there;
    None when the lower one never gets there."""
    if a[0] < b[0]:
        hit = np.flatnonzero(a >= b[0])
        if not len(hit):
            return None
        i, j = int(hit[0]), 0
    else:
        hit = np.flatnonzero(b >= a[0])
        if not len(hit):
            return None
        i, j = 0, int(hit[0])
    return i, j, min(len(a) - i, len(b) - j)


def best_difference(a: np.ndarray, b: np.ndarray, overlap: tuple[int, int, int] | None) -> float:
    """How much higher ``a`` gets than ``b`` over the same number of points from the same
    level: the difference of their best scores over the overlap. Without one, ``a``'s gain
    over ``b``'s along their common length where ``a`` lies above ``b`` (at least 0), else 0."""
    if overlap is not None:
        i, j, n = overlap
        return float(a[i : i + n].max() - b[j : j + n].max())
    sa, sb = smooth(a), smooth(b)
    if sa[0] >= sb[0]:  # no overlap, a starts higher: a lies above b
        n = min(len(a), len(b))
        return max(0.0, float((a[:n].max() - a[0]) - (b[:n].max() - b[0])))
    return 0.0


def binomial(a: np.ndarray, b: np.ndarray, overlap: tuple[int, int, int] | None) -> float:
    """One-sided binomial test of H1 "``a`` beats ``b``" over paired points of the overlap
    (over the common start when the curves do not overlap but cross): 0 when ``a`` lies
    wholly above ``b``, 2 (never significant) when wholly below."""
    if overlap is None:
        if a.min() > b.max():
            return 0.0
        if a.max() < b.min():
            return 2.0
        overlap = (0, 0, min(len(a), len(b)))
    i, j, n = overlap
    k = int(np.count_nonzero(a[i : i + n] > b[j : j + n]))
    return sum(math.comb(n, x) for x in range(k, n + 1)) / 2**n
