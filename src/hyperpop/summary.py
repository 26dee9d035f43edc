"""The read side: one fold of a run's events for everything that shows or reports a run.

:class:`RunData` folds the events once into a :class:`~hyperpop.population.Population` and keeps
what the fold itself has no use for: every report (all its metrics, the flat config it was
trained with, when it was made) and each member's lineage edges in log order, so the recorded
history of any weights can be followed back through every copy (:meth:`RunData.lineage_reports`).
:func:`summary` and :func:`member_rows` read the folded population. ``Result``, the live view,
the dashboard and the command line all read a run through this module; none walks the events.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from hyperpop.population import Edge, MemberState, Population
from hyperpop.space import flatten_config
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event

__all__ = [
    "GROUP_RULES",
    "ProgressView",
    "Report",
    "RunData",
    "RunState",
    "exploit_count",
    "fmt",
    "group_of",
    "groups",
    "has_groups",
    "json_safe",
    "member_rows",
    "num",
    "run_status",
    "summary",
]


@dataclass(frozen=True)
class RunState:
    """What the driver knows beyond the log.

    Attributes:
        running: members training on a worker now.
        queued: members waiting for a worker.
        elapsed: seconds the run has been active (across resumes).
        max_steps: the step budget per member, if there is one.
    """

    running: frozenset[int] = field(default_factory=frozenset)
    queued: frozenset[int] = field(default_factory=frozenset)
    elapsed: float = 0.0
    max_steps: int | None = None


class ProgressView(Protocol):
    """A progress display the driver keeps up to date (the views of :mod:`hyperpop.live`, or
    a caller's callable wrapped in one): shown the population and the run's state after a
    poll, told a line worth saying (``note``), and closed at the end of the session."""

    def __call__(self, pop: Population, state: RunState | None = None) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


#: how many of the latest interventions (what people did) a summary lists
RECENT_INTERVENTIONS = 20


# --- values ----------------------------------------------------------------------------------
def num(v: Any) -> Any:
    """A JSON-safe value: NaN and infinities become None, floats keep 7 significant digits."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return float(f"{v:.7g}")
    return v


def json_safe(obj: Any) -> Any:
    """``obj`` with every float made JSON-safe by :func:`num`, through dicts, lists and tuples
    (tuples become lists)."""
    if isinstance(obj, float):
        return num(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fmt(v: Any, *, digits: int = 4, missing: str = "-") -> str:
    """A value for people to read: floats to ``digits`` significant digits, ``nan`` and
    ``inf`` spelled out, ``missing`` for None."""
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a plottable number (an int or a float, not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- sub-populations -------------------------------------------------------------------------
#: a member's group (its sub-population or role) by exploit strategy name: ``rule(settings,
#: member)`` returns its label. Filled in by the strategies, which sit above the read side: an
#: ExploitStrategy that overrides ``group_label`` registers a rule that asks the strategy
#: rebuilt from the recorded settings. A strategy with no rule has no groups.
GROUP_RULES: dict[str, Callable[[Mapping[str, Any], int], str | None]] = {}


def group_of(settings: Mapping[str, Any], member: int) -> str | None:
    """Member ``member``'s group label under the exploit strategy recorded in ``settings``
    (``"mf 1/2 (every 1)"``, ``"greedy"``, ``"parent"``, ``"evaluator"``), or None for a
    strategy without groups."""
    exploit = settings.get("exploit")
    rule = GROUP_RULES.get(str(exploit.get("name"))) if isinstance(exploit, Mapping) else None
    return None if rule is None else rule(settings, member)


def has_groups(settings: Mapping[str, Any]) -> bool:
    """Whether the run's exploit strategy splits the population into groups."""
    exploit = settings.get("exploit")
    return isinstance(exploit, Mapping) and str(exploit.get("name")) in GROUP_RULES


def groups(pop: Population) -> dict[int, str]:
    """Each member's group label by id (empty for a strategy without groups)."""
    if not has_groups(pop.settings):
        return {}
    labels = {i: group_of(pop.settings, i) for i in sorted(pop.members)}
    return {i: g for i, g in labels.items() if g is not None}


# --- the population now ----------------------------------------------------------------------
def run_status(pop: Population, alive: bool | None) -> str:
    """``finished``, ``running``, ``interrupted`` or, when the driver runs on another host,
    ``running or interrupted`` (``alive``: whether a live driver writes the store; None:
    unknown)."""
    if pop.finished:
        return "finished"
    if alive is None:
        return "running or interrupted"
    return "running" if alive else "interrupted"


def exploit_count(pop: Population) -> int:
    """Copies from a donor (rejuvenations are edges of the fold too, but not exploits)."""
    return sum(1 for e in pop.edges if e.kind == "exploit")


def summary(
    pop: Population, *, alive: bool | None = None, now: float | None = None
) -> dict[str, Any]:
    """Status, elapsed time, counts and the best score so far.

    Args:
        pop: the folded population.
        alive: whether a live driver writes the store (None: unknown), see :func:`run_status`.
        now: for a running run, count the elapsed time up to this time (None: up to the
            last event).

    Returns:
        A dict with ``status``, ``reason``, ``metric``, ``mode``, ``members``, ``statuses``
        (members by status, as words: ``running``, ``finished``, ``failed``, and
        ``interrupted`` for members of an interrupted run not yet finished), ``reports``,
        ``exploits``, ``rejuvenations``, ``failures``,
        ``resumes``, ``elapsed`` (seconds), ``best_member``, ``best_score`` (the run's best model
        and its score: see :meth:`~hyperpop.population.Population.best_model`),
        ``max_step``, ``seq`` (the last event read), ``version``, ``unrecorded_reports``
        (reports of intervals still running), ``pinned`` (member ids) and ``interventions``
        (the latest :data:`RECENT_INTERVENTIONS` things people did, oldest first), and
        ``groups``: members per group (see :func:`group_of`) in order of their first member,
        empty for a strategy without groups.
    """
    status = run_status(pop, alive)
    best = pop.best_model()
    per_group: dict[str, int] = {}
    for label in groups(pop).values():
        per_group[label] = per_group.get(label, 0) + 1
    statuses: dict[str, int] = {}
    for m in pop.members.values():
        # plain words; with no driver, a member that was training is interrupted
        word = str(m.status)
        if word == "running" and status == "interrupted":
            word = "interrupted"
        statuses[word] = statuses.get(word, 0) + 1
    elapsed = 0.0
    if pop.started is not None:
        elapsed = (pop.ended or pop.last_time) - pop.started
        if status == "running" and now is not None:
            elapsed += max(0.0, now - pop.last_time)
    return {
        "status": status,
        "reason": pop.finish_reason or pop.stopped,
        "metric": pop.metric or "score",
        "mode": pop.mode,
        "members": len(pop.members),
        "statuses": statuses,
        "reports": pop.reports,
        "exploits": exploit_count(pop),
        "rejuvenations": sum(m.rejuvenations for m in pop.members.values()),
        "failures": pop.failures,
        "resumes": pop.resumes,
        "elapsed": elapsed,
        "best_member": best.member if best else None,
        "best_score": best.score if best else None,
        "max_step": max((m.step for m in pop.members.values()), default=0),
        "seq": pop.last_seq,
        "version": pop.version,
        "unrecorded_reports": sum(
            max(0, m.progress_step - m.step)
            for m in pop.members.values()
            if m.progress_step is not None and m.alive
        ),
        "pinned": sorted(m.id for m in pop.members.values() if m.pinned),
        "interventions": [dict(i) for i in pop.interventions[-RECENT_INTERVENTIONS:]],
        "groups": per_group,
    }


def _best_first(pop: Population) -> Callable[[MemberState], tuple[int, float, int]]:
    """A sort key: the best last report first (None and NaN last), then by id."""
    ranking = pop.ranking

    def key(m: MemberState) -> tuple[int, float, int]:
        return (*ranking.key(m.last_score), m.id)

    return key


def _last_line(error: str | None) -> str | None:
    lines = (error or "").strip().splitlines()
    return lines[-1][:200] if lines else None


def member_rows(
    pop: Population, *, best_first: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    """One row per member, by id (or best first), at most ``limit``.

    Each row has ``member``, ``status``, ``step``, ``score`` (its last report), ``config``
    (flat, ``a/b`` keys), ``parent``, ``exploits``, ``rejuvenations``, ``last_edge`` (its last
    exploit as ``(donor, step)``, or ``(None, step)`` for a rejuvenation; None), ``pinned``,
    ``live_step`` (the step of an interval still running), ``failures`` and ``error`` (the last
    line of its last error) and ``group`` (its sub-population or role, see :func:`group_of`;
    None for a strategy without groups).
    """
    settings = pop.settings
    last_edge = {e.member: (e.donor, e.step) for e in pop.edges}  # later edges win
    order = sorted(pop.members.values(), key=_best_first(pop)) if best_first else None
    members = order if order is not None else [pop.members[i] for i in sorted(pop.members)]
    return [
        {
            "member": m.id,
            "status": m.status,
            "step": m.step,
            "score": m.last_score,
            "config": flatten_config(m.config),
            "parent": m.parent,
            "exploits": m.exploits,
            "rejuvenations": m.rejuvenations,
            "last_edge": last_edge.get(m.id),
            "pinned": m.pinned,
            "live_step": m.progress_step if m.alive else None,
            "failures": m.failures,
            "error": _last_line(m.last_error),
            "group": group_of(settings, m.id),
        }
        for m in members[:limit]
    ]


# --- every report ----------------------------------------------------------------------------
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

    def _reports_in(self, level: _Level) -> list[Report]:
        mine = self._mine.get(level.member, [])
        lo = bisect.bisect_right(mine, level.low, key=_pos)
        hi = bisect.bisect_left(mine, level.bound, key=_pos)
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
                mine = self._mine.get(level.member, [])
                lo = bisect.bisect_right(mine, level.low, key=_pos)
                hi = bisect.bisect_left(mine, level.bound, key=_pos)
                for i in range(hi - 1, lo - 1, -1):  # the latest first: copies take those
                    if mine[i].step == step:
                        return mine[i]
                return None
        return None


def _pos(r: Report) -> int:
    return r.pos
