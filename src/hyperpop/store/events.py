"""The event vocabulary of hyperpop's append-only log.

Every fact about a run is one :class:`Event`. The population's state is a fold over them
(:mod:`hyperpop.population`); nothing else is stored, so resume, reports and the dashboard all
read the same log.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hyperpop.store import vocabulary as voc
from hyperpop.store.vocabulary import Payload

__all__ = [
    "KINDS",
    "MEMBER_KINDS",
    "Event",
    "Payload",
    "decode_data",
    "encode_data",
    "gc_paused",
]

# The kinds, by name (the payload classes of hyperpop.store.vocabulary say what each holds).
RUN_STARTED = voc.RunStarted.kind
RUN_RESUMED = voc.RunResumed.kind
MEMBER_CREATED = voc.MemberCreated.kind
REPORTED = voc.Reported.kind
CHECKPOINTED = voc.Checkpointed.kind
EXPLOITED = voc.Exploited.kind
EXPLORED = voc.Explored.kind
REJUVENATED = voc.Rejuvenated.kind
FAILED = voc.Failed.kind
FINISHED = voc.Finished.kind
RUN_FINISHED = voc.RunFinished.kind
# what the driver did about a request (hyperpop.store.requests); the actions themselves are the
# events above (explored/exploited/member_created/finished with "by": "user") or these:
REQUEST_HANDLED = voc.RequestHandled.kind
PINNED = voc.Pinned.kind
BUDGET_CHANGED = voc.BudgetChanged.kind
RUN_STOPPED = voc.RunStopped.kind
PROGRESS = voc.Progress.kind  # reports of an interval still running: counted, not folded

#: the kinds of events about one member (their ``member`` names it)
MEMBER_KINDS = frozenset(k for k, c in voc.VOCABULARY.items() if c.about_member)

#: every kind of event
KINDS = frozenset(voc.VOCABULARY)


@dataclass
class Event:
    """One fact of a run: the envelope (kind, member, time, seq) around its payload.

    Attributes:
        kind: one of :data:`KINDS`.
        member: the member it concerns, or None for run-level events.
        data: the payload as stored (a JSON-serialisable object; :attr:`payload` is the same,
            typed).
        time: wall-clock time (seconds since the epoch) when the driver recorded it.
        seq: position in the log, assigned by the store.
    """

    kind: str
    member: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    seq: int | None = None
    _payload: Payload | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")

    @classmethod
    def of(
        cls, payload: Payload, member: int | None = None, time: float = 0.0, seq: int | None = None
    ) -> Event:
        """The event that records ``payload`` (about ``member``, at ``time``)."""
        e = cls(payload.kind, member, voc.to_data(payload), time, seq)
        e._payload = payload
        return e

    @property
    def payload(self) -> Payload:
        """What the event says, typed (decoded once; an older log's missing fields get their
        defaults).

        Raises:
            ValueError: the stored object lacks a field the kind needs.
        """
        p = self._payload
        if p is None:
            try:
                p = self._payload = voc.from_data(self.kind, self.data)
            except ValueError as e:
                raise ValueError(f"event {self.seq}: {e}") from None
        return p


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Read or fold many events with the cyclic garbage collector paused: a long log makes
    hundreds of thousands of long-lived objects and no cycles, and the collector's passes over
    them cost about as much as the decoding itself. Nested uses are fine; the collector is
    enabled again on leaving only if it was enabled on entering."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


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


_raw_decode = json.JSONDecoder().raw_decode


def decode_data(text: str) -> dict[str, Any]:
    """Inverse of :func:`encode_data`."""
    if "__float__" in text or "__tuple__" in text:
        restored: dict[str, Any] = _restore(json.loads(text))
        return restored
    # nothing to restore (most events): the parsed object as it is, without walking it again
    data: dict[str, Any]
    try:
        data, end = _raw_decode(text)
    except ValueError:
        end = -1
    if end != len(text):  # leading or trailing text: json.loads says what is wrong
        data = json.loads(text)
    return data
