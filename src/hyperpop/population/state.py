"""The population: the fold's state, how an event is applied, and what the views ask of it
(the live members, the best model, the checkpoints still referenced)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from hyperpop.population.fold import _DISPATCH
from hyperpop.population.members import (
    Best,
    BlobInfo,
    Edge,
    MemberState,
    MemberStatus,
    ReadyIndex,
    TrainedInterval,
)
from hyperpop.ranking import Ranking
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event, gc_paused

__all__ = ["RESULT_RULES", "Population"]


#: which members' models may be the run's result, by exploit strategy name: ``rule(settings,
#: member)`` is False for a member whose models never are (FIRE-PBT's evaluators and parent
#: sub-populations: the paper's result comes from its greedy sub-population). Filled in by the
#: strategies, which sit above the fold; a strategy with no rule: every member.
RESULT_RULES: dict[str, Callable[[dict[str, Any], int], bool]] = {}


def _ranking_score(m: MemberState) -> float | None:
    """What a member is ranked by: its ready score, or its last report before any ready
    point."""
    return m.ready_score if m.ready_score is not None else m.last_score


class Population:
    """Fold of a run's events: settings, members, lineage edges and counters."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.space: dict[str, Any] = {}
        self.trainable: dict[str, Any] = {}
        self.version: str | None = None
        #: the run's unique id (from its ``run_started`` event; None in logs from before ids)
        self.run_id: str | None = None
        self.members: dict[int, MemberState] = {}
        #: the family tree: one :class:`Edge` per exploit and per rejuvenation, in log order
        self.edges: list[Edge] = []
        self.started: float | None = None
        self.ended: float | None = None
        self.finished = False
        self.finish_reason: str | None = None
        self.resumes = 0
        self.reports = 0
        self.failures = 0
        self.last_seq = 0
        self.last_time = 0.0
        #: seconds the run was active in earlier sessions (before the latest resume)
        self.active_seconds_before = 0.0
        self._session_start = 0.0
        #: live checkpoints: what each holds, and how many members point at it
        self.blobs: dict[str, BlobInfo] = {}
        self._refs: dict[str, int] = {}
        self._dead: set[str] = set()
        #: columnar ready state for fast candidate selection
        self.index = ReadyIndex()
        #: every interval trained, in log order: what strategies such as PB2 learn from (an
        #: interval trained before a member copied another stays here)
        self.intervals: list[TrainedInterval] = []
        #: the checkpoint with the best ranking score seen in the run (never collected)
        self.best_checkpoint: str | None = None
        self.best_score: float | None = None
        #: answers to requests (hyperpop.store.requests), by request id
        self.handled: dict[int, dict[str, Any]] = {}
        #: the highest request id answered
        self.last_request = 0
        #: what people did to the run (pin, stop, set, copy, add, budget), in log order
        self.interventions: list[dict[str, Any]] = []
        #: why the run was stopped on request (None: not stopped, or resumed since)
        self.stopped: str | None = None

    def _ref(self, blob: str | None) -> None:
        if blob:
            self._refs[blob] = self._refs.get(blob, 0) + 1
            self._dead.discard(blob)

    def _unref(self, blob: str | None) -> None:
        if not blob:
            return
        n = self._refs.get(blob, 0) - 1
        if n <= 0:
            self._refs.pop(blob, None)
            self._dead.add(blob)  # kept until drained: a later event of the batch may revive it
        else:
            self._refs[blob] = n

    def drain_dead(self) -> list[str]:
        """Checkpoints no member points at any more; forgets them (the caller deletes them)."""
        dead = sorted(b for b in self._dead if b not in self._refs)
        for b in dead:
            self.blobs.pop(b, None)
        self._dead.clear()
        return dead

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``."""
        return str(self.settings.get("mode", "max"))

    @property
    def ranking(self) -> Ranking:
        """Which scores are better, by the run's :attr:`mode`."""
        return Ranking.of(self.mode)

    @property
    def metric(self) -> str | None:
        """The metric being optimised."""
        return self.settings.get("metric")

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Population:
        """Fold a sequence of events."""
        pop = cls()
        pop.extend(events)
        return pop

    def extend(self, events: Iterable[Event]) -> None:
        """Apply events in order (with the garbage collector paused: see
        :func:`~hyperpop.store.events.gc_paused`)."""
        apply = self.apply
        with gc_paused():
            for e in events:
                apply(e)

    def alive(self) -> list[MemberState]:
        """Members still training."""
        return [m for m in self.members.values() if m.alive]

    @property
    def score_window(self) -> int:
        """Reports averaged into a ranking score (1: the last report alone)."""
        return int(self.settings.get("score_window") or 1)

    def best_model(self) -> Best | None:
        """The run's best model: what :attr:`hyperpop.Result.best`, ``hyperpop status``, the live
        views and the dashboard all show as "best" (None before any report).

        It is the weights with the best ranking score at a ready point (the mean of the
        lineage's last ``score_window`` reports; NaN never wins) among the members whose models
        may be the run's result (:meth:`in_result`), the run's best so far: a member now, by its
        latest ready score, unless a checkpoint the run keeps (:attr:`best_checkpoint`, never
        collected) scored better, then that checkpoint as the member that saved it was then.
        Before any ready point, the member with the best last report. Its score is the one it
        is ranked by.
        """
        m = self.ranking.best_of(
            (m for m in self.members.values() if self.in_result(m.id)), _ranking_score
        )
        if m is None:
            return None
        blob = self.best_checkpoint
        info = self.blobs.get(blob) if blob is not None else None
        if (
            blob is None
            or info is None
            or blob == m.checkpoint
            or self.ranking.at_least(m.ready_score, self.best_score)
        ):
            return Best(m.id, _ranking_score(m), m.step, m.checkpoint, None)
        return Best(info.member, info.score, info.step, blob, info.seq)

    def best(self) -> MemberState | None:
        """The member that holds or saved the run's best model (see :meth:`best_model`)."""
        b = self.best_model()
        return None if b is None else self.members[b.member]

    def in_result(self, member: int) -> bool:
        """Whether member ``member``'s models may be the run's best (see
        :data:`RESULT_RULES`)."""
        exploit = self.settings.get("exploit")
        rule = RESULT_RULES.get(str(exploit.get("name"))) if isinstance(exploit, dict) else None
        return rule is None or rule(self.settings, member)

    def given_up(self) -> list[int]:
        """Members that failed for good (retried ``max_failures`` times, or an error a retry
        cannot fix), by id."""
        return sorted(m.id for m in self.members.values() if m.status == MemberStatus.FAILED)

    def live_checkpoints(self) -> set[str]:
        """Blob ids some member still points at (never collect these)."""
        return set(self._refs)

    def apply(self, e: Event) -> None:
        """Apply one event: the time and sequence bookkeeping, then the handler of its kind
        (:data:`_HANDLERS`); member events are checked to name a known member."""
        self.last_seq = e.seq or self.last_seq
        previous_time = self.last_time
        if e.time > previous_time:
            self.last_time = e.time
        p = e.payload
        handler, about_member, indexed = _DISPATCH[type(p)]
        if about_member:
            m = self.members.get(e.member) if e.member is not None else None
            if m is None:
                raise ValueError(f"event {e.seq} ({e.kind}) names unknown member {e.member}")
            handler(self, e, p, m)
            if indexed:
                self.index.update(m)
        else:
            if type(p) is voc.RunResumed:
                # time between the last event of a session and the resume is downtime
                self.active_seconds_before += max(0.0, previous_time - self._session_start)
            handler(self, e, p, None)
