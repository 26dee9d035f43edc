"""The typed event vocabulary: every kind round-trips through the codec, every kind is folded,
and a store written by an earlier release opens and folds to the state that release built."""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import re
import sqlite3
from dataclasses import fields
from pathlib import Path

import pytest

from hyperpop import population
from hyperpop.population import Population
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import KINDS, MEMBER_KINDS, Event, decode_data, encode_data
from hyperpop.store.sqlite import MemoryStore, SQLiteStore

DATA = Path(__file__).parent / "data"
SRC = Path(__file__).parent.parent / "src" / "hyperpop"

#: one payload of every kind, every field set to something other than its default
SAMPLES: list[voc.Payload] = [
    voc.RunStarted(
        run_id="abc",
        settings={"metric": "score", "budget": [{"type": "steps", "n": 4}]},
        space={"lr": {"type": "uniform", "low": 0.1, "high": 1.0}},
        trainable={"module": "m", "name": "T"},
        version="0.1.0",
        pid=42,
    ),
    voc.RunResumed(pid=43, version="0.1.0", workers=2, retry=(1, 3)),
    voc.RunFinished(reason="budget"),
    voc.RunStopped(reason="stopped on request", by="user", request=7),
    voc.RequestHandled(id=7, request_kind="stop", member=2, status="refused", reason="no"),
    voc.BudgetChanged(
        budget=({"type": "steps", "n": 9},), old_budget=({"type": "steps", "n": 4},), by="user"
    ),
    voc.WorkersChanged(workers=3, old_workers=1, by="user", request=9),
    voc.MemberCreated(config={"lr": 0.5, "pair": (1, 2)}, by="user", request=3),
    voc.Reported(step=3, score=math.inf, metrics={"score": math.inf, "loss": [1, 2]}),
    voc.Progress(step=12),
    voc.Checkpointed(step=4, checkpoint="0a1b"),
    voc.Exploited(donor=1, step=4, checkpoint="0a1b", at=6, by="user", request=4),
    voc.Explored(config={"lr": 0.4}, old_config={"lr": 0.5}, how="perturb", by="user", request=5),
    voc.Rejuvenated(config={"lr": 0.4}, old_config={"lr": 0.5}, at=8, reset="shrink_perturb"),
    voc.Failed(step=2, error="Traceback", attempt=2, fatal=True),
    voc.Finished(step=9, reason="stopped by user", by="user", request=6),
    voc.Pinned(pinned=False, by="user", request=8),
]


#: kinds added after the release that wrote tests/data/old_store.sql
NEWER_KINDS = frozenset({voc.WorkersChanged.kind})


def _same(a: object, b: object) -> bool:
    return encode_data({"x": a}) == encode_data({"x": b})  # NaN-safe, tuple-exact


def test_every_kind_has_a_sample_and_a_name() -> None:
    assert {type(p) for p in SAMPLES} == set(voc.VOCABULARY.values())
    assert set(voc.VOCABULARY) == KINDS
    assert {k for k, c in voc.VOCABULARY.items() if c.about_member} == MEMBER_KINDS


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.kind)
def test_every_kind_round_trips_through_the_codec_and_the_stores(
    payload: voc.Payload, tmp_path: Path
) -> None:
    data = voc.to_data(payload)
    assert _same(voc.from_data(payload.kind, data), payload)
    # through JSON, as stored
    assert _same(voc.from_data(payload.kind, decode_data(encode_data(data))), payload)
    member = 0 if payload.about_member else None
    for store in (MemoryStore(), SQLiteStore(tmp_path / "x.db", write=True)):
        try:
            store.append([Event.of(payload, member, 1.5)])
            (back,) = store.read()
        finally:
            store.close()
        assert (back.kind, back.member, back.time, back.seq) == (payload.kind, member, 1.5, 1)
        assert _same(back.payload, payload)


def test_the_codec_writes_the_keys_each_writer_always_wrote() -> None:
    # a decision by PBT names no "by"/"request"; a resume with nothing to retry no "retry"
    assert voc.to_data(voc.Exploited(donor=1, step=4, checkpoint="c", at=6)) == {
        "donor": 1,
        "step": 4,
        "checkpoint": "c",
        "at": 6,
    }
    assert list(voc.to_data(voc.RunResumed(pid=1, version="v", workers=2))) == [
        "pid",
        "version",
        "workers",
    ]
    assert voc.to_data(voc.Explored(config={}, old_config={}, how=None)) == {
        "config": {},
        "old_config": {},
        "how": None,
    }
    answer = voc.RequestHandled(id=1, request_kind="pin", member=None, status="done")
    assert list(voc.to_data(answer)) == ["id", "kind", "member", "status", "reason"]


def test_older_logs_get_their_defaults_in_the_codec() -> None:
    exploited = voc.from_data("exploited", {"donor": 1, "step": 4, "checkpoint": "c"})
    assert exploited == voc.Exploited(donor=1, step=4, checkpoint="c", at=4)
    rejuvenated = voc.from_data("rejuvenated", {"config": {}, "old_config": {}})
    assert (rejuvenated.at, rejuvenated.reset) == (None, None)  # type: ignore[attr-defined]
    assert voc.from_data("pinned", {"request": 1}) == voc.Pinned(pinned=True, request=1)
    assert voc.from_data("run_resumed", {"pid": 1}) == voc.RunResumed(pid=1)
    assert voc.from_data("run_stopped", {}) == voc.RunStopped(reason="stopped on request")


def test_a_malformed_event_is_one_line_naming_the_kind_and_key() -> None:
    with pytest.raises(ValueError, match=r"event 5: a checkpointed event lacks 'checkpoint'"):
        _ = Event("checkpointed", 0, {"step": 1}, 0.0, 5).payload
    with pytest.raises(ValueError, match=r"a reported event's 'step' is 'x'"):
        voc.from_data("reported", {"step": "x"})
    with pytest.raises(ValueError, match="unknown event kind 'nope'"):
        voc.from_data("nope", {})


def test_a_report_reads_the_same_on_the_quick_path_and_the_general_one() -> None:
    # most events are reports: an int step takes the quick path, anything else the plan
    assert voc.from_data("reported", {"step": 3}) == voc.Reported(3, None, {})
    assert voc.from_data("reported", {"step": "3", "score": 0.5}) == voc.Reported(3, 0.5, {})
    assert voc.from_data("reported", {"step": 2.0, "metrics": {"a": 1}}) == voc.Reported(
        2, None, {"a": 1}
    )
    with pytest.raises(ValueError, match=r"a reported event's 'step' is True"):
        voc.from_data("reported", {"step": True})
    with pytest.raises(ValueError, match=r"a reported event lacks 'step'"):
        voc.from_data("reported", {"score": 1.0})


def test_decoding_restores_only_marked_values_and_rejects_trailing_text() -> None:
    plain = {"step": 1, "metrics": {"name": "__float__ is just text"}, "x": [1, {"y": None}]}
    assert decode_data(encode_data(plain)) == plain
    marked = {"a": [float("inf"), {"b": (1, 2)}]}
    assert decode_data(encode_data(marked)) == marked
    assert decode_data(' {"a": 1}') == {"a": 1}
    with pytest.raises(ValueError, match="Extra data"):
        decode_data('{"a": 1} x')


def test_a_fold_leaves_the_garbage_collector_as_it_found_it() -> None:
    events = [
        Event.of(voc.RunStarted(), None, 1.0, 1),
        Event.of(voc.MemberCreated({"lr": 0.1}), 0, 1.0, 2),
        Event.of(voc.Reported(1, 0.5), 0, 2.0, 3),
    ]
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            assert Population.from_events(events).reports == 1
            assert gc.isenabled() is enabled
            with pytest.raises(ValueError, match="names unknown member 7"):
                Population.from_events([*events, Event.of(voc.Reported(2), 7, 3.0, 4)])
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_every_kind_has_a_fold_handler() -> None:
    assert set(population._HANDLERS) == set(voc.VOCABULARY.values())


def _old_store(tmp_path: Path) -> Path:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript((DATA / "old_store.sql").read_text())
    conn.close()
    return db


def _state_of() -> object:
    spec = importlib.util.spec_from_file_location("make_old_store", DATA / "make_old_store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.state_of


def test_a_store_written_by_an_earlier_release_folds_to_the_same_state(tmp_path: Path) -> None:
    expected = json.loads((DATA / "old_store_state.json").read_text())
    store = SQLiteStore(_old_store(tmp_path))
    try:
        events = store.read()
    finally:
        store.close()
    assert len(events) == expected["events"]
    # every kind of its day (kinds added since then: NEWER_KINDS)
    assert sorted({e.kind for e in events}) == expected["kinds"] == sorted(KINDS - NEWER_KINDS)
    pop = Population()
    for e in events:
        pop.apply(e)
    state = json.loads(json.dumps(_state_of()(pop), default=repr))  # type: ignore[operator]
    assert state == json.loads(json.dumps(expected["state"], default=repr))


def test_every_stored_object_of_todays_shape_is_written_back_as_it_was(tmp_path: Path) -> None:
    store = SQLiteStore(_old_store(tmp_path))
    try:
        events = store.read()
    finally:
        store.close()
    older = 8  # the last events are hand-made in older logs' shapes (make_old_store.OLDER)
    for e in events[:-older]:
        assert encode_data(voc.to_data(e.payload)) == encode_data(e.data), e
    for e in events[-older:]:  # read with defaults: reading them back gives the same payload
        assert voc.from_data(e.kind, voc.to_data(e.payload)) == e.payload


#: every module but the codec reads and writes event payloads through the vocabulary
TYPED = sorted(
    str(p.relative_to(SRC))
    for p in SRC.rglob("*.py")
    if p.relative_to(SRC).as_posix() not in ("store/events.py", "store/vocabulary.py")
)
#: a payload taken apart by key (``e.data["x"]``, ``e.data.get("x")``, ``d = e.data``), or an
#: event built from a dict (``Event(ev.X, ...)``)
_UNTYPED = re.compile(r"""\.data\[|\.data\.get\(|=\s*\w+\.data$|\bEvent\((ev\.|["'])""", re.M)


def test_no_module_takes_a_payload_apart_by_string_key() -> None:
    assert len(TYPED) > 50
    assert [name for name in TYPED if _UNTYPED.search((SRC / name).read_text())] == []


def test_payload_fields_are_all_json_keys() -> None:
    for cls in voc.VOCABULARY.values():
        for f in fields(cls):
            assert re.fullmatch(r"[a-z_]+", f.name), (cls, f.name)


def test_the_architecture_docs_event_table_is_the_vocabulary() -> None:
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    table = doc.split("<!-- event table:")[1].split("\n\n")[0].splitlines()[3:]
    rows = [[cell.strip(" `") for cell in line.strip("|").split("|")][:3] for line in table]
    expected = [
        [kind, cls.__name__, "member" if cls.about_member else "run"]
        for kind, cls in voc.VOCABULARY.items()
    ]
    assert sorted(rows) == sorted(expected)
