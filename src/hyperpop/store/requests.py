"""Requests beside events: an append-only channel into a running driver.

Events stay single-writer (only the driver appends to ``events``). Anything else that wants to act
on a run — ``hyperpop stop``, :mod:`hyperpop.steer`, the dashboard's buttons — appends a request to
the ``requests`` table of the same SQLite file, from any process, without the writer lease. The
driver reads the requests it has not answered yet on every poll, acts on them, and records what it
did as events, together with a ``request_handled`` event (done or refused, with a reason) in the
same transaction. A request is never changed or deleted: its answer lives in the event log.

A request row holds whatever its writer put there; :func:`parse` turns it into one typed, frozen
action per kind (:class:`Stop`, :class:`Pin`, :class:`SetConfig`, :class:`Copy`, :class:`Add`,
:class:`SetBudget`, :class:`Workers`) or raises :class:`RequestError` naming what is wrong and
how to write it. The rules live there alone: the writers (:mod:`hyperpop.steer`, the command
line, the dashboard) check with it before they write, and the driver checks every request it
reads with it again (a store may hold a request written by anything), refusing a malformed one
with that reason.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hyperpop.store.events import decode_data, encode_data

__all__ = [
    "KINDS",
    "MAX_ADD",
    "Action",
    "Add",
    "Copy",
    "Pin",
    "Request",
    "RequestError",
    "RequestLog",
    "SetBudget",
    "SetConfig",
    "Stop",
    "Workers",
    "create_table",
    "has_table",
    "parse",
]

#: what a request may ask for
STOP = "stop"  # member None: the whole run (resumable); else that member finishes
PIN = "pin"  # data: pinned (bool)
SET_CONFIG = "set_config"  # data: config (a partial config is completed from the current one)
COPY = "copy"  # data: donor
ADD = "add"  # data: count, or configs (list of partial configs; missing values are sampled)
BUDGET = "budget"  # data: budget (list of Budget.to_dict())
WORKERS = "workers"  # data: workers (members training at once)

KINDS = frozenset({STOP, PIN, SET_CONFIG, COPY, ADD, BUDGET, WORKERS})

#: the most members one ``add`` request may add
MAX_ADD = 1000
#: the most workers a ``workers`` request may ask for
MAX_WORKERS = 100_000
#: the largest int a request may hold (a member id, a count of steps): JSON readers in a
#: browser hold ints exactly up to here, and SQLite's integers are 64-bit
MAX_INT = 2**53


class RequestError(ValueError):
    """A request that is not well formed; the message names the problem and the fix."""


# --- the typed requests -------------------------------------------------------------------------
@dataclass(frozen=True)
class Stop:
    """Stop the whole run (``member`` None: it stays resumable) or one member (it finishes)."""

    KIND: ClassVar[str] = STOP
    member: int | None = None


@dataclass(frozen=True)
class Pin:
    """Pin (``pinned``) or unpin a member: a pinned member is never exploited, reset or
    explored."""

    KIND: ClassVar[str] = PIN
    member: int
    pinned: bool


@dataclass(frozen=True)
class SetConfig:
    """Set some of a member's hyperparameters (a partial config, checked against the space)."""

    KIND: ClassVar[str] = SET_CONFIG
    member: int
    config: dict[str, Any]


@dataclass(frozen=True)
class Copy:
    """Make ``member`` copy ``donor``'s latest checkpoint and hyperparameters."""

    KIND: ClassVar[str] = COPY
    member: int
    donor: int


@dataclass(frozen=True)
class Add:
    """Add one member per partial config (``{}``: every value sampled from the space)."""

    KIND: ClassVar[str] = ADD
    configs: tuple[dict[str, Any], ...]
    member: None = None


@dataclass(frozen=True)
class SetBudget:
    """Replace the run's budget (each item a ``Budget.to_dict()``)."""

    KIND: ClassVar[str] = BUDGET
    budget: tuple[dict[str, Any], ...]
    member: None = None


@dataclass(frozen=True)
class Workers:
    """Train ``workers`` members at once from now on (capped at the population by the
    driver); a resume starts with the last number asked for."""

    KIND: ClassVar[str] = WORKERS
    workers: int
    member: None = None


#: what a well-formed request asks for
Action = Stop | Pin | SetConfig | Copy | Add | SetBudget | Workers

#: each kind's data keys (all of them required, except where one of several is asked for)
_KEYS: dict[str, frozenset[str]] = {
    STOP: frozenset(),
    PIN: frozenset({"pinned"}),
    SET_CONFIG: frozenset({"config"}),
    COPY: frozenset({"donor"}),
    ADD: frozenset({"count", "configs"}),
    BUDGET: frozenset({"budget"}),
    WORKERS: frozenset({"workers"}),
}
_EXAMPLE = {
    STOP: "{}",
    PIN: '{"pinned": true}',
    SET_CONFIG: '{"config": {"lr": 0.01}}',
    COPY: '{"donor": 3}',
    ADD: '{"count": 2} or {"configs": [{"lr": 0.01}]}',
    BUDGET: '{"budget": [{"type": "steps", "n": 400}]}',
    WORKERS: '{"workers": 4}',
}
#: each budget type's one field, and whether it must be an int, and positive
_BUDGETS: dict[str, tuple[str, bool, bool]] = {
    "steps": ("n", True, True),
    "wall_time": ("seconds", False, True),
    "target": ("score", False, False),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """``repr(value)``, cut short (a refusal names the value, it does not echo a megabyte)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _hint(value: Any) -> str:
    return " (write it without quotes)" if isinstance(value, str) else ""


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _int(value: Any, what: str, *, low: int, high: int = MAX_INT) -> int:
    if not _is_int(value):
        raise RequestError(f"{what} must be an int, got {_show(value)}{_hint(value)}")
    if not low <= value <= high:
        shown = value if abs(value) < 10**12 else f"{str(value)[:6]}... ({len(str(value))} digits)"
        raise RequestError(f"{what} must be an int from {low} to {high}, got {shown}")
    return int(value)


def _member_id(value: Any, what: str) -> int:
    return _int(value, what, low=0)


def _number(value: Any, what: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{what} must be a number, got {_show(value)}{_hint(value)}")
    if not math.isfinite(value) or abs(value) > MAX_INT:
        raise RequestError(f"{what} must be a finite number, got {_show(value)}")
    if positive and value <= 0:
        raise RequestError(f"{what} must be positive, got {_show(value)}")
    return value


def _object(value: Any, what: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RequestError(f"{what} must be a JSON object such as {example}, got {_show(value)}")
    return value


def _budget_item(item: Any) -> dict[str, Any]:
    example = '{"type": "steps", "n": 400}'
    d = _object(item, "each budget", example)
    kind = d.get("type")
    if kind not in _BUDGETS:
        raise RequestError(
            f"a budget's type is one of {', '.join(repr(t) for t in _BUDGETS)}, got "
            f"{_show(kind)} (e.g. {example})"
        )
    key, integral, positive = _BUDGETS[kind]
    extra = sorted(set(d) - {"type", key})
    if key not in d or extra:
        raise RequestError(f'a {kind} budget is {{"type": "{kind}", "{key}": ...}}, got {_show(d)}')
    what = f"a {kind} budget's {key}"
    value = _int(d[key], what, low=1) if integral else _number(d[key], what, positive=positive)
    return {"type": kind, key: value}


def _data(kind: str, data: Any) -> dict[str, Any]:
    """``data`` as ``kind``'s JSON object (None: empty), holding no key ``kind`` does not take."""
    d = _object({} if data is None else data, f"the data of {_a(kind)} request", _EXAMPLE[kind])
    unknown = sorted(set(d) - _KEYS[kind])
    if unknown:
        takes = ", ".join(repr(k) for k in sorted(_KEYS[kind])) or "nothing"
        raise RequestError(
            f"{_a(kind)} request takes no {', '.join(repr(k) for k in unknown)} (its data: "
            f"{takes}; e.g. {_EXAMPLE[kind]})"
        )
    return d


def _require(kind: str, d: dict[str, Any]) -> None:
    """Refuse data that lacks one of ``kind``'s keys (an ``add`` checks its one-of itself)."""
    missing = sorted(_KEYS[kind] - set(d)) if kind != ADD else []
    if missing:
        raise RequestError(
            f"{_a(kind)} request needs {', '.join(repr(k) for k in missing)} in its data "
            f"(e.g. {_EXAMPLE[kind]})"
        )


def _list(value: Any, high: int, message: str) -> list[Any]:
    """``value`` as a list of 1 to ``high`` items, else ``message`` with the value shown."""
    if not isinstance(value, list) or not 1 <= len(value) <= high:
        raise RequestError(f"{message}, got {_show(value)}")
    return value


# --- each kind's data, once its member and keys are checked -------------------------------------
def _pin(member: int, d: dict[str, Any]) -> Pin:
    pinned = d["pinned"]
    if not isinstance(pinned, bool):
        raise RequestError(f"pinned must be true or false, got {_show(pinned)}")
    return Pin(member, pinned)


def _set_config(member: int, d: dict[str, Any]) -> SetConfig:
    config = _object(d["config"], "config", _EXAMPLE[SET_CONFIG].split(": ", 1)[1][:-1])
    if not config:
        raise RequestError('config names no hyperparameter to set (e.g. {"lr": 0.01})')
    return SetConfig(member, dict(config))


def _copy(member: int, d: dict[str, Any]) -> Copy:
    donor = _member_id(d["donor"], "donor (the member to copy)")
    if donor == member:
        raise RequestError(f"member {member} cannot copy itself: name another donor")
    return Copy(member, donor)


def _add(d: dict[str, Any]) -> Add:
    if ("count" in d) == ("configs" in d):
        raise RequestError(f"an add request needs either count or configs (e.g. {_EXAMPLE[ADD]})")
    if "count" in d:
        return Add(({},) * _int(d["count"], "count (members to add)", low=1, high=MAX_ADD))
    what = f"configs must be a list of 1 to {MAX_ADD} partial configs"
    configs = _list(d["configs"], MAX_ADD, f'{what}, e.g. [{{"lr": 0.01}}, {{}}]')
    return Add(tuple(dict(_object(c, "each config", '{"lr": 0.01}')) for c in configs))


def _set_budget(d: dict[str, Any]) -> SetBudget:
    example = '[{"type": "steps", "n": 400}]'
    items = _list(d["budget"], MAX_INT, f"budget must be a non-empty list such as {example}")
    budget = tuple(_budget_item(b) for b in items)
    kinds = [b["type"] for b in budget]
    if len(set(kinds)) != len(kinds):
        raise RequestError(f"a budget names each type once, got {kinds}")
    return SetBudget(budget)


def _workers(d: dict[str, Any]) -> Workers:
    what = "workers (members training at once)"
    return Workers(_int(d["workers"], what, low=1, high=MAX_WORKERS))


#: the kinds that change one member, and the kinds for the whole run (``stop`` is either)
_OF_MEMBER: dict[str, Callable[[int, dict[str, Any]], Action]] = {
    PIN: _pin,
    SET_CONFIG: _set_config,
    COPY: _copy,
}
_OF_RUN: dict[str, Callable[[dict[str, Any]], Action]] = {
    ADD: _add,
    BUDGET: _set_budget,
    WORKERS: _workers,
}


def parse(kind: Any, member: Any, data: Any) -> Action:
    """The typed request that ``kind``, ``member`` and ``data`` describe.

    Raises:
        RequestError: an unknown kind, a member where none belongs (or none where one must be),
            an unknown or missing data key, or a value of the wrong type or range.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise RequestError(f"unknown request kind {_show(kind)}; one of {', '.join(sorted(KINDS))}")
    if member is not None:
        member = _member_id(member, "a request's member")
    d = _data(kind, data)
    if kind in _OF_RUN:
        if member is not None:
            raise RequestError(f"{_a(kind)} request is for the whole run: give no member")
        _require(kind, d)
        return _OF_RUN[kind](d)
    if kind in _OF_MEMBER:
        if member is None:
            raise RequestError(
                f"{_a(kind)} request needs a member (the id of the member to change)"
            )
        _require(kind, d)
        return _OF_MEMBER[kind](member, d)
    return Stop(member)


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "time REAL NOT NULL, kind TEXT NOT NULL, member INTEGER, data TEXT NOT NULL, "
    "origin TEXT NOT NULL DEFAULT '')"
)


@dataclass
class Request:
    """One request to a run's driver.

    Attributes:
        id: position in the request table (assigned when appended).
        kind: one of :data:`KINDS`.
        member: the member it concerns, or None for the whole run.
        data: the request's arguments (a JSON object when well formed).
        time: when it was made.
        origin: who made it (``cli``, ``python``, ``dashboard``), for the record.

    A request read from a store holds whatever its writer wrote; :meth:`parse` checks it.
    """

    kind: str
    member: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    id: int | None = None
    origin: str = ""

    def parse(self) -> Action:
        """The typed request (see :func:`parse`).

        Raises:
            RequestError: the request is malformed.
        """
        when: Any = self.time
        if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
            raise RequestError(f"the request's time {when!r} is not a time (seconds since 1970)")
        return parse(self.kind, self.member, self.data)


def create_table(conn: sqlite3.Connection) -> None:
    """Create the request table if the store has none (a store from before requests existed
    gains it when its writer opens it; readers never need it)."""
    conn.execute(_SCHEMA)


def has_table(conn: sqlite3.Connection) -> bool:
    """Whether the store has a request table."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='requests'"
    ).fetchone()
    return row is not None


def read_requests(conn: sqlite3.Connection, after: int = 0) -> list[Request]:
    """Requests with ``id > after``, in order (none when the table does not exist)."""
    try:
        rows = conn.execute(
            "SELECT id, time, kind, member, data, origin FROM requests WHERE id > ? ORDER BY id",
            (after,),
        ).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    return [Request(k, m, _decode(d), t, i, o) for i, t, k, m, d, o in rows]


def _decode(text: Any) -> Any:
    """A request's data as written; what does not decode is kept as it is (the driver refuses
    the request, naming it)."""
    try:
        return decode_data(text)
    except (TypeError, ValueError, RecursionError):
        return text


class RequestLog:
    """Appends requests to the store at ``path`` from any process (no writer lease needed).

    Args:
        path: the run's SQLite file.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise FileNotFoundError(f"no hyperpop store at {self.path} (check the path)")
        uri = self.path.absolute().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def append(self, request: Request) -> Request:
        """Append ``request`` in one transaction; sets its ``id`` and ``time``.

        Raises:
            LookupError: the store has no request table (its driver is an older hyperpop).
            OSError: the store cannot be written (a read-only file or folder, a full disk).
        """
        if request.kind not in KINDS:
            raise ValueError(f"unknown request {request.kind!r}; one of {sorted(KINDS)}")
        m = request.member
        if isinstance(m, int) and not -(2**63) <= m < 2**63:  # SQLite's integers
            raise ValueError(f"a request's member must be a member id, got {request.member}")
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            raise OSError(f"cannot write a request into {self.path} ({e})") from None
        try:
            if not has_table(conn):
                raise LookupError(
                    f"{self.path} takes no requests: it was written by a hyperpop version "
                    "from before requests (resume it with this version first)"
                )
            request.time = request.time or time.time()
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO requests(time, kind, member, data, origin) VALUES (?,?,?,?,?)",
                (
                    request.time,
                    request.kind,
                    request.member,
                    encode_data(request.data),
                    request.origin,
                ),
            )
            conn.execute("COMMIT")
            request.id = int(cur.lastrowid or 0)
        except sqlite3.Error as e:
            raise OSError(f"cannot write a request into {self.path} ({e})") from None
        finally:
            conn.close()
        return request

    def read(self, after: int = 0) -> list[Request]:
        """Requests with ``id > after``, in order."""
        conn = self._connect()
        try:
            return read_requests(conn, after)
        finally:
            conn.close()
