"""Event stores: one SQLite file (the default) and an in-memory store for tests and scratch runs.

One writer (the driver), many readers: the file is in WAL mode so ``hyperpop status``, reports and
the dashboard read it while a run appends. A lease in the ``meta`` table stops a second driver
from writing the same store while the first is alive; a driver killed with ``kill -9`` leaves a
stale lease that the next writer takes over.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from hyperpop.store.events import Event, decode_data, encode_data

__all__ = [
    "SCHEMA_VERSION",
    "MemoryStore",
    "SQLiteStore",
    "StoreError",
    "StoreLockedError",
    "StoreVersionError",
    "open_store",
]

#: Version of the on-disk layout and event vocabulary. Bump on any incompatible change.
SCHEMA_VERSION = 1


class StoreError(RuntimeError):
    """The store cannot be opened or read."""


class StoreVersionError(StoreError):
    """The store was written by an incompatible version of hyperpop."""


class StoreLockedError(StoreError):
    """Another live driver is writing this store."""


class MemoryStore:
    """An event log held in memory (same interface as :class:`SQLiteStore`)."""

    path: Path | None = None

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Append events atomically; assigns ``seq`` and ``time`` (if unset)."""
        now = time.time()
        with self._lock:
            for e in events:
                e.seq = len(self._events) + 1
                e.time = e.time or now
                self._events.append(
                    Event(e.kind, e.member, decode_data(encode_data(e.data)), e.time, e.seq)
                )
        return list(events)

    def read(self, after: int = 0) -> list[Event]:
        """Events with ``seq > after``, in order."""
        with self._lock:
            return [
                Event(e.kind, e.member, dict(e.data), e.time, e.seq) for e in self._events[after:]
            ]

    def close(self) -> None:
        """Nothing to release."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SQLiteStore:
    """The event log of one run in one SQLite file.

    Args:
        path: the database file (created with its parent folder when ``write`` is set).
        write: open as the run's single writer (takes the lease); otherwise read-only.
    """

    def __init__(self, path: str | os.PathLike[str], *, write: bool = False):
        self.path = Path(path)
        self.write = write
        if not write and not self.path.exists():
            raise StoreError(f"no hyperpop store at {self.path} (check the path)")
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=30, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
            if write:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._check_or_create()
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path} is not a hyperpop store ({e}); point to the .db file that "
                "hyperpop run created"
            ) from None
        self._lock = threading.Lock()
        if write:
            self._take_lease()

    # --- schema --------------------------------------------------------------------------
    def _check_or_create(self) -> None:
        c = self._conn
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            if not self.write:
                raise StoreError(f"{self.path} is not a hyperpop store (it has no meta table)")
            if tables:
                raise StoreError(
                    f"{self.path} is an SQLite file of something else (tables: "
                    f"{', '.join(sorted(tables))}); choose a new path for the run"
                )
            c.execute("BEGIN IMMEDIATE")
            c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            c.execute(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, "
                "kind TEXT NOT NULL, member INTEGER, data TEXT NOT NULL)"
            )
            c.execute("CREATE INDEX events_member ON events(member, seq)")
            c.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created', ?)",
                (str(SCHEMA_VERSION), str(time.time())),
            )
            c.execute("COMMIT")
            return
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else None
        if version != SCHEMA_VERSION:
            from hyperpop import __version__

            hint = (
                "upgrade hyperpop (pip install -U hyperpop)"
                if version is not None and version > SCHEMA_VERSION
                else "open it with the hyperpop version that wrote it, or start a new run"
            )
            raise StoreVersionError(
                f"{self.path} has store schema version {version}, but hyperpop {__version__} "
                f"reads version {SCHEMA_VERSION}; {hint}"
            )

    def _take_lease(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            row = c.execute("SELECT value FROM meta WHERE key='writer'").fetchone()
            if row:
                other = json.loads(row[0])
                if (
                    other.get("pid") != me["pid"]
                    and other.get("host") == me["host"]
                    and _pid_alive(int(other.get("pid", -1)))
                ):
                    raise StoreLockedError(
                        f"{self.path} is being written by a live hyperpop driver "
                        f"(pid {other['pid']}); stop it first or use another store"
                    )
            c.execute("INSERT OR REPLACE INTO meta VALUES ('writer', ?)", (json.dumps(me),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def writer(self) -> dict | None:
        """The lease of the driver writing this store (pid, host, since), if any."""
        row = self._conn.execute("SELECT value FROM meta WHERE key='writer'").fetchone()
        return json.loads(row[0]) if row else None

    def writer_alive(self) -> bool | None:
        """Whether a live driver holds the lease (None if it runs on another host)."""
        w = self.writer()
        if not w:
            return False
        if w.get("host") != socket.gethostname():
            return None
        return _pid_alive(int(w.get("pid", -1)))

    # --- events --------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> list[Event]:
        """Append events in one transaction; assigns ``seq`` and ``time`` (if unset)."""
        if not self.write:
            raise StoreError(f"{self.path} was opened read-only")
        now = time.time()
        rows = [(e.time or now, e.kind, e.member, encode_data(e.data)) for e in events]
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                last = c.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
                c.executemany("INSERT INTO events(time, kind, member, data) VALUES (?,?,?,?)", rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        for i, e in enumerate(events):
            e.seq = last + 1 + i
            e.time = e.time or now
        return list(events)

    def read(self, after: int = 0) -> list[Event]:
        """Events with ``seq > after``, in order."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, time, kind, member, data FROM events WHERE seq > ? ORDER BY seq",
                    (after,),
                ).fetchall()
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot read events from {self.path}: {e}") from None
        out = []
        for seq, t, kind, member, data in rows:
            try:
                out.append(Event(kind, member, decode_data(data), t, seq))
            except ValueError as e:
                raise StoreError(f"{self.path}: event {seq} is unreadable ({e})") from None
        return out

    def close(self) -> None:
        """Release the lease (if writing) and close the connection."""
        try:
            if self.write:
                with self._lock:
                    self._conn.execute(
                        "DELETE FROM meta WHERE key='writer' AND json_extract(value,'$.pid')=?",
                        (os.getpid(),),
                    )
            self._conn.close()
        except sqlite3.Error:
            pass


def open_store(path: str | os.PathLike[str] | None, *, write: bool = False):
    """Open a store: a :class:`SQLiteStore` for a path, a :class:`MemoryStore` for None."""
    if path is None:
        return MemoryStore()
    return SQLiteStore(path, write=write)
