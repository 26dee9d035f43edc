"""The population's state as a fold over the event log.

:class:`Population` is what the controller decides over, what resume rebuilds, and what results,
the live view and the dashboard read. It is only ever changed by :meth:`Population.apply`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from hyperpop.ranking import Ranking
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event, gc_paused

__all__ = [
    "RESULT_RULES",
    "Best",
    "BlobInfo",
    "Edge",
    "EdgeKind",
    "MemberStatus",
    "MemberState",
    "Population",
    "ReadyIndex",
    "Segment",
    "TrainedInterval",
]


class MemberStatus(str, Enum):
    """Where a member stands (compares equal to its string value)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class EdgeKind(str, Enum):
    """What an edge of the family tree records (compares equal to its string value)."""

    EXPLOIT = "exploit"  # the member copied the donor's weights and hyperparameters
    REJUVENATE = "rejuvenate"  # the member's weights were reset (no donor)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Edge:
    """One edge of the family tree: ``member`` copied ``donor``'s checkpoint of ``step``
    (an exploit), or had its weights reset at ``step`` (a rejuvenation, ``donor`` None).

    ``at`` is the step of the ready point that decided it; ``by`` is ``"pbt"`` or ``"user"``
    (a steering request); ``reset`` is how a rejuvenation reset the weights.
    """

    member: int
    donor: int | None
    step: int
    at: int | None
    time: float
    seq: int | None
    kind: EdgeKind
    by: str = "pbt"
    reset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain row (for tables and JSON): the kind as a string, no ``reset`` on an
        exploit."""
        row = asdict(self)
        row["kind"] = self.kind.value
        if self.kind is EdgeKind.EXPLOIT:
            del row["reset"]
        return row


@dataclass(frozen=True)
class Segment:
    """A stretch of a model's training: from ``step`` on it trained with ``config``.

    ``member`` is the member that did the training (a donor, for inherited segments); ``by`` is
    ``"user"`` when a person set these hyperparameters (a steering request), else None;
    ``reset`` says how the weights were reset at ``step`` (rejuvenation: ``"full"`` for fresh
    weights, or the name of a partial reset), else None.
    """

    step: int
    config: dict[str, Any]
    member: int
    by: str | None = None
    reset: str | None = None


@dataclass(frozen=True)
class BlobInfo:
    """What the log knows of a checkpoint: who wrote it, at which step, and the schedule and
    recent ready scores of the weights inside it."""

    member: int
    step: int
    schedule: tuple[Segment, ...]
    ready_scores: tuple[float, ...]
    #: the steps of ``ready_scores`` (the lineage's ready points)
    ready_steps: tuple[int, ...] = ()
    #: the lineage's last reports (as many as the run's ``score_window``)
    recent: tuple[float, ...] = ()
    #: the ranking score of these weights when saved, and the event that recorded them
    score: float | None = None
    seq: int | None = None

    @property
    def config(self) -> dict[str, Any]:
        """The config the weights were last trained with."""
        return self.schedule[-1].config


@dataclass(frozen=True)
class Best:
    """The run's best model (see :meth:`Population.best_model`).

    Attributes:
        member: the member that holds the weights, or saved them.
        score: their ranking score (the last report before any ready point).
        step: their training steps.
        checkpoint: the checkpoint holding them (None before the first).
        seq: None when they are the member's weights now; else the event that recorded the
            checkpoint of an earlier state of the member.
    """

    member: int
    score: float | None
    step: int
    checkpoint: str | None
    seq: int | None


@dataclass(frozen=True)
class TrainedInterval:
    """One interval a member trained, from ready point to ready point, with one config.

    ``key`` identifies it (member, its copies and resets so far, ``start``); ``score_start``
    is the ranking score of the weights at ``start`` (None for fresh weights), ``score_end``
    at ``end``.
    """

    key: tuple[int, int, int, int]
    start: int
    end: int
    config: dict[str, Any]
    score_start: float | None
    score_end: float | None


@dataclass
class MemberState:
    """One member of the population, as the log says it is now."""

    id: int
    config: dict[str, Any]
    #: training steps of the weights the member holds (its model's age)
    step: int = 0
    status: MemberStatus = MemberStatus.RUNNING
    checkpoint: str | None = None
    checkpoint_step: int = 0
    #: the member's own reports: (step, score), in order
    history: list[tuple[int, float]] = field(default_factory=list)
    last_score: float | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    #: ranking score at the last ready point: the last report, or the mean of the lineage's
    #: last ``score_window`` reports
    ready_score: float | None = None
    #: recent ready scores of the weights the member holds (newest last, inherited part
    #: included), for selection tests such as Welch's t-test and comparisons at equal progress
    ready_scores: list[float] = field(default_factory=list)
    #: the steps at which ``ready_scores`` were taken
    ready_steps: list[int] = field(default_factory=list)
    #: the lineage's last reports (for the smoothed ranking score)
    recent: list[float] = field(default_factory=list)
    ready_count: int = 0
    best_score: float | None = None
    #: ready points since ``best_score`` last improved
    stall: int = 0
    failures: int = 0
    last_error: str | None = None
    parent: int | None = None
    exploits: int = 0
    rejuvenations: int = 0
    #: step of the member's last rejuvenation (None: never reset), ready points since, and a
    #: partial reset its next interval must apply (the worker calls ``reset(how)``)
    reset_step: int | None = None
    ready_since_reset: int = 0
    pending_reset: str | None = None
    #: whether the member's last ready point has been decided (an exploit, explore or
    #: rejuvenation recorded since; a "continue" records nothing, so after a resume it is
    #: decided again)
    decided: bool = True
    #: the hyperparameter schedule of the weights the member holds, inherited part included
    schedule: list[Segment] = field(default_factory=list)
    created: float = 0.0
    #: pinned by a person: never copies another member, never reset, never explored (it may
    #: still be a donor); only a person changes it
    pinned: bool = False
    #: why it finished (``finished`` members)
    finish_reason: str | None = None
    #: steps trained so far in an interval still running (reports not recorded yet), or None
    progress_step: int | None = None
    #: added to a running population by a person
    added: bool = False

    @property
    def alive(self) -> bool:
        """Still training (neither finished nor failed for good)."""
        return self.status == "running"

    def score_at(self, step: int) -> float | None:
        """The ranking score of the member's weights at their last ready point at or before
        ``step`` (along the lineage, inherited part included), or None if none is known."""
        i = bisect.bisect_right(self.ready_steps, step)
        return self.ready_scores[i - 1] if i else None


#: how many ready scores each member keeps for selection statistics
READY_WINDOW = 32

#: which members' models may be the run's result, by exploit strategy name: ``rule(settings,
#: member)`` is False for a member whose models never are (FIRE-PBT's evaluators and parent
#: sub-populations: the paper's result comes from its greedy sub-population). Filled in by the
#: strategies, which sit above the fold; a strategy with no rule: every member.
RESULT_RULES: dict[str, Callable[[dict[str, Any], int], bool]] = {}


def _ranking_score(m: MemberState) -> float | None:
    """What a member is ranked by: its ready score, or its last report before any ready
    point."""
    return m.ready_score if m.ready_score is not None else m.last_score


def _mean(values: list[float]) -> float:
    # NaN in, NaN out: a diverged report is not hidden
    try:
        return math.fsum(values) / len(values)
    except (ValueError, OverflowError):  # +inf with -inf (NaN), or a sum beyond the floats
        return sum(v / len(values) for v in values)


class ReadyIndex:
    """A columnar copy of every member's ready state, kept up to date by the fold.

    Lets the controller pick donor candidates among 10,000 members with numpy instead of a
    Python loop. ``score`` is the ready score (NaN when there is none), ``step`` the member's
    step, ``ok`` whether it may serve as a donor (a ready score, a checkpoint, not failed), and
    ``hist_step`` / ``hist_score`` the lineage's last :attr:`HISTORY` ready points (oldest
    first, step -1 where there is none), for comparisons at equal progress.
    """

    #: ready points of each lineage kept in the columns
    HISTORY = 8

    def __init__(self) -> None:
        self.n = 0
        self._pos: dict[int, int] = {}
        self._ids = np.zeros(16, dtype=np.int64)
        self._score = np.full(16, np.nan)
        self._step = np.zeros(16, dtype=np.int64)
        self._ok = np.zeros(16, dtype=bool)
        self._hist_step = np.full((16, self.HISTORY), -1, dtype=np.int64)
        self._hist_score = np.full((16, self.HISTORY), np.nan)

    def update(self, m: MemberState) -> None:
        """Copy member ``m``'s ready state into the columns."""
        i = self._pos.get(m.id)
        if i is None:
            i = self._pos[m.id] = self.n
            self.n += 1
            if self.n > len(self._ids):
                grow = len(self._ids)
                self._ids = np.concatenate([self._ids, np.zeros(grow, dtype=np.int64)])
                self._score = np.concatenate([self._score, np.full(grow, np.nan)])
                self._step = np.concatenate([self._step, np.zeros(grow, dtype=np.int64)])
                self._ok = np.concatenate([self._ok, np.zeros(grow, dtype=bool)])
                self._hist_step = np.concatenate(
                    [self._hist_step, np.full((grow, self.HISTORY), -1, dtype=np.int64)]
                )
                self._hist_score = np.concatenate(
                    [self._hist_score, np.full((grow, self.HISTORY), np.nan)]
                )
            self._ids[i] = m.id
        s = m.ready_score
        self._score[i] = np.nan if s is None else s
        self._step[i] = m.step
        self._ok[i] = s is not None and m.checkpoint is not None and m.status != "failed"
        h = self.HISTORY
        k = min(len(m.ready_steps), h)
        if k < h:  # a short history: the rest of the row says "none"
            self._hist_step[i] = -1
            self._hist_score[i] = np.nan
        if k:
            self._hist_step[i, h - k :] = m.ready_steps[-k:]
            self._hist_score[i, h - k :] = m.ready_scores[-k:]

    @property
    def ids(self) -> np.ndarray:
        """Member ids, one per row."""
        return self._ids[: self.n]

    @property
    def score(self) -> np.ndarray:
        """Ready scores (NaN: none yet)."""
        return self._score[: self.n]

    @property
    def step(self) -> np.ndarray:
        """Steps of the weights each member holds."""
        return self._step[: self.n]

    @property
    def ok(self) -> np.ndarray:
        """Whether each member may serve as a donor."""
        return self._ok[: self.n]

    @property
    def hist_step(self) -> np.ndarray:
        """Steps of each lineage's last ready points, one row per member (-1: none)."""
        return self._hist_step[: self.n]

    @property
    def hist_score(self) -> np.ndarray:
        """Ready scores at ``hist_step`` (NaN: none)."""
        return self._hist_score[: self.n]


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
        return self.settings.get("mode", "max")

    @property
    def ranking(self) -> Ranking:
        """Which scores are better, by the run's :attr:`mode`."""
        return Ranking.of(self.settings.get("mode", "max"))

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

    # --- run-level events ------------------------------------------------------------------
    def _run_started(self, e: Event, p: voc.RunStarted, _: None) -> None:
        self.settings = dict(p.settings)
        self.space = dict(p.space)
        self.trainable = dict(p.trainable or {})
        self.version = p.version
        self.run_id = p.run_id
        self.started = e.time
        self._session_start = e.time

    def _run_resumed(self, e: Event, p: voc.RunResumed, _: None) -> None:
        self.resumes += 1
        self._session_start = e.time
        self.finished = False
        self.ended = None
        self.stopped = None
        # members given up in an earlier session get another round of retries
        for member in p.retry:
            m = self.members[member]
            if m.status != MemberStatus.FAILED:
                continue
            m.status = MemberStatus.RUNNING
            m.progress_step = None
            self.index.update(m)

    def _member_created(self, e: Event, p: voc.MemberCreated, _: None) -> None:
        cfg, by = p.config, p.by
        member = int(e.member)  # type: ignore[arg-type]  # member events name a member
        self.members[member] = MemberState(
            id=member,
            config=cfg,
            schedule=[Segment(0, cfg, member, by)],
            created=e.time,
            added=by == "user",
        )
        self.index.update(self.members[member])
        if by == "user":
            self._intervene(e, p.request, "add", f"member {member} added")

    def _request_handled(self, e: Event, p: voc.RequestHandled, _: None) -> None:
        self.handled[p.id] = dict(e.data)  # the stored answer, as it was written
        self.last_request = max(self.last_request, p.id)

    def _run_finished(self, e: Event, p: voc.RunFinished, _: None) -> None:
        self.finished = True
        self.finish_reason = p.reason
        self.ended = e.time

    def _run_stopped(self, e: Event, p: voc.RunStopped, _: None) -> None:
        self.stopped = p.reason or voc.STOPPED_ON_REQUEST
        self.ended = e.time
        self._intervene(e, p.request, "stop", self.stopped)

    # --- member events ---------------------------------------------------------------------
    def _reported(self, e: Event, p: voc.Reported, m: MemberState) -> None:
        score = float(p.score) if p.score is not None else math.nan
        m.step = p.step
        m.history.append((m.step, score))
        m.last_score = score
        m.last_metrics = p.metrics
        recent = m.recent
        recent.append(score)
        window = self.score_window
        if len(recent) > window:
            del recent[:-window]
        self.reports += 1

    def _progress(self, e: Event, p: voc.Progress, m: MemberState) -> None:
        m.progress_step = p.step

    def _pinned(self, e: Event, p: voc.Pinned, m: MemberState) -> None:
        m.pinned = p.pinned
        self._intervene(e, p.request, "pin" if m.pinned else "unpin", f"member {m.id}")

    def _checkpointed(self, e: Event, p: voc.Checkpointed, m: MemberState) -> None:
        old = m.checkpoint
        start = m.checkpoint_step
        steps = m.ready_steps
        start_score = m.ready_scores[-1] if steps and steps[-1] == start else None
        m.checkpoint = p.checkpoint
        self._ref(m.checkpoint)
        self._unref(old)
        m.checkpoint_step = m.step = p.step
        m.progress_step = None
        m.ready_count += 1
        m.ready_since_reset += 1
        m.pending_reset = None
        m.decided = False
        score = _mean(m.recent) if m.recent else m.last_score
        m.ready_score = score
        ranking = self.ranking
        if score is not None:
            m.ready_scores.append(score)
            m.ready_steps.append(m.step)
            del m.ready_scores[:-READY_WINDOW]
            del m.ready_steps[:-READY_WINDOW]
            if ranking.better(score, m.best_score):
                m.best_score = score
                m.stall = 0
            else:
                m.stall += 1
        key = (m.id, m.exploits, m.rejuvenations, start)
        self.intervals.append(TrainedInterval(key, start, m.step, m.config, start_score, score))
        self.blobs[m.checkpoint] = BlobInfo(
            m.id,
            m.step,
            tuple(m.schedule),
            tuple(m.ready_scores),
            tuple(m.ready_steps),
            tuple(m.recent),
            score,
            e.seq,
        )
        if score is not None and ranking.better(score, self.best_score) and self.in_result(m.id):
            # the best weights seen so far are kept to the end, whatever happens to the
            # member that holds them
            self._ref(m.checkpoint)
            self._unref(self.best_checkpoint)
            self.best_checkpoint, self.best_score = m.checkpoint, score

    def _exploited(self, e: Event, p: voc.Exploited, m: MemberState) -> None:
        blob = p.checkpoint
        info = self.blobs.get(blob)
        if info is None:
            raise ValueError(f"event {e.seq}: exploit of unknown checkpoint {blob!r}")
        step = p.step
        m.schedule = [s for s in info.schedule if s.step < step]
        m.schedule.append(Segment(step, info.config, m.id))
        self._ref(blob)
        self._unref(m.checkpoint)
        m.checkpoint = blob
        m.checkpoint_step = m.step = step
        m.config = info.config
        m.parent = p.donor
        m.exploits += 1
        m.decided = True
        # the copied weights carry the donor's record, not the receiver's old one
        m.ready_scores = list(info.ready_scores)
        m.ready_steps = list(info.ready_steps)
        m.recent = list(info.recent)
        m.ready_score = m.ready_scores[-1] if m.ready_scores else None
        m.best_score = m.ready_score
        m.stall = 0
        by = p.by or "pbt"
        edge = Edge(m.id, m.parent, step, p.at, e.time, e.seq, EdgeKind.EXPLOIT, by)
        self.edges.append(edge)
        if by == "user":
            self._intervene(e, p.request, "copy", f"member {m.id} copied member {m.parent}")

    def _explored(self, e: Event, p: voc.Explored, m: MemberState) -> None:
        m.config = p.config
        m.decided = True
        self._segment(m, Segment(m.step, m.config, m.id, p.by))
        if p.by == "user":
            self._intervene(e, p.request, "set", f"member {m.id}: {p.config}")

    def _rejuvenated(self, e: Event, p: voc.Rejuvenated, m: MemberState) -> None:
        m.config = p.config
        how = p.reset
        if how is None:  # a log from before resets kept the step: a fresh model at 0
            self._unref(m.checkpoint)
            m.checkpoint, m.checkpoint_step, m.step = None, 0, 0
            m.schedule = [Segment(0, m.config, m.id)]
        else:
            # the weights are reset, the hyperparameter lineage goes on: same step count, the
            # schedule continues with the reset marked
            if how == "full":
                self._unref(m.checkpoint)
                m.checkpoint = None
            else:
                m.pending_reset = how
            m.checkpoint_step = m.step
            self._segment(m, Segment(m.step, m.config, m.id, reset=how))
        m.reset_step, m.ready_since_reset = m.step, 0
        m.rejuvenations += 1
        m.decided = True
        m.best_score = m.ready_score = None
        m.ready_scores, m.ready_steps, m.recent = [], [], []
        m.stall = 0
        edge = Edge(
            m.id, None, m.step, p.at, e.time, e.seq, EdgeKind.REJUVENATE, "pbt", how or "full"
        )
        self.edges.append(edge)

    @staticmethod
    def _segment(m: MemberState, seg: Segment) -> None:
        """A new stretch of the schedule from the member's step (replacing one that starts
        there and was the member's own: the config changed before it trained)."""
        if m.schedule and m.schedule[-1].step == m.step and m.schedule[-1].member == m.id:
            m.schedule[-1] = seg
        else:
            m.schedule.append(seg)

    def _failed(self, e: Event, p: voc.Failed, m: MemberState) -> None:
        m.failures += 1
        self.failures += 1
        m.last_error = p.error
        m.progress_step = None
        if p.fatal:
            m.status = MemberStatus.FAILED

    def _finished(self, e: Event, p: voc.Finished, m: MemberState) -> None:
        m.status = MemberStatus.FINISHED
        m.finish_reason = p.reason
        m.progress_step = None
        if p.by == "user":
            self._intervene(e, p.request, "stop", f"member {m.id} stopped")

    def _intervene(self, e: Event, request: int | None, kind: str, what: str) -> None:
        self.interventions.append(
            {
                "kind": kind,
                "member": e.member,
                "what": what,
                "request": request,
                "time": e.time,
                "seq": e.seq,
            }
        )

    def _budget(self, e: Event, p: voc.BudgetChanged, _: None) -> None:
        """A new budget: members that finished only because the step budget ran out train on
        while it now leaves them steps."""
        budget = list(p.budget)
        self.settings["budget"] = budget
        steps = [int(b["n"]) for b in budget if b.get("type") == "steps"]
        limit = min(steps) if steps else None
        revived = []
        for m in self.members.values():
            if (
                m.status == "finished"
                and m.finish_reason == "step budget reached"
                and (limit is None or m.step < limit)
            ):
                m.status = MemberStatus.RUNNING
                m.finish_reason = None
                self.index.update(m)
                revived.append(m.id)
        what = ", ".join(_describe_budget(b) for b in budget) or "no limit"
        if revived:
            what += f" (members {revived} train on)"
        self._intervene(e, p.request, "budget", what)

    def _workers(self, e: Event, p: voc.WorkersChanged, _: None) -> None:
        """A new number of workers: a resume starts with it."""
        self.settings["workers"] = p.workers
        self._intervene(e, p.request, "workers", f"{p.old_workers} -> {p.workers} workers")


def _describe_budget(b: dict[str, Any]) -> str:
    t = b.get("type")
    if t == "steps":
        return f"{b['n']} steps"
    if t == "wall_time":
        return f"{b['seconds']:g}s wall time"
    if t == "target":
        return f"target {b['score']:g}"
    return str(b)


#: kinds after which the member's place in the ready index may change
_INDEXED = (
    voc.Checkpointed,
    voc.Exploited,
    voc.Rejuvenated,
    voc.Failed,
    voc.Finished,
    voc.Pinned,
)

#: one small handler per event kind (``progress`` is counted, not folded further); member
#: events (but ``member_created``) get the member they name, which must exist already
_HANDLERS: dict[type[voc.Payload], Callable[[Population, Event, Any, Any], None]] = {
    voc.RunStarted: Population._run_started,
    voc.RunResumed: Population._run_resumed,
    voc.MemberCreated: Population._member_created,
    voc.RequestHandled: Population._request_handled,
    voc.RunFinished: Population._run_finished,
    voc.RunStopped: Population._run_stopped,
    voc.BudgetChanged: Population._budget,
    voc.WorkersChanged: Population._workers,
    voc.Reported: Population._reported,
    voc.Progress: Population._progress,
    voc.Pinned: Population._pinned,
    voc.Checkpointed: Population._checkpointed,
    voc.Exploited: Population._exploited,
    voc.Explored: Population._explored,
    voc.Rejuvenated: Population._rejuvenated,
    voc.Failed: Population._failed,
    voc.Finished: Population._finished,
}

#: by payload class: its handler, whether it is given the member it names (member events but
#: ``member_created``), and whether the ready index follows it
_DISPATCH: dict[
    type[voc.Payload], tuple[Callable[[Population, Event, Any, Any], None], bool, bool]
] = {
    cls: (
        handler,
        cls.about_member and cls is not voc.MemberCreated,
        issubclass(cls, _INDEXED),
    )
    for cls, handler in _HANDLERS.items()
}
