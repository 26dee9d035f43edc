"""Results of a run: a table of every report, the best member, its schedule, and the lineage.

Everything here is read from the event log through :mod:`hyperpop.summary` (one fold), so a
:class:`Result` can be opened from a store while the run goes on, after it ended, or after a
crash.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperpop.checkpoints import CheckpointStore
from hyperpop.population import MemberState, Population
from hyperpop.population.members import config_at
from hyperpop.space import flatten_config as _flat
from hyperpop.store.events import Event
from hyperpop.summary import RunData, fmt, group_of, has_groups, summary

__all__ = ["MemberResult", "Result", "ScheduleEntry"]


class ScheduleEntry(dict):
    """One entry of a schedule: ``step``, ``trained_by``, ``config`` (and ``by``, ``reset``
    where set). Asking it for a hyperparameter by name says where to find it."""

    def __missing__(self, key: Any) -> Any:
        raise KeyError(
            f"{key!r}: a schedule entry has the keys {sorted(self)}; its hyperparameters are "
            f"under 'config' (entry['config']), and schedule_rows() gives flat rows with one "
            "column per hyperparameter"
        )


def _entries(schedule: Any) -> list[dict[str, Any]]:
    """A schedule's segments as :class:`ScheduleEntry` dicts."""
    return [
        ScheduleEntry(
            {"step": s.step, "trained_by": s.member, "config": s.config}
            | ({"by": s.by} if s.by else {})
            | ({"reset": s.reset} if s.reset else {})
        )
        for s in schedule
    ]


def _holds_tensors(state: Any) -> bool:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return False
    stack = [state]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            return True
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return False


@dataclass
class MemberResult:
    """One member at the end (or at the moment the store was read).

    Attributes:
        id: the member's id.
        score: its last reported score; for :attr:`Result.best`, the score the best model is
            ranked by (see :meth:`~hyperpop.population.Population.best_model`).
        step: training steps of the weights it holds.
        config: the hyperparameters it trains with now.
        status: ``running``, ``finished`` or ``failed``.
        schedule: the hyperparameters its weights were trained with, from step 0, including
            the part inherited from donors: a list of ``{"step", "trained_by", "config"}``
            (each entry holds from its step until the next entry's).
        checkpoint: the id of the checkpoint holding its weights.
        parent: the last member it copied, if any.
        exploits: how many times it copied another member.
        failures: how many times its trainable failed.
        seq: for an earlier state of the member (``Result.best`` when the best weights were
            saved before the member's current ones), the event that recorded it; None for
            the member as it is now.
        group: its sub-population or role under a strategy that splits the population
            (``"mf 1/2 (every 1)"``, ``"greedy"``, ``"parent"``, ``"evaluator"``); None otherwise.
    """

    id: int
    score: float | None
    step: int
    config: dict[str, Any]
    status: str
    schedule: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None
    parent: int | None = None
    exploits: int = 0
    failures: int = 0
    last_error: str | None = None
    seq: int | None = None
    group: str | None = None

    @classmethod
    def of(cls, m: MemberState) -> MemberResult:
        """Build from a member's folded state."""
        same = {k: getattr(m, k) for k in _AS_FOLDED}
        return cls(score=m.last_score, schedule=_entries(m.schedule), **same)

    @classmethod
    def of_checkpoint(cls, pop: Population, blob: str) -> MemberResult:
        """The member that saved checkpoint ``blob``, as it was then."""
        info = pop.blobs[blob]
        return dataclasses.replace(
            cls.of(pop.members[info.member]),
            score=info.score,
            step=info.step,
            config=info.config,
            schedule=_entries(info.schedule),
            checkpoint=blob,
            seq=info.seq,
        )

    def schedule_fn(self) -> Callable[[int], dict[str, Any]]:
        """The schedule as a plain function ``step -> config`` (1-based training steps), to
        drive a training loop with no hyperpop in it (see ``hyperpop.torch.ScheduleLR``)."""
        return functools.partial(config_at, [dict(s) for s in self.schedule])

    def config_at(self, step: int) -> dict[str, Any]:
        """The config the weights were trained with at training step ``step`` (1-based)."""
        return config_at(self.schedule, step)

    def schedule_rows(self) -> list[dict[str, Any]]:
        """The schedule as flat rows (``step``, ``trained_by``, one column per parameter; ``by``
        is ``"user"`` on the rows a person set)."""
        return [
            {"step": s["step"], "trained_by": s["trained_by"]}
            | ({"by": s["by"]} if s.get("by") else {})
            | _flat(s["config"])
            for s in self.schedule
        ]


#: the fields of a :class:`MemberResult` that are the member's folded state as it is
_AS_FOLDED = (
    "id",
    "step",
    "config",
    "status",
    "checkpoint",
    "parent",
    "exploits",
    "failures",
    "last_error",
)


class Result:
    """A run's outcome, computed from its event log.

    Args:
        events: the run's events in order.
        path: the store they came from, if any (checkpoints are found beside it).
    """

    def __init__(self, events: list[Event], *, path: str | os.PathLike[str] | None = None):
        self.events = list(events)
        self.path = Path(path) if path is not None else None
        #: the folded log: the population, every report, the lineage (:mod:`hyperpop.summary`)
        self.data = RunData(self.events)
        self.population = self.data.pop
        #: timing gathered by the driver (user code vs worker time), when this process ran it
        self.overhead: dict[str, float] = {}
        #: whether a live driver was writing the store when it was read (None: unknown)
        self.writer_alive: bool | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Read a run from its SQLite store (works while the run is going on)."""
        from hyperpop.store.events import gc_paused
        from hyperpop.store.sqlite import SQLiteStore

        store = SQLiteStore(path)
        try:
            with gc_paused():  # a long log folds in a third less time without collector passes
                result = cls(store.read(), path=path)
            result.writer_alive = store.writer_alive()
            return result
        finally:
            store.close()

    # --- summary -------------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """The settings the run was started with."""
        return self.population.settings

    @property
    def metric(self) -> str:
        """The optimised metric."""
        return self.population.settings.get("metric", "score")

    @property
    def mode(self) -> str:
        """``max`` or ``min``."""
        return self.population.mode

    @property
    def members(self) -> list[MemberResult]:
        """Every member, by id."""
        return [
            self._grouped(MemberResult.of(m))
            for m in sorted(self.population.members.values(), key=_id)
        ]

    def _grouped(self, m: MemberResult) -> MemberResult:
        """``m`` with its group (see :func:`hyperpop.summary.group_of`)."""
        m.group = group_of(self.population.settings, m.id)
        return m

    @property
    def best(self) -> MemberResult:
        """The best model of the run (:meth:`hyperpop.population.Population.best_model`, the
        best that ``hyperpop status``, the live view and the dashboard show): the weights with
        the best ranking score seen, as the member held them then (a checkpoint kept to the
        end, never collected) or holds them now; before any ready point, the member with the
        best last report. Its ``score`` is that ranking score."""
        pop = self.population
        b = pop.best_model()
        if b is None:
            raise ValueError("no member has reported a score yet")
        if b.seq is not None and b.checkpoint is not None:
            return self._grouped(MemberResult.of_checkpoint(pop, b.checkpoint))
        m = dataclasses.replace(MemberResult.of(pop.members[b.member]), score=b.score)
        return self._grouped(m)

    #: the best checkpoint's state, when the run kept no store (``storage=None``)
    best_state: Any = None

    def member(self, member: int | str) -> MemberResult:
        """One member by id, or ``"best"``."""
        if member == "best":
            return self.best
        try:
            return self._grouped(MemberResult.of(self.population.members[int(member)]))
        except (KeyError, ValueError):
            raise KeyError(f"no member {member!r} in this run") from None

    def summary(self) -> dict[str, Any]:
        """Status, counts and the best score so far (see :func:`hyperpop.summary.summary`)."""
        return summary(self.population, alive=self.writer_alive)

    # --- tables --------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """One row per report: member, step, time, score, every metric, and the config the
        member trained with (as ``config/<name>`` columns).

        A metric named like one of these columns (``step``, ``time``, ``score``, ``member``,
        ``config/...``) or starting with ``metric/`` is kept as ``metric/<name>``, so nothing
        the trainable reported is lost. The optimised metric, if it is named ``score``, is the
        ``score`` column itself."""
        return self.data.records()

    def table(self) -> Any:
        """:meth:`records` as a pandas DataFrame (needs pandas); with a strategy that splits the
        population, its ``group`` column colours or facets a plot by sub-population."""
        pd = _pandas()
        return pd.DataFrame(self.records())

    def lineage(self) -> list[dict[str, Any]]:
        """Who copied whom, and when: one row per exploit, with ``member``, ``donor``, ``step``
        (the donor's step copied), ``at`` (the receiver's step before copying), ``time``,
        ``seq``, ``kind`` (``"exploit"``) and ``by`` (``"pbt"`` or ``"user"``); with a strategy
        that splits the population, ``group`` and ``donor_group`` too (see
        :func:`hyperpop.summary.group_of`). Rejuvenations copy nobody: see
        :meth:`rejuvenations`."""
        rows = [e.to_dict() for e in self.population.edges if e.kind == "exploit"]
        settings = self.population.settings
        if has_groups(settings):
            for row in rows:
                row["group"] = group_of(settings, row["member"])
                row["donor_group"] = group_of(settings, row["donor"])
        return rows

    def rejuvenations(self) -> list[dict[str, Any]]:
        """Members whose weights were reset: one row each, with ``member``, ``step`` (where
        the member stood), ``at`` (the step of the ready point that decided it), ``reset``
        (``"full"`` or the partial reset's name), ``time`` and ``seq``."""
        keys = ("member", "step", "at", "reset", "time", "seq")
        return [
            {k: getattr(e, k) for k in keys}
            for e in self.population.edges
            if e.kind == "rejuvenate"
        ]

    def interventions(self) -> list[dict[str, Any]]:
        """What people did to the run through requests (pin, unpin, stop, set, copy, add,
        budget): one row each, with ``kind``, ``member``, ``what``, ``request``, ``time``."""
        return [dict(i) for i in self.population.interventions]

    def lineage_table(self) -> Any:
        """:meth:`lineage` as a pandas DataFrame."""
        return _pandas().DataFrame(self.lineage())

    def schedule(self, member: int | str = "best") -> list[dict[str, Any]]:
        """The hyperparameter schedule of a member's weights, inherited part included: the
        same entries as :attr:`MemberResult.schedule` (``step``, ``trained_by``, ``config``)."""
        return self.member(member).schedule

    def schedule_rows(self, member: int | str = "best") -> list[dict[str, Any]]:
        """:meth:`schedule` as flat rows, one column per hyperparameter (see
        :meth:`MemberResult.schedule_rows`)."""
        return self.member(member).schedule_rows()

    def ancestry(self, member: int | str = "best") -> list[int]:
        """The members whose training the member's weights carry, oldest first."""
        seen: list[int] = []
        for seg in self.member(member).schedule:
            if not seen or seen[-1] != seg["trained_by"]:
                seen.append(seg["trained_by"])
        return seen

    # --- checkpoints ---------------------------------------------------------------------
    def load_checkpoint(self, member: int | str = "best") -> Any:
        """The state (what ``save()`` returned) of a member's latest checkpoint, or of the
        run's best checkpoint for ``"best"``."""
        m = self.member(member)
        if member == "best" and self.best_state is not None:
            return self.best_state
        if self.path is None or m.checkpoint is None:
            raise ValueError(
                f"member {m.id} has no stored checkpoint (runs with storage=None "
                "keep none after they end)"
            )
        return CheckpointStore.for_store(self.path, create=False).load(m.checkpoint)

    def export(self, path: str | os.PathLike[str], member: int | str = "best") -> str:
        """Write a member's trained state (the run's best checkpoint by default) to ``path``:
        with ``torch.save`` when it holds PyTorch tensors (``torch.load(path,
        weights_only=True)`` opens it), else with pickle. Returns ``"torch"`` or ``"pickle"``.
        """
        state = self.load_checkpoint(member)
        if _holds_tensors(state):
            import torch

            torch.save(state, path)
            return "torch"
        import pickle

        with open(path, "wb") as f:
            pickle.dump(state, f)
        return "pickle"

    def __repr__(self) -> str:
        s = self.summary()
        score = fmt(s["best_score"], digits=6, missing="None")
        return (
            f"Result({s['members']} members, {s['reports']} reports, {s['exploits']} exploits, "
            f"best member {s['best_member']} with {self.metric}={score}, {s['status']})"
        )

    # --- plots (need hyperpop[dashboard]) -----------------------------------------------
    def plot_scores(self, metric: str | None = None, x: str = "step") -> Any:
        """A metric (the optimised one by default) over training steps (``x="step"``) or
        wall time (``x="time"``) for every member, exploits marked, the best member's lineage
        drawn thick; the y axis zoomed to where the scores are (a plotly Figure; double-click
        it for the full range)."""
        from hyperpop.dashboard.figures import plot_scores

        return plot_scores(self, metric=metric, x=x)

    def plot_schedule(self) -> Any:
        """Each hyperparameter over steps for every member, the best member's lineage
        highlighted (a plotly Figure)."""
        from hyperpop.dashboard.figures import plot_schedule

        return plot_schedule(self)

    def plot_lineage(self) -> Any:
        """The family tree: members over steps, exploit edges donor → receiver, coloured by
        score (a plotly Figure)."""
        from hyperpop.dashboard.figures import plot_lineage

        return plot_lineage(self)


def _id(m: MemberState) -> int:
    return m.id


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "Result.table() needs pandas: pip install 'hyperpop[pandas]' (or use .records())"
        ) from None
    return pd
