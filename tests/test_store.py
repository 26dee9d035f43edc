"""The event stores, parametrised over every implementation, plus SQLite-only behaviour."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys

import pytest

from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import (
    SCHEMA_VERSION,
    MemoryStore,
    SQLiteStore,
    StoreError,
    StoreLockedError,
    StoreVersionError,
)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "r.db", write=True)
    yield s
    s.close()


def test_append_assigns_sequence_and_reads_back(store):
    store.append([Event(ev.RUN_STARTED, None, {"settings": {"metric": "acc"}})])
    store.append(
        [
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.1, "nested": {"a": [1, 2]}}}),
            Event(ev.REPORTED, 0, {"step": 1, "score": 0.5, "metrics": {"acc": 0.5}}),
        ]
    )
    got = store.read()
    assert [e.seq for e in got] == [1, 2, 3]
    assert [e.kind for e in got] == [ev.RUN_STARTED, ev.MEMBER_CREATED, ev.REPORTED]
    assert got[1].data["config"] == {"lr": 0.1, "nested": {"a": [1, 2]}}
    assert all(e.time > 0 for e in got)
    assert [e.seq for e in store.read(after=2)] == [3]


def test_nan_and_infinities_survive(store):
    store.append(
        [Event(ev.REPORTED, 0, {"score": math.nan, "metrics": {"a": math.inf, "b": -math.inf}})]
    )
    (e,) = store.read()
    assert math.isnan(e.data["score"])
    assert e.data["metrics"] == {"a": math.inf, "b": -math.inf}


def test_unknown_event_kind_is_refused():
    with pytest.raises(ValueError, match="unknown event kind"):
        Event("exploded", 0, {})


def test_reader_sees_events_while_a_writer_appends(tmp_path):
    path = tmp_path / "r.db"
    writer = SQLiteStore(path, write=True)
    reader = SQLiteStore(path)
    writer.append([Event(ev.RUN_STARTED, None, {})])
    assert len(reader.read()) == 1
    writer.append([Event(ev.RUN_FINISHED, None, {"reason": "x"})])
    assert [e.kind for e in reader.read(after=1)] == [ev.RUN_FINISHED]
    with pytest.raises(StoreError, match="read-only"):
        reader.append([Event(ev.RUN_FINISHED, None, {})])
    reader.close()
    writer.close()


def test_store_from_another_version_is_refused(tmp_path):
    path = tmp_path / "r.db"
    SQLiteStore(path, write=True).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreVersionError, match="upgrade hyperpop"):
        SQLiteStore(path)


def test_missing_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(StoreError, match="no hyperpop store"):
        SQLiteStore(tmp_path / "nope.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a hyperpop store"):
        SQLiteStore(junk)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="something else"):
        SQLiteStore(other, write=True)


def test_a_live_writer_holds_the_lease(tmp_path):
    path = tmp_path / "r.db"
    code = (
        "import sys, time; from hyperpop.store.sqlite import SQLiteStore; "
        f"s = SQLiteStore({str(path)!r}, write=True); print('ready', flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            SQLiteStore(path, write=True)
    finally:
        proc.kill()  # like kill -9: the lease stays behind, stale
        proc.wait()
    s = SQLiteStore(path, write=True)  # a dead writer's lease is taken over
    assert s.writer()["pid"] == os.getpid()
    s.close()
