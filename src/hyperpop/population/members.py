"""What the fold knows of each member and of the weights it holds: the member's state
(:class:`MemberState`), the family tree's edges, schedules' segments, checkpoints
(:class:`BlobInfo`), trained intervals, the run's best model (:class:`Best`) and the columnar
:class:`ReadyIndex` the controller selects donors from."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = [
    "READY_WINDOW",
    "Best",
    "BlobInfo",
    "Edge",
    "EdgeKind",
    "MemberState",
    "MemberStatus",
    "ReadyIndex",
    "Segment",
    "TrainedInterval",
    "config_at",
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


def config_at(schedule: Sequence[Mapping[str, Any]], step: int) -> dict[str, Any]:
    """The config of ``schedule`` (``{"step", "config"}`` entries in step order) in effect at
    training step ``step``: an entry at step ``s`` holds for the steps after ``s``."""
    current = schedule[0]["config"]
    for seg in schedule:
        if seg["step"] < step:
            current = seg["config"]
        else:
            break
    return current


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
    #: failed intervals since the member's last checkpoint (its retries so far: the next
    #: failure gives it up once they reach ``max_failures``); a resume that retries a member
    #: given up starts it at 0 again
    failed_in_a_row: int = 0
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
