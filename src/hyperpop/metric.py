"""The run's metric in a worker's reports: the score each report gives, and the one stop the
scores force (training diverged in every member)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hyperpop.errors import MetricError, RunError
from hyperpop.population import Population

__all__ = ["check_diverged", "score_of"]


def score_of(metrics: Mapping[str, Any], metric: str, member: int) -> float:
    """The score of one report of ``member``: its ``metric``, as a float.

    Raises:
        MetricError: the report lacks the metric, or it is not a number.
    """
    if metric not in metrics:
        raise MetricError(
            f"the trainable reported {sorted(metrics)} but not the metric {metric!r} "
            f"(member {member}); return it from train() or pass metric= one of those keys"
        )
    value = metrics[metric]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MetricError(
            f"metric {metric!r} must be a number, got {value!r} (member {member})"
        ) from None


def check_diverged(pop: Population, metric: str) -> None:
    """Stop the run once every member still training scores NaN at its ready point.

    Raises:
        RunError: training diverged everywhere (what was recorded is kept).
    """
    members = [m for m in pop.members.values() if m.status != "failed"]
    scored = [m.ready_score for m in members if m.ready_score is not None]
    if members and len(scored) == len(members) and all(math.isnan(s) for s in scored):
        raise RunError(
            f"every member reports NaN for {metric!r}: training diverged "
            "everywhere. Narrow the search space (e.g. lower learning rates) or clip "
            "gradients; what was recorded so far is kept in the store"
        )
