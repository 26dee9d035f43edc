"""The population now: the run's status, its counts and best model (:func:`summary`), one row
per member (:func:`member_rows`), and what a progress display is handed (:class:`RunState`,
:class:`ProgressView`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hyperpop.population import MemberState, Population
from hyperpop.space import flatten_config
from hyperpop.summary.groups import group_of, groups

__all__ = [
    "RECENT_INTERVENTIONS",
    "ProgressView",
    "RunState",
    "exploit_count",
    "member_rows",
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
        workers: members that can train at once now (Ray's actors started); None: not known.
    """

    running: frozenset[int] = field(default_factory=frozenset)
    queued: frozenset[int] = field(default_factory=frozenset)
    elapsed: float = 0.0
    max_steps: int | None = None
    workers: int | None = None


class ProgressView(Protocol):
    """A progress display the driver keeps up to date (the views of :mod:`hyperpop.live`, or
    a caller's callable wrapped in one): shown the population and the run's state after a
    poll, told a line worth saying (``note``), and closed at the end of the session."""

    def __call__(self, pop: Population, state: RunState | None = None) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


#: how many of the latest interventions (what people did) a summary lists
RECENT_INTERVENTIONS = 20


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
