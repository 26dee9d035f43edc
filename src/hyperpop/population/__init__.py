"""The population's state as a fold over the event log.

:class:`Population` is what the controller decides over, what resume rebuilds, and what results,
the live view and the dashboard read. It is only ever changed by :meth:`Population.apply`, which
hands each event to its kind's handler (:mod:`hyperpop.population.fold`). The member-level state
and the columnar ready index are in :mod:`hyperpop.population.members`; the population itself,
its queries and the one definition of the run's best model in :mod:`hyperpop.population.state`.
"""

from __future__ import annotations

from hyperpop.population.fold import _HANDLERS
from hyperpop.population.members import (
    READY_WINDOW,
    Best,
    BlobInfo,
    Edge,
    EdgeKind,
    MemberState,
    MemberStatus,
    ReadyIndex,
    Segment,
    TrainedInterval,
)
from hyperpop.population.state import RESULT_RULES, Population

__all__ = [
    "READY_WINDOW",
    "RESULT_RULES",
    "Best",
    "BlobInfo",
    "Edge",
    "EdgeKind",
    "MemberState",
    "MemberStatus",
    "Population",
    "ReadyIndex",
    "Segment",
    "TrainedInterval",
    "_HANDLERS",
]
