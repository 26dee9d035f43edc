"""The typed event vocabulary: one frozen dataclass per kind of event, and the codec.

An :class:`~hyperpop.store.events.Event` is the envelope (kind, member, time, seq) around a
payload. On disk the payload is a JSON object (``Event.data``); in the code it is one of the
classes below (``Event.payload``). :func:`to_data` and :func:`from_data` are the codec between
the two, and the only place that knows the keys of the stored objects, which of them a writer
may leave out, and what an older log that lacks one means (each class says so next to the
field).

Adding a field: add it to its class (with the default an older log gets), write it where the
event is built, read it where it matters. The codec follows the class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "CLUSTER",
    "BudgetChanged",
    "Checkpointed",
    "Exploited",
    "Explored",
    "Failed",
    "Finished",
    "MemberCreated",
    "Payload",
    "Pinned",
    "Progress",
    "Rejuvenated",
    "Reported",
    "RequestHandled",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "RunStopped",
    "STOPPED_ON_REQUEST",
    "USER",
    "VOCABULARY",
    "WorkersChanged",
    "from_data",
    "to_data",
]

Json = dict[str, Any]

#: ``by`` of an event a person's request caused (PBT's own decisions name no ``by``)
USER = "user"
#: ``by`` of a ``workers_changed`` the backend made itself (Ray's ``workers="auto"``
#: following its cluster as nodes join and leave)
CLUSTER = "cluster"
#: why a run stopped on a person's request (what an older ``run_stopped`` without one means)
STOPPED_ON_REQUEST = "stopped on request"


@dataclass(frozen=True, slots=True)
class Payload:
    """What an event says; each kind of event is a subclass."""

    #: the kind string stored with the event
    kind: ClassVar[str]
    #: whether the event is about one member (its envelope's ``member`` names it)
    about_member: ClassVar[bool] = True
    #: fields written even while they are None or empty; any other field whose default is
    #: None or empty is left out of the stored object while it has that value
    keep: ClassVar[frozenset[str]] = frozenset()


# --- run-level events ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunStarted(Payload):
    """A new run: its settings, space, trainable source and version."""

    kind: ClassVar[str] = "run_started"
    about_member: ClassVar[bool] = False

    run_id: str | None = None  # None: a log from before run ids
    settings: Json = field(default_factory=dict)
    space: Json = field(default_factory=dict)
    trainable: Json | None = None
    version: str | None = None
    pid: int | None = None  # None: a log from before the driver's pid was written


@dataclass(frozen=True, slots=True)
class RunResumed(Payload):
    """A resume: the driver's pid, version and workers, and the members given up before that
    it retries."""

    kind: ClassVar[str] = "run_resumed"
    about_member: ClassVar[bool] = False

    pid: int | None = None
    version: str | None = None  # None (and workers None): a log from before they were written
    workers: int | None = None
    retry: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RunFinished(Payload):
    """The run ended (budget, target, error, interrupt)."""

    kind: ClassVar[str] = "run_finished"
    about_member: ClassVar[bool] = False
    keep: ClassVar[frozenset[str]] = frozenset({"reason"})

    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RunStopped(Payload):
    """The run stopped on a person's request: it stays resumable."""

    kind: ClassVar[str] = "run_stopped"
    about_member: ClassVar[bool] = False

    reason: str = STOPPED_ON_REQUEST
    by: str | None = None
    request: int | None = None


@dataclass(frozen=True, slots=True)
class RequestHandled(Payload):
    """The driver's answer to a request: ``done`` or ``refused``, with the reason."""

    kind: ClassVar[str] = "request_handled"
    about_member: ClassVar[bool] = False
    keep: ClassVar[frozenset[str]] = frozenset({"member"})

    id: int
    request_kind: str = ""  # stored as "kind" (see _RENAMED)
    member: int | None = None  # None also: a log from before answers named the member
    status: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class BudgetChanged(Payload):
    """A person replaced the budget (each item a budget's ``to_dict``)."""

    kind: ClassVar[str] = "budget_changed"
    about_member: ClassVar[bool] = False
    keep: ClassVar[frozenset[str]] = frozenset({"budget", "old_budget"})

    budget: tuple[Json, ...] = ()
    old_budget: tuple[Json, ...] = ()
    by: str | None = None
    request: int | None = None


@dataclass(frozen=True, slots=True)
class WorkersChanged(Payload):
    """The number of members training at once changed from ``old_workers`` to ``workers``
    (``by="user"``: a person's request; ``by="cluster"``: Ray's ``workers="auto"`` followed
    its cluster). A resume starts with the last number a person asked for."""

    kind: ClassVar[str] = "workers_changed"
    about_member: ClassVar[bool] = False
    keep: ClassVar[frozenset[str]] = frozenset({"old_workers"})

    workers: int
    old_workers: int | None = None
    by: str | None = None
    request: int | None = None


# --- member events ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MemberCreated(Payload):
    """A member joined with ``config`` (``by="user"``: added by a person)."""

    kind: ClassVar[str] = "member_created"

    config: Json
    by: str | None = None
    request: int | None = None


@dataclass(frozen=True, slots=True)
class Reported(Payload):
    """One training step's metrics and the score ranked on."""

    kind: ClassVar[str] = "reported"
    keep: ClassVar[frozenset[str]] = frozenset({"score"})

    step: int
    score: float | None = None
    metrics: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Progress(Payload):
    """A running interval reached ``step`` (counted, not folded further)."""

    kind: ClassVar[str] = "progress"

    step: int


@dataclass(frozen=True, slots=True)
class Checkpointed(Payload):
    """An interval ended at ``step`` with its weights saved as blob ``checkpoint``."""

    kind: ClassVar[str] = "checkpointed"

    step: int
    checkpoint: str


@dataclass(frozen=True, slots=True)
class Exploited(Payload):
    """The member copied ``donor``'s ``checkpoint`` of ``step`` at its ready point ``at``."""

    kind: ClassVar[str] = "exploited"

    donor: int
    step: int
    checkpoint: str
    at: int  # missing in a log from before it was written: the donor's step (see _OLDER)
    by: str | None = None  # None: PBT decided
    request: int | None = None


@dataclass(frozen=True, slots=True)
class Explored(Payload):
    """The member trains with ``config`` from now on (``how``: the explore strategy, or
    ``"user"``)."""

    kind: ClassVar[str] = "explored"
    keep: ClassVar[frozenset[str]] = frozenset({"old_config", "how"})

    config: Json
    old_config: Json | None = None
    how: str | None = None
    by: str | None = None
    request: int | None = None


@dataclass(frozen=True, slots=True)
class Rejuvenated(Payload):
    """The member's weights were reset (``reset``: ``"full"`` or a partial reset) at its ready
    point ``at``; it trains with ``config``."""

    kind: ClassVar[str] = "rejuvenated"
    keep: ClassVar[frozenset[str]] = frozenset({"old_config", "at", "reset"})

    config: Json
    old_config: Json | None = None
    at: int | None = None  # None: a log from before it was written
    reset: str | None = None  # None: a log from before resets (a fresh model at step 0)


@dataclass(frozen=True, slots=True)
class Failed(Payload):
    """An interval failed (``fatal``: the member is given up)."""

    kind: ClassVar[str] = "failed"
    keep: ClassVar[frozenset[str]] = frozenset({"step", "error"})

    step: int | None = None
    error: str | None = None
    attempt: int = 1
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Finished(Payload):
    """The member finished training (``by="user"``: stopped by a person)."""

    kind: ClassVar[str] = "finished"
    keep: ClassVar[frozenset[str]] = frozenset({"step", "reason"})

    step: int | None = None
    reason: str | None = None
    by: str | None = None
    request: int | None = None


@dataclass(frozen=True, slots=True)
class Pinned(Payload):
    """A person pinned (or unpinned) the member."""

    kind: ClassVar[str] = "pinned"

    pinned: bool = True  # missing: a pin
    by: str | None = None
    request: int | None = None


#: every kind of event, by its stored name
VOCABULARY: dict[str, type[Payload]] = {
    c.kind: c
    for c in (
        RunStarted,
        RunResumed,
        RunFinished,
        RunStopped,
        RequestHandled,
        BudgetChanged,
        WorkersChanged,
        MemberCreated,
        Reported,
        Progress,
        Checkpointed,
        Exploited,
        Explored,
        Rejuvenated,
        Failed,
        Finished,
        Pinned,
    )
}

# --- the codec ----------------------------------------------------------------------------
#: attribute name -> stored key, where the stored key is not a good attribute name
_RENAMED = {"request_kind": "kind"}


def _older_exploited(data: dict[str, Any]) -> None:
    data.setdefault("at", data.get("step"))


#: what an older log's object gets before it is read, for defaults that depend on other fields
_OLDER: dict[type[Payload], Callable[[dict[str, Any]], None]] = {Exploited: _older_exploited}


def _int(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"expected an integer, got {v!r}")
    return int(v)


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(_int(x) for x in v or ())


def _objects(v: Any) -> tuple[Json, ...]:
    return tuple(dict(x) for x in v or ())


#: how a stored value becomes the field's type, by annotation (the conversions the fold always
#: made); a type not named here is taken as it is
_READERS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "bool": bool,
    "tuple[int, ...]": _ints,
    "tuple[Json, ...]": _objects,
}


def _nullable(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else read(v)


@dataclass(frozen=True)
class _Field:
    """How the codec reads one field (worked out once per class)."""

    key: str
    read: Callable[[Any], Any] | None
    #: None: a required field; else what a missing one gets (built anew each time)
    default: Callable[[], Any] | None


def _default(f: Any) -> Callable[[], Any] | None:
    if f.default_factory is not MISSING:
        factory: Callable[[], Any] = f.default_factory
        return factory
    if f.default is not MISSING:
        value = f.default
        return lambda: value
    return None


def _plan(cls: type[Payload]) -> tuple[_Field, ...]:
    out = []
    for f in fields(cls):
        annotation = str(f.type)
        read = _READERS.get(annotation.removesuffix(" | None"))
        if read is not None and annotation.endswith(" | None"):
            read = _nullable(read)
        out.append(_Field(_RENAMED.get(f.name, f.name), read, _default(f)))
    return tuple(out)


_PLANS = {cls: _plan(cls) for cls in VOCABULARY.values()}
#: the same plans as (key, read, default) tuples, by kind: what from_data walks
_STEPS = {
    cls.kind: (cls, tuple((f.key, f.read, f.default) for f in plan)) for cls, plan in _PLANS.items()
}
_ABSENT = object()


def from_data(kind: str, data: Mapping[str, Any]) -> Payload:
    """The payload of a stored event of ``kind`` (with the defaults older logs need).

    Raises:
        ValueError: an unknown kind, or a required field missing or of the wrong type.
    """
    if kind == "reported":  # most events of a log: read without walking the plan
        step = data.get("step", _ABSENT)
        if type(step) is int:
            score = data.get("score")
            metrics = data.get("metrics", _ABSENT)
            return Reported(step, score, {} if metrics is _ABSENT else metrics)
    known = _STEPS.get(kind)
    if known is None:
        raise ValueError(f"unknown event kind {kind!r}")
    cls, steps = known
    older = _OLDER.get(cls)
    if older is not None:
        data = dict(data)
        older(data)
    values: list[Any] = []
    for key, read, default in steps:
        v = data.get(key, _ABSENT)
        if v is _ABSENT:
            if default is None:
                raise ValueError(f"a {kind} event lacks {key!r}")
            values.append(default())
            continue
        if read is not None:
            try:
                v = read(v)
            except (TypeError, ValueError):
                raise ValueError(f"a {kind} event's {key!r} is {v!r}") from None
        values.append(v)
    # positionally: the fold decodes every event, and a keyword call costs twice as much
    return cls(*values)


def to_data(payload: Payload) -> dict[str, Any]:
    """The object stored for ``payload`` (the same keys, in the same order, as it always was)."""
    out: dict[str, Any] = {}
    for f in fields(payload):
        v = getattr(payload, f.name)
        if f.name not in payload.keep and v in (None, ()) and f.default in (None, ()):
            continue
        out[_RENAMED.get(f.name, f.name)] = list(v) if isinstance(v, tuple) else v
    return out
