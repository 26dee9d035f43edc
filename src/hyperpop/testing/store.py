"""The contract every event store keeps, as a pytest suite to subclass."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hyperpop.errors import StoreError, StoreLockedError, StoreVersionError
from hyperpop.store.base import Store
from hyperpop.store.events import Event
from hyperpop.store.requests import Request
from hyperpop.store.vocabulary import Checkpointed, Reported, RunStarted

__all__ = ["StoreContract"]


def _reports(n: int, member: int = 0, first: int = 1) -> list[Event]:
    return [Event.of(Reported(step, float(step)), member) for step in range(first, first + n)]


class StoreContract:
    """What every :class:`~hyperpop.store.base.Store` does. Subclass it in a class whose name
    starts with ``Test`` and implement :meth:`make_store` and :meth:`send_request`; the other
    hooks are for stores that live beyond one object (a file), and the checks that need them
    are skipped where they return None."""

    def make_store(self, tmp_path: Path) -> Store:
        """A new, empty store open for writing, with its files (if any) under ``tmp_path``."""
        raise NotImplementedError

    def send_request(self, store: Store, request: Request) -> Request:
        """Append ``request`` the way people reach a running driver of ``store`` (for a file:
        from another connection, without the writer lease)."""
        raise NotImplementedError

    def open_reader(self, store: Store) -> Store | None:
        """Another handle that reads ``store``'s log (None: the log lives in that object)."""
        return None

    def open_writer(self, store: Store) -> Store | None:
        """Open ``store``'s log for writing a second time (None: nothing else can reach it)."""
        return None

    def make_versioned(self, tmp_path: Path, version: int) -> Callable[[], Store] | None:
        """Leave a store whose layout says schema ``version``; return how to open it (None:
        the store keeps no layout across processes)."""
        return None

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = self.make_store(tmp_path)
        try:
            yield s
        finally:
            s.close()

    # --- the log ---------------------------------------------------------------------------
    def test_a_new_store_is_empty(self, store: Store) -> None:
        assert store.read() == []
        assert store.read_requests() == []
        assert store.path is None or isinstance(store.path, Path)

    def test_appends_are_numbered_from_one_without_gaps(self, store: Store) -> None:
        first = store.append(_reports(3))
        assert [e.seq for e in first] == [1, 2, 3]
        assert [e.seq for e in store.append(_reports(2, first=4))] == [4, 5]
        got = store.read()
        assert [e.seq for e in got] == [1, 2, 3, 4, 5]
        assert [e.payload for e in got] == [Reported(s, float(s)) for s in range(1, 6)]

    def test_read_after_returns_the_rest_in_order(self, store: Store) -> None:
        store.append(_reports(5))
        assert [e.seq for e in store.read(2)] == [3, 4, 5]
        assert store.read(5) == []
        assert store.read(99) == []

    def test_an_event_comes_back_as_it_was_written(self, store: Store) -> None:
        run = Event.of(RunStarted("run-1", {"workers": 2}, {"lr": [1, 2]}), None)
        odd = {"nan": math.nan, "inf": -math.inf, "pair": (1, "a"), "text": "é ✓", "deep": [{}]}
        report = Event.of(Reported(7, 0.5, odd), 3, time=123.5)
        store.append([run, report])
        got = store.read()
        assert (got[0].kind, got[0].member, got[0].payload) == (run.kind, None, run.payload)
        assert (got[1].kind, got[1].member, got[1].time) == ("reported", 3, 123.5)
        metrics = got[1].payload.metrics  # type: ignore[attr-defined]
        assert math.isnan(metrics["nan"]) and metrics["inf"] == -math.inf
        assert metrics["pair"] == (1, "a") and metrics["text"] == "é ✓"
        assert metrics["deep"] == [{}]

    def test_time_is_set_when_unset_and_kept_when_given(self, store: Store) -> None:
        given, unset = store.append([Event.of(Reported(1), 0, time=5.0), Event.of(Reported(2), 0)])
        assert given.time == 5.0 and unset.time > 0
        assert [e.time for e in store.read()] == [5.0, unset.time]

    def test_read_returns_copies(self, store: Store) -> None:
        metrics: dict[str, object] = {"a": [1]}
        store.append([Event.of(Reported(1, 1.0, metrics), 0)])
        metrics["a"] = [2]  # the caller's object, changed after the append
        mine = store.read()[0].payload
        assert isinstance(mine, Reported)
        mine.metrics["a"].append(3)  # a reader's copy, changed
        assert store.read()[0].payload == Reported(1, 1.0, {"a": [1]})

    def test_numbered_events_that_continue_the_log_are_kept(self, store: Store) -> None:
        store.append(_reports(2))
        events = _reports(2, first=3)
        events[0].seq, events[1].seq = 3, 4
        assert [e.seq for e in store.append(events)] == [3, 4]
        assert [e.seq for e in store.read()] == [1, 2, 3, 4]

    def test_a_numbered_event_that_leaves_a_gap_writes_nothing(self, store: Store) -> None:
        store.append(_reports(2))
        batch = _reports(3, first=3)
        batch[1].seq = 9  # the second of three does not continue the log
        with pytest.raises(StoreError, match="numbered 9 but the log's next number is 4"):
            store.append(batch)
        assert [e.seq for e in store.read()] == [1, 2]  # all or nothing
        stale = _reports(1, first=3)
        stale[0].seq = 2  # a second writer's number
        with pytest.raises(StoreError, match="nothing was written"):
            store.append(stale)
        assert [e.seq for e in store.append(_reports(1, first=3))] == [3]  # still usable

    def test_a_large_append_is_one_unit(self, store: Store) -> None:
        store.append(_reports(2000))
        got = store.read()
        assert len(got) == 2000 and [e.seq for e in got] == list(range(1, 2001))

    def test_a_reader_never_sees_half_an_append(self, store: Store) -> None:
        reader = self.open_reader(store) or store
        seen: list[list[int]] = []
        done = threading.Event()

        def read() -> None:
            while not done.is_set():
                seen.append([e.seq or 0 for e in reader.read()])

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for i in range(40):
                store.append(_reports(10, member=i % 3, first=1 + 10 * i))
        finally:
            done.set()
            thread.join()
            if reader is not store:
                reader.close()
        seen.append([e.seq or 0 for e in store.read()])
        for seqs in seen:
            assert len(seqs) % 10 == 0 and seqs == list(range(1, len(seqs) + 1))
        assert len(seen[-1]) == 400

    # --- requests ----------------------------------------------------------------------------
    def test_requests_are_read_in_order_after_an_id(self, store: Store) -> None:
        sent = [
            self.send_request(store, Request("pin", 0, {"pinned": True}, origin="python")),
            self.send_request(store, Request("stop", None)),
            self.send_request(store, Request("set_config", 2, {"config": {"lr": (0.5, 1)}})),
        ]
        assert [r.id for r in sent] == [1, 2, 3]
        got = store.read_requests()
        assert [(r.id, r.kind, r.member) for r in got] == [
            (1, "pin", 0),
            (2, "stop", None),
            (3, "set_config", 2),
        ]
        assert got[0].data == {"pinned": True} and got[0].origin == "python"
        assert got[2].data == {"config": {"lr": (0.5, 1)}}
        assert all(r.time > 0 for r in got)
        assert [r.id for r in store.read_requests(2)] == [3]
        assert store.read_requests(3) == []
        assert store.read() == []  # requests are not events

    # --- the writer ------------------------------------------------------------------------
    def test_the_writer_is_this_process_or_none(self, store: Store) -> None:
        holder = store.writer()
        if holder is None:
            return  # a store with no lease (in memory) names no writer
        assert holder["pid"] == os.getpid() and isinstance(holder["since"], float)
        assert isinstance(holder["host"], str) and holder["host"]

    def test_a_second_writer_is_refused_while_the_first_holds_the_log(self, store: Store) -> None:
        try:
            second = self.open_writer(store)
        except StoreLockedError as e:
            assert str(os.getpid()) in str(e) and "stop it first" in str(e)
        else:
            if second is None:
                pytest.skip("nothing but this object can write the store's log")
            second.close()
            pytest.fail("a second writer opened a store that a live writer holds")
        store.append(_reports(1))  # the refusal changed nothing for the first writer
        assert [e.seq for e in store.read()] == [1]

    def test_the_log_outlives_its_writer(self, store: Store) -> None:
        store.append(_reports(3))
        store.close()
        store.close()  # closing twice is harmless
        again = self.open_writer(store)
        if again is None:
            pytest.skip("the log lives in the store object")
        try:
            assert [e.seq for e in again.read()] == [1, 2, 3]
            assert [e.seq for e in again.append(_reports(1, first=4))] == [4]
        finally:
            again.close()

    def test_a_reader_sees_the_writers_appends_and_cannot_append(self, store: Store) -> None:
        reader = self.open_reader(store)
        if reader is None:
            pytest.skip("the log lives in the store object")
        try:
            assert reader.read() == []
            store.append(_reports(2))
            assert [e.seq for e in reader.read()] == [1, 2]
            with pytest.raises(StoreError, match="read-only"):
                reader.append(_reports(1, first=3))
            assert reader.writer() == store.writer()
        finally:
            reader.close()
        assert [e.seq for e in store.read()] == [1, 2]

    def test_a_store_is_its_own_context(self, tmp_path: Path) -> None:
        with self.make_store(tmp_path) as store:
            store.append([Event.of(Checkpointed(1, "blob-1"), 0)])
            assert store.read()[0].payload == Checkpointed(1, "blob-1")

    # --- versions ----------------------------------------------------------------------------
    @pytest.mark.parametrize("version", [0, 999])
    def test_a_store_of_another_schema_version_is_refused(
        self, tmp_path: Path, version: int
    ) -> None:
        opener = self.make_versioned(tmp_path, version)
        if opener is None:
            pytest.skip("the store keeps no layout across processes")
        with pytest.raises(StoreVersionError, match=f"schema version {version}") as info:
            opener().close()
        hint = "upgrade hyperpop" if version > 0 else "open it with the hyperpop version"
        assert hint in str(info.value)
