"""The read side: one fold serves Result, the live view, the dashboard and the command line."""

from __future__ import annotations

import json
import math

import pytest

from hyperpop.results import Result
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.summary import RunData, fmt, json_safe, member_rows, num, summary


def interval(member: int, start: int, scores: list[float], blob: str, t: float) -> list[Event]:
    out = [
        Event(ev.REPORTED, member, {"step": s, "score": v, "metrics": {"acc": v, "step": -s}}, t)
        for s, v in enumerate(scores, start + 1)
    ]
    return out + [
        Event(ev.CHECKPOINTED, member, {"step": start + len(scores), "checkpoint": blob}, t)
    ]


def log() -> list[Event]:
    """Three members: 1 copies 0 at step 2 and explores; 0 copies 1 at step 4 (so 0's weights
    carry 1's steps 3-4 and, through 1, 0's own steps 1-2 of before); 2 is rejuvenated."""
    events = [
        Event(ev.RUN_STARTED, None, {"settings": {"metric": "acc", "mode": "max"}}, 0.0),
        Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.1, "opt": {"m": 0.9}}}, 0.0),
        Event(ev.MEMBER_CREATED, 1, {"config": {"lr": 0.2, "opt": {"m": 0.8}}}, 0.0),
        Event(ev.MEMBER_CREATED, 2, {"config": {"lr": 0.3, "opt": {"m": 0.7}}}, 0.0),
        *interval(0, 0, [0.5, 0.6], "a2", 1.0),
        *interval(1, 0, [0.1, 0.2], "b2", 1.0),
        *interval(2, 0, [0.0, 0.0], "c2", 1.0),
        Event(ev.EXPLOITED, 1, {"donor": 0, "step": 2, "checkpoint": "a2", "at": 2}, 2.0),
        Event(ev.EXPLORED, 1, {"config": {"lr": 0.4, "opt": {"m": 0.8}}}, 2.0),
        Event(ev.REJUVENATED, 2, {"config": {"lr": 0.5, "opt": {"m": 0.7}}, "reset": "full"}, 2.0),
        *interval(0, 2, [0.7, 0.75], "a4", 3.0),
        *interval(1, 2, [0.8, 0.9], "b4", 3.0),
        *interval(2, 2, [0.05, 0.1], "c4", 3.0),
        Event(ev.EXPLOITED, 0, {"donor": 1, "step": 4, "checkpoint": "b4", "at": 4}, 4.0),
        *interval(0, 4, [0.95], "a5", 5.0),
        Event(ev.FAILED, 2, {"error": "Traceback...\nValueError: boom", "fatal": True}, 5.0),
    ]
    for i, e in enumerate(events, 1):
        e.seq = i
    return events


def test_lineage_reports_follow_every_copy_back() -> None:
    data = RunData(log())
    steps = data.lineage_reports(0)
    assert list(steps) == [1, 2, 3, 4, 5]
    # step 5 by 0 itself, 3-4 by 1 (copied at 4), 1-2 by 0 as it was before 1 copied it
    assert [r.member for r in steps.values()] == [0, 0, 1, 1, 0]
    assert [r.score for r in steps.values()] == [0.5, 0.6, 0.8, 0.9, 0.95]
    # the weights 0 held before its copy: its own steps 3-4 (0.7, 0.75)
    copy = next(e.seq for e in log() if e.kind == ev.EXPLOITED and e.member == 0)
    assert [r.score for r in data.lineage_reports(0, until=copy).values()] == [
        0.5, 0.6, 0.7, 0.75,
    ]  # fmt: skip
    assert data.recorded(0, 3).member == 1 and data.recorded(0, 9) is None
    # after a rejuvenation the reports before it belong to other weights
    assert list(data.lineage_reports(2)) == [3, 4]


def test_records_carry_every_metric_and_the_config_trained_with() -> None:
    rows = Result(log()).records()
    assert len(rows) == 13
    first = rows[0]
    assert first == {
        "member": 0,
        "step": 1,
        "time": 1.0,
        "score": 0.5,
        "acc": 0.5,
        "metric/step": -1,  # a metric named like hyperpop's own column keeps its value
        "config/lr": 0.1,
        "config/opt/m": 0.9,
    }
    by = {(r["member"], r["step"], r["time"]): r for r in rows}
    assert by[(1, 3, 3.0)]["config/lr"] == 0.4  # explored after its copy
    assert by[(0, 5, 5.0)]["config/lr"] == 0.4  # copied 1's weights with their config
    assert by[(2, 3, 3.0)]["config/lr"] == 0.5  # rejuvenated with a new config


def test_summary_and_member_rows_are_one_read_of_the_fold() -> None:
    data = RunData(log())
    s = summary(data.pop, alive=False)
    assert (s["status"], s["members"], s["reports"], s["exploits"]) == ("interrupted", 3, 13, 2)
    assert (s["rejuvenations"], s["failures"], s["best_member"], s["max_step"]) == (1, 1, 0, 5)
    assert s["statuses"] == {"interrupted": 2, "failed": 1} and s["elapsed"] == 5.0
    assert all(type(k) is str for k in s["statuses"])  # words, not enum members
    running = summary(data.pop, alive=True, now=7.5)
    assert running["elapsed"] == 7.5  # running: up to now
    assert running["statuses"] == {"running": 2, "failed": 1}
    assert summary(data.pop)["status"] == "running or interrupted"
    rows = member_rows(data.pop)
    assert [r["member"] for r in rows] == [0, 1, 2]
    assert rows[0]["config"] == {"lr": 0.4, "opt/m": 0.8} and rows[0]["last_edge"] == (1, 4)
    assert rows[2]["last_edge"] == (None, 2) and rows[2]["error"] == "ValueError: boom"
    assert [r["member"] for r in member_rows(data.pop, best_first=True, limit=2)] == [0, 1]
    json.dumps(json_safe(s), allow_nan=False)


def test_result_lineage_is_who_copied_whom_and_resets_are_apart() -> None:
    result = Result(log())
    assert [(e["member"], e["donor"], e["step"]) for e in result.lineage()] == [
        (1, 0, 2),
        (0, 1, 4),
    ]
    assert {e["kind"] for e in result.lineage()} == {"exploit"}
    assert result.rejuvenations() == [
        {"member": 2, "step": 2, "at": None, "reset": "full", "time": 2.0, "seq": 16}
    ]


def test_schedule_has_one_shape_and_flat_rows_have_their_own_name() -> None:
    result = Result(log())
    entries = result.schedule(0)
    assert entries == result.member(0).schedule
    assert [(e["step"], e["trained_by"], e["config"]["lr"]) for e in entries] == [
        (0, 0, 0.1),
        (2, 1, 0.4),
        (4, 0, 0.4),
    ]
    rows = result.schedule_rows(0)
    assert rows == result.member(0).schedule_rows()
    assert rows[-1] == {"step": 4, "trained_by": 0, "lr": 0.4, "opt/m": 0.8}
    # the old use (a hyperparameter by name on an entry) says where it went
    with pytest.raises(KeyError, match=r"'lr': a schedule entry .* schedule_rows\(\)"):
        entries[-1]["lr"]
    assert json.loads(json.dumps(entries))[0]["config"]["lr"] == 0.1


def test_values_for_people_and_for_json() -> None:
    assert [fmt(v) for v in (None, math.nan, 0.123456, 3, "sgd")] == [
        "-",
        "nan",
        "0.1235",
        "3",
        "sgd",
    ]
    assert fmt(None, missing="unknown") == "unknown" and fmt(1 / 3, digits=6) == "0.333333"
    assert num(math.inf) is None and num(1 / 3) == 0.3333333
    assert json_safe({"a": (1.0, math.nan), "b": [{"c": -math.inf}]}) == {
        "a": [1.0, None],
        "b": [{"c": None}],
    }
