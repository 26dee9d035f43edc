"""Event stores: one SQLite file (the default) and an in-memory store for tests and scratch runs.

One writer (the driver), many readers: the file is in WAL mode so ``hyperpop status``, reports and
the dashboard read it while a run appends. The writer holds a lease: an exclusive ``flock`` on a
lock file beside the store (``runs/x.db.lock``) that the kernel releases when the process dies, so
a second driver is refused while the first lives, and a driver killed with ``kill -9`` (even one
left an unreaped zombie) never blocks the next. Its pid and host are kept only as information.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyperpop._version import __version__
from hyperpop.errors import StoreError, StoreFullError, StoreLockedError, StoreVersionError
from hyperpop.store.base import Store, number
from hyperpop.store.events import Event, decode_data, encode_data, gc_paused
from hyperpop.store.requests import Request, create_table, read_requests

__all__ = [
    "SCHEMA_VERSION",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreVersionError",
    "WriterLock",
    "open_store",
]

#: Version of the on-disk layout and event vocabulary. Bump on any incompatible change.
SCHEMA_VERSION = 1


class MemoryStore(Store):
    """An event log held in memory (the :class:`~hyperpop.store.base.Store` contract)."""

    def __init__(self) -> None:
        # each event as stored on disk (its payload as JSON text): a reader gets its own copy
        self._events: list[tuple[str, int | None, str, float, int]] = []
        self._requests: list[Request] = []
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Append events atomically; checks or assigns ``seq``, assigns ``time`` (if unset)."""
        with self._lock:
            given = [(e.seq, e.time) for e in events]
            try:
                now = number(events, len(self._events), "the in-memory store")
                rows = [
                    (e.kind, e.member, encode_data(e.data), e.time or now, i)
                    for i, e in enumerate(events, start=len(self._events) + 1)
                ]
            except BaseException:
                for e, (seq, t) in zip(events, given):  # nothing written: as they came
                    e.seq, e.time = seq, t
                raise
            self._events.extend(rows)
            for e in events:
                e.time = e.time or now
        return list(events)

    def read(self, after: int = 0) -> list[Event]:
        """Events with ``seq > after``, in order (copies: changing one changes no other)."""
        with self._lock:
            rows = self._events[max(after, 0) :]
        with gc_paused():
            return [Event(k, m, decode_data(d), t, s) for k, m, d, t, s in rows]

    def add_request(self, request: Request) -> Request:
        """Append a request (the in-memory twin of :class:`~hyperpop.store.requests.RequestLog`)."""
        with self._lock:
            request.id = len(self._requests) + 1
            request.time = request.time or time.time()
            self._requests.append(request)
        return request

    def read_requests(self, after: int = 0) -> list[Request]:
        """Requests with ``id > after``, in order."""
        with self._lock:
            return list(self._requests[after:])

    def close(self) -> None:
        """Nothing to release."""


def _cannot_write(db_path: Path, e: OSError) -> StoreError:
    """A store that cannot be written (a read-only filesystem or folder, a path under a file),
    in one line that says what to do."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFullError(
            f"cannot write to {db_path}: the disk is full ({e.strerror}); free some space first"
        )
    return StoreError(
        f"cannot write to {db_path}: {e.strerror or e} ({e.filename or db_path}); running or "
        "resuming a run needs a writable folder for the store (reading it does not): make it "
        "writable, or copy the store's files to a writable folder"
    )


def lock_path_for(db_path: str | os.PathLike[str]) -> Path:
    """The lock file that holds the writer lease of the store at ``db_path``."""
    return Path(f"{os.fspath(db_path)}.lock")


class WriterLock:
    """The writer lease of one store: an exclusive ``flock`` on its lock file.

    The kernel drops the lock with the process that holds it (``kill -9``, a crash, a zombie not
    yet reaped), so a dead driver never looks alive. The file also records the holder's pid,
    host and start time, as information only. Readers test the lock without taking it for long
    (:meth:`held`).

    Args:
        db_path: the store's SQLite file.
    """

    #: how long :meth:`acquire` retries while a reader briefly tests the lock
    RETRY_SECONDS = 0.25

    def __init__(self, db_path: str | os.PathLike[str]):
        self.db_path = Path(db_path)
        self.path = lock_path_for(db_path)
        self._fd: int | None = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the lease."""
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lease, or raise :class:`StoreLockedError` naming the live holder."""
        import fcntl

        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _cannot_write(self.db_path, e) from None
        deadline = time.monotonic() + self.RETRY_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if time.monotonic() > deadline:
                os.close(fd)
                raise StoreLockedError(self._refusal()) from None
            time.sleep(0.005)  # a reader tests the lock for an instant: try again
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd
        return self

    def _refusal(self) -> str:
        holder = self.holder() or {}
        who = f"pid {holder['pid']}" if holder.get("pid") else f"see {self.path}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on host {holder['host']}"
        return (
            f"{self.db_path} is being written by a live hyperpop driver ({who}); stop it "
            f"first (hyperpop stop {self.db_path}) or use another store"
        )

    def release(self) -> None:
        """Give the lease back (closing the file drops the lock)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # information only: no holder any more
        except OSError:
            pass
        os.close(fd)

    def holder(self) -> dict[str, Any] | None:
        """What the current or last holder wrote (pid, host, since), if anything."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return None
        try:
            info = json.loads(raw) if raw.strip() else None
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def held(self) -> bool:
        """Whether a live process holds the lease (tested with a non-blocking shared lock)."""
        import fcntl

        if self._fd is not None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return True
            raise
        finally:
            os.close(fd)  # also drops the shared lock taken for the test
        return False


class SQLiteStore(Store):
    """The event log of one run in one SQLite file.

    Args:
        path: the database file (created with its parent folder when ``write`` is set).
        write: open as the run's single writer (takes the lease); otherwise read-only.
        lock: a :class:`WriterLock` the caller already holds for ``path`` (e.g. while it
            deleted an old run there); default: a new one, taken when ``write`` is set.
    """

    path: Path  # always a file (the base class allows None for a store in memory)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        write: bool = False,
        lock: WriterLock | None = None,
    ):
        self.path = Path(path)
        self.write = write
        if not write and not self.path.exists():
            raise StoreError(f"no hyperpop store at {self.path} (check the path)")
        #: the writer lease; taken before the file is opened, so nothing that holds it sees
        #: the file deleted or replaced under it
        self.lock = lock or WriterLock(self.path)
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _cannot_write(self.path, e) from None
            self.lock.acquire()
        try:
            if write:
                self._conn = self._connect(str(self.path))
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._check_or_create()
            else:
                self._open_read_only()
        except sqlite3.DatabaseError as e:
            if write:
                self.lock.release()
            text = str(e)
            if write and ("readonly" in text or "unable to open" in text):
                raise _cannot_write(self.path, OSError(errno.EROFS, text)) from None
            raise StoreError(
                f"{self.path} is not a hyperpop store ({e}); point to the .db file that "
                "hyperpop run created"
            ) from None
        except BaseException:
            if write:
                self.lock.release()
            raise
        self._lock = threading.Lock()
        if write:
            self._record_writer()

    @staticmethod
    def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            target, timeout=30, isolation_level=None, check_same_thread=False, uri=uri
        )
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _open_read_only(self) -> None:
        """A reader never writes: it opens the file read-only (``mode=ro``), so a store on a
        read-only filesystem or with read-only permissions can be read. SQLite still needs
        the ``-shm`` file of a WAL store; where it can neither find nor create it (a
        read-only folder after a clean close), the file alone holds the whole log and is
        opened as immutable."""
        uri = self.path.absolute().as_uri()
        self._conn = self._connect(f"{uri}?mode=ro", uri=True)
        try:
            self._check_or_create()
            return
        except sqlite3.OperationalError as e:
            self._conn.close()
            first = e
        wal = Path(f"{self.path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(
                f"cannot read {self.path} ({first}): its last writes are still in {wal.name}, "
                "and SQLite needs write access to the folder to read them; copy the store's "
                "files to a writable folder and read the copy"
            ) from None
        self._conn = self._connect(f"{uri}?immutable=1", uri=True)
        self._check_or_create()

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
            create_table(c)
            c.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created', ?)",
                (str(SCHEMA_VERSION), str(time.time())),
            )
            c.execute("COMMIT")
            return
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else None
        if version != SCHEMA_VERSION:
            hint = (
                "upgrade hyperpop (pip install -U hyperpop)"
                if version is not None and version > SCHEMA_VERSION
                else "open it with the hyperpop version that wrote it, or start a new run"
            )
            raise StoreVersionError(
                f"{self.path} has store schema version {version}, but hyperpop {__version__} "
                f"reads version {SCHEMA_VERSION}; {hint}"
            )
        if self.write and "requests" not in tables:
            create_table(c)  # a store from before requests: readers do without the table

    def _record_writer(self) -> None:
        """Note who writes (pid, host, since) in ``meta``: information only; the lease itself
        is :attr:`lock`."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('writer', ?)", (json.dumps(me),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            self.lock.release()
            raise

    def writer(self) -> dict[str, Any] | None:
        """The driver writing this store (pid, host, since), or None when none holds the lease."""
        if not self.lock.held():
            return None
        info = self.lock.holder()
        if info is None:  # the lock file lost its note: fall back to the one in meta
            row = self._conn.execute("SELECT value FROM meta WHERE key='writer'").fetchone()
            info = json.loads(row[0]) if row else {}
        return info

    def writer_alive(self) -> bool:
        """Whether a live driver holds the lease (the kernel lock tells; never a pid check)."""
        return self.lock.held()

    # --- events --------------------------------------------------------------------------
    def append(self, events: Sequence[Event]) -> list[Event]:
        """Append events in one transaction; assigns ``seq`` and ``time`` (if unset)."""
        if not self.write:
            raise StoreError(f"{self.path} was opened read-only")
        given = [(e.seq, e.time) for e in events]
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    last = c.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
                    now = number(events, last, self.path)
                    rows = [
                        (e.seq, e.time or now, e.kind, e.member, encode_data(e.data))
                        for e in events
                    ]
                    c.executemany(
                        "INSERT INTO events(seq, time, kind, member, data) VALUES (?,?,?,?,?)",
                        rows,
                    )
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:  # SQLite itself rolls back on errors such as a full disk
                        c.execute("ROLLBACK")
                    for e, (seq, t) in zip(events, given):  # nothing written: as they came
                        e.seq, e.time = seq, t
                    raise
            except sqlite3.OperationalError as e:
                raise self._write_error(e) from e
        for event in events:
            event.time = event.time or now
        return list(events)

    def _write_error(self, e: sqlite3.OperationalError) -> StoreError:
        """A write that failed, in words that say what to do (nothing recorded is lost)."""
        code = getattr(e, "sqlite_errorname", "")
        if code == "SQLITE_FULL" or "disk is full" in str(e):
            return StoreFullError(
                f"cannot write to {self.path}: the disk is full ({e}); every event recorded so "
                f"far is kept: free some space, then `hyperpop resume {self.path}` continues"
            )
        if code == "SQLITE_READONLY" or "readonly" in str(e):
            return StoreError(
                f"cannot write to {self.path}: the file or its folder is read-only ({e}); "
                f"make it writable, then `hyperpop resume {self.path}` continues"
            )
        return StoreError(
            f"cannot write to {self.path} ({e}); every event recorded so far is kept: fix the "
            f"cause, then `hyperpop resume {self.path}` continues"
        )

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
        with gc_paused():
            for seq, t, kind, member, data in rows:
                try:
                    out.append(Event(kind, member, decode_data(data), t, seq))
                except ValueError as e:
                    raise StoreError(f"{self.path}: event {seq} is unreadable ({e})") from None
        return out

    def read_requests(self, after: int = 0) -> list[Request]:
        """Requests (:mod:`hyperpop.store.requests`) with ``id > after``, in order."""
        with self._lock:
            try:
                return read_requests(self._conn, after)
            except sqlite3.DatabaseError as e:
                raise StoreError(f"cannot read requests from {self.path}: {e}") from None

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
        finally:
            if self.write:
                self.lock.release()


def open_store(path: str | os.PathLike[str] | None, *, write: bool = False) -> Store:
    """Open a store: a :class:`SQLiteStore` for a path, a :class:`MemoryStore` for None."""
    if path is None:
        return MemoryStore()
    return SQLiteStore(path, write=write)
