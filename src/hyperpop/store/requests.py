"""Requests beside events: an append-only channel into a running driver.

Events stay single-writer (only the driver appends to ``events``). Anything else that wants to act
on a run — ``hyperpop stop``, :mod:`hyperpop.steer`, the dashboard's buttons — appends a request to
the ``requests`` table of the same SQLite file, from any process, without the writer lease. The
driver reads the requests it has not answered yet on every poll, acts on them, and records what it
did as events, together with a ``request_handled`` event (done or refused, with a reason) in the
same transaction. A request is never changed or deleted: its answer lives in the event log.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperpop.store.events import decode_data, encode_data

__all__ = ["KINDS", "Request", "RequestLog", "create_table", "has_table"]

#: what a request may ask for
STOP = "stop"  # member None: the whole run (resumable); else that member finishes
PIN = "pin"  # data: pinned (bool)
SET_CONFIG = "set_config"  # data: config (a partial config is completed from the current one)
COPY = "copy"  # data: donor
ADD = "add"  # data: configs (list of partial configs; missing values are sampled)
BUDGET = "budget"  # data: budget (list of Budget.to_dict())

KINDS = frozenset({STOP, PIN, SET_CONFIG, COPY, ADD, BUDGET})

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
        data: the request's arguments (JSON).
        time: when it was made.
        origin: who made it (``cli``, ``python``, ``dashboard``), for the record.
    """

    kind: str
    member: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0
    id: int | None = None
    origin: str = ""


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
    return [Request(k, m, decode_data(d), t, i, o) for i, t, k, m, d, o in rows]


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
