"""Every report of a run, folded once with the population: :class:`RunData` keeps each report
(its metrics, flat config and time) and each member's lineage edges, so the recorded report of
any step of any weights is found through every copy."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from hyperpop.population import Edge, Population
from hyperpop.space import flatten_config
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event
from hyperpop.summary.groups import groups, has_groups
from hyperpop.summary.values import is_number

__all__ = ["Report", "RunData", "metric_column"]


@dataclass(slots=True, eq=False)
class Report:
    """One recorded report.

    Attributes:
        pos: its place in the log (the event's ``seq``).
        member: the member that made it.
        step: the training step of the weights it scores.
        time: when it was recorded (the end of its interval).
        score: the optimised metric as recorded (None where it was missing).
        metrics: everything the trainable reported.
        config: the member's hyperparameters while it trained this step (flat, ``a/b`` keys).
        wall: when the step itself ended: the interval's reports spread evenly between the
            member's previous event and ``time`` (they are recorded together at its end).
    """

    pos: int
    member: int
    step: int
    time: float
    score: float | None
    metrics: dict[str, Any]
    config: dict[str, Any]
    wall: float


@dataclass(frozen=True, slots=True)
class _Level:
    """A stretch of a lineage one member trained: its reports at ``low < pos < bound`` for the
    steps in ``(after, upto]``."""

    member: int
    low: float
    bound: float
    after: float
    upto: float


#: columns of :meth:`RunData.records` that hyperpop fills itself
_OWN_COLUMNS = frozenset({"member", "group", "step", "time", "score"})


def metric_column(name: str) -> str:
    """The column of a user's metric in :meth:`RunData.records`: its own name unless it clashes
    with hyperpop's columns (or looks prefixed), then ``metric/<name>``."""
    if name in _OWN_COLUMNS or name.startswith(("config/", "metric/")):
        return f"metric/{name}"
    return name


class RunData:
    """A run's events folded once: the population, every report, and the lineage edges.

    Feed it the events in log order (:meth:`update`, any number of times: a live store's new
    events as they arrive).

    Attributes:
        pop: the folded population.
        reports: every report, in log order.
    """

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.pop = Population()
        self.reports: list[Report] = []
        self._metrics: dict[str, None] = {}  # numeric metric names, in first-seen order
        self._mine: dict[int, list[Report]] = {}  # each member's reports, in log order
        self._edges: dict[int, list[Edge]] = {}
        self._edge_pos: dict[int, list[int]] = {}
        self._flat: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self._since: dict[int, float] = {}  # each member's last event other than a report
        self._open: dict[int, int] = {}  # where its reports since then start in _mine
        self._session = 0.0  # when the current session started
        self._pos = 0
        self.update(events)

    @property
    def seq(self) -> int:
        """The last event folded."""
        return self.pop.last_seq

    def update(self, events: Iterable[Event]) -> int:
        """Fold new events (in log order); returns how many were applied.

        Raises:
            ValueError: the log is inconsistent (an event names an unknown member...).
        """
        n = 0
        for e in events:
            self.apply(e)
            n += 1
        return n

    def apply(self, e: Event) -> None:
        """Fold one event."""
        self.pop.apply(e)
        self._pos = e.seq if e.seq is not None else self._pos + 1
        p, mid = e.payload, e.member
        if isinstance(p, voc.Reported):
            self._report(e, p)
        elif mid is not None and not isinstance(p, voc.Progress):
            self._close(mid)
            if not isinstance(p, voc.Pinned):  # its next interval's reports are timed from here
                self._since[mid] = e.time
            if isinstance(p, (voc.Exploited, voc.Rejuvenated)):
                self._edges.setdefault(mid, []).append(self.pop.edges[-1])
                self._edge_pos.setdefault(mid, []).append(self._pos)
        elif isinstance(p, (voc.RunStarted, voc.RunResumed)):
            self._session = e.time

    def _report(self, e: Event, p: voc.Reported) -> None:
        m = self.pop.members[e.member]  # type: ignore[index]
        flat = self._flat.get(m.id)
        if flat is None or flat[0] is not m.config:
            flat = self._flat[m.id] = (m.config, flatten_config(m.config))
        metrics = p.metrics or {}
        if not self._metrics.keys() >= metrics.keys():
            for name, value in metrics.items():
                if name not in self._metrics and is_number(value):
                    self._metrics[name] = None
        r = Report(self._pos, m.id, p.step, e.time, p.score, metrics, flat[1], e.time)
        self.reports.append(r)
        mine = self._mine.get(m.id)
        if mine is None:
            mine = self._mine[m.id] = []
        mine.append(r)

    def _close(self, member: int) -> None:
        """The member's reports since its last other event are complete: spread their steps
        over the time they took (each group recorded together ends at its record time)."""
        mine = self._mine.get(member, [])
        first = self._open.get(member, 0)
        self._open[member] = len(mine)
        if first == len(mine):
            return
        start = max(self._since.get(member, self._session), self._session)
        group: list[Report] = []
        for r in [*mine[first:], None]:
            if group and (r is None or r.time != group[0].time):
                end = group[0].time
                for i, g in enumerate(group, 1):
                    g.wall = start + (end - start) * i / len(group)
                start, group = end, []
            if r is not None:
                group.append(r)

    # --- reading -------------------------------------------------------------------------
    def metric_names(self) -> list[str]:
        """The metrics one can plot: the optimised one first, then every numeric metric the
        trainable reported, in the order they first appeared."""
        first = self.pop.metric or "score"
        return [first, *(n for n in self._metrics if n != first)]

    def records(self) -> list[dict[str, Any]]:
        """One row per report: ``member``, ``step``, ``time``, ``score``, every metric (see
        :func:`metric_column`) and the config as ``config/<name>`` columns (the optimised
        metric, if it is named ``score``, is the ``score`` column itself); with an exploit
        strategy that splits the population, a ``group`` column after ``member`` (see
        :func:`group_of`)."""
        metric = self.pop.metric or "score"
        labels = groups(self.pop) if has_groups(self.pop.settings) else None
        rows = []
        for r in self.reports:
            row: dict[str, Any] = {"member": r.member}
            if labels is not None:
                row["group"] = labels.get(r.member)
            row.update(step=r.step, time=r.time, score=r.score)
            for k, v in r.metrics.items():
                if k == "score" and k == metric:
                    continue  # the same value as hyperpop's score
                row[metric_column(k)] = v
            row.update({f"config/{k}": v for k, v in r.config.items()})
            rows.append(row)
        return rows

    def _levels(self, member: int, until: float) -> Iterator[_Level]:
        """The lineage of the weights ``member`` held before log position ``until``, newest
        stretch first: the steps after its last copy it trained itself, the ones before were
        trained by the donor (as the donor's weights were then), and so on back."""
        owner, bound, upto = member, until, math.inf
        while True:
            i = bisect.bisect_left(self._edge_pos.get(owner, []), bound)
            last = self._edges[owner][i - 1] if i else None
            low = self._edge_pos[owner][i - 1] if i else -math.inf
            if last is None or last.kind != "exploit" or last.donor is None:
                yield _Level(owner, low, bound, -math.inf, upto)
                return
            yield _Level(owner, low, bound, last.step, upto)
            owner, bound, upto = last.donor, low, min(upto, last.step)

    def _span(self, level: _Level) -> tuple[list[Report], int, int]:
        """``level``'s member's reports, and where those between its log positions start and
        end (any step)."""
        mine = self._mine.get(level.member, [])
        lo = bisect.bisect_right(mine, level.low, key=_pos)
        return mine, lo, bisect.bisect_left(mine, level.bound, key=_pos)

    def _reports_in(self, level: _Level) -> list[Report]:
        mine, lo, hi = self._span(level)
        return [r for r in mine[lo:hi] if level.after < r.step <= level.upto]

    def lineage_reports(self, member: int, until: float = math.inf) -> dict[int, Report]:
        """The recorded report of each step of the weights ``member`` holds (or held before log
        position ``until``), following every copy back to the donor that trained the step;
        by step. Steps the log holds no report for (before a rejuvenation) are absent."""
        out: dict[int, Report] = {}
        for level in self._levels(member, until):
            for r in self._reports_in(level):
                out[r.step] = r  # a step trained twice: the later report
        return dict(sorted(out.items()))

    def recorded(self, member: int, step: int, until: float = math.inf) -> Report | None:
        """The recorded report at ``step`` of the weights ``member`` holds (or held before log
        position ``until``), or None (see :meth:`lineage_reports`)."""
        for level in self._levels(member, until):
            if level.after < step <= level.upto:
                mine, lo, hi = self._span(level)
                latest_first = (mine[i] for i in range(hi - 1, lo - 1, -1))  # copies take those
                return next((r for r in latest_first if r.step == step), None)
        return None


def _pos(r: Report) -> int:
    return r.pos
