"""The read side: one fold of a run's events for everything that shows or reports a run.

:class:`RunData` folds the events once into a :class:`~hyperpop.population.Population` and keeps
what the fold itself has no use for: every report (all its metrics, the flat config it was
trained with, when it was made) and each member's lineage edges in log order, so the recorded
history of any weights can be followed back through every copy (:meth:`RunData.lineage_reports`).
:func:`summary` and :func:`member_rows` read the folded population. ``Result``, the live view,
the dashboard and the command line all read a run through this module; none walks the events.
"""

from __future__ import annotations

from hyperpop.summary.groups import GROUP_RULES, group_of, groups, has_groups
from hyperpop.summary.overview import (
    RECENT_INTERVENTIONS,
    ProgressView,
    RunState,
    exploit_count,
    member_rows,
    run_status,
    summary,
)
from hyperpop.summary.reports import Report, RunData, metric_column
from hyperpop.summary.values import fmt, is_number, json_safe, num

__all__ = [
    "GROUP_RULES",
    "RECENT_INTERVENTIONS",
    "ProgressView",
    "Report",
    "RunData",
    "RunState",
    "exploit_count",
    "fmt",
    "group_of",
    "groups",
    "has_groups",
    "is_number",
    "json_safe",
    "member_rows",
    "metric_column",
    "num",
    "run_status",
    "summary",
]
