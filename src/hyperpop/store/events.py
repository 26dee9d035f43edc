"""The event vocabulary of hyperpop's append-only log.

Every fact about a run is one :class:`Event`. The population's state is a fold over them
(:mod:`hyperpop.population`); nothing else is stored, so resume, reports and the dashboard all
read the same log.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "KINDS", "MEMBER_KINDS", "decode_data", "encode_data"]

RUN_STARTED = "run_started"  # data: settings, space, trainable, version
RUN_RESUMED = "run_resumed"  # data: pid, version, workers, retry (members given up, retried)
MEMBER_CREATED = "member_created"  # data: config
REPORTED = "reported"  # data: step, score, metrics
CHECKPOINTED = "checkpointed"  # data: step, checkpoint
EXPLOITED = "exploited"  # data: donor, step (donor's checkpoint step), checkpoint
EXPLORED = "explored"  # data: config, old_config, how
REJUVENATED = "rejuvenated"  # data: config, old_config
FAILED = "failed"  # data: step, error, attempt, fatal
FINISHED = "finished"  # data: step, reason
RUN_FINISHED = "run_finished"  # data: reason
# what the driver did about a request (hyperpop.store.requests); the actions themselves are the
# events above (explored/exploited/member_created/finished with "by": "user") or these:
REQUEST_HANDLED = "request_handled"  # data: id, kind, status (done|refused), reason
PINNED = "pinned"  # data: pinned (bool), request
BUDGET_CHANGED = "budget_changed"  # data: budget, old_budget, request
RUN_STOPPED = "run_stopped"  # data: reason, request (stopped on request: resumable)
PROGRESS = "progress"  # data: step (reports of an interval still running: counted, not folded)

#: the kinds of events about one member (their ``member`` names it)
MEMBER_KINDS = frozenset(
    {
        MEMBER_CREATED,
        REPORTED,
        PROGRESS,
        PINNED,
        CHECKPOINTED,
        EXPLOITED,
        EXPLORED,
        REJUVENATED,
        FAILED,
        FINISHED,
    }
)

#: every kind of event
KINDS = MEMBER_KINDS | {
    RUN_STARTED,
    RUN_RESUMED,
    RUN_FINISHED,
    REQUEST_HANDLED,
    BUDGET_CHANGED,
    RUN_STOPPED,
}


@dataclass
class Event:
    """One fact of a run.

    Attributes:
        kind: one of :data:`KINDS`.
        member: the member it concerns, or None for run-level events.
        data: JSON-serialisable payload (see the kind constants above).
        time: wall-clock time (seconds since the epoch) when the driver recorded it.
        seq: position in the log, assigned by the store.
    """

    kind: str
    member: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")


def _clean(v: Any) -> Any:
    # JSON has no NaN/inf: encode them as strings so the log stays standard JSON.
    if isinstance(v, float) and not math.isfinite(v):
        return {"__float__": repr(v)}
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, tuple):  # kept apart from lists, so a choice of tuples stays exact
        return {"__tuple__": [_clean(x) for x in v]}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return _clean(v.item())
        except (TypeError, ValueError):
            pass
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _restore(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1 and "__float__" in v:
            return float(v["__float__"])
        if len(v) == 1 and isinstance(v.get("__tuple__"), list):
            return tuple(_restore(x) for x in v["__tuple__"])
        return {k: _restore(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_restore(x) for x in v]
    return v


def encode_data(data: dict[str, Any]) -> str:
    """Serialise an event payload to JSON (NaN, infinities and tuples survive the round trip)."""
    return json.dumps(_clean(data), allow_nan=False, separators=(",", ":"))


def decode_data(text: str) -> dict[str, Any]:
    """Inverse of :func:`encode_data`."""
    return _restore(json.loads(text))
