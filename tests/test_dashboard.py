"""The dashboard's data, figures, report, server and commands, without a browser.

The browser tests are in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("plotly")
pytest.importorskip("starlette")

import warnings

from click.testing import CliRunner

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hyperpop.cli import main
from hyperpop.dashboard.app import create_app
from hyperpop.dashboard.data import RunView, StoreSource
from hyperpop.dashboard.figures import (
    lineage_spec,
    log_axis,
    page_data,
    payload,
    schedule_spec,
    scores_spec,
)
from hyperpop.dashboard.report import write_report
from hyperpop.ranking import Ranking
from hyperpop.results import Result
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore


def synthetic_events(members: int = 3, generations: int = 4, ready: int = 2) -> list[Event]:
    """A small synchronous PBT log: member 0 is best, the last member copies it each time."""
    out = [
        Event(ev.RUN_STARTED, None, {"settings": {"metric": "acc", "mode": "max"}}, 1.0),
    ]
    for m in range(members):
        cfg = {"lr": 0.1 * (m + 1), "opt": {"name": f"sgd{m}"}}
        out.append(Event(ev.MEMBER_CREATED, m, {"config": cfg}, 1.0))
    score = dict.fromkeys(range(members), 0.0)
    step = 0
    for g in range(generations):
        for m in range(members):
            for i in range(ready):
                score[m] += 1.0 / (m + 1)
                value = float("nan") if (m == 1 and g == 0 and i == 0) else score[m]
                out.append(Event(ev.REPORTED, m, {"step": step + i + 1, "score": value}, 2.0))
            out.append(
                Event(ev.CHECKPOINTED, m, {"step": step + ready, "checkpoint": f"m{m}-{g}"}, 2.0)
            )
        step += ready
        loser = members - 1
        out.append(
            Event(
                ev.EXPLOITED,
                loser,
                {"donor": 0, "step": step, "checkpoint": f"m0-{g}", "at": step},
                3.0,
            )
        )
        score[loser] = score[0]
        out.append(
            Event(ev.EXPLORED, loser, {"config": {"lr": 0.05 * g, "opt": {"name": "adam"}}}, 3.0)
        )
    out.append(Event(ev.FAILED, 1, {"step": step, "error": "Traceback...\nValueError: boom"}, 4))
    out.append(Event(ev.REJUVENATED, 1, {"config": {"lr": 0.3, "opt": {"name": "sgd1"}}}, 4))
    for m in range(members):
        out.append(Event(ev.FINISHED, m, {"step": step}, 5.0))
    out.append(Event(ev.RUN_FINISHED, None, {"reason": "budget"}, 5.0))
    for i, e in enumerate(out, 1):
        e.seq = i
    return out


def members_of(part: dict, fields: tuple[str, ...], keyed: str) -> dict[int, dict]:
    """A per-member part of the page's data, split member by member (as the page does)."""
    out: dict[int, dict] = {}
    at = 0
    for mid, n in zip(part["members"], part["count"]):
        line = {f: part[f][at : at + n] for f in fields}
        line[keyed] = {k: v[at : at + n] for k, v in part.get(keyed, {}).items()}
        out[mid] = line
        at += n
    return out


def write_store(path: Path, events: list[Event]) -> Path:
    store = SQLiteStore(path, write=True)
    store.append([Event(e.kind, e.member, e.data, e.time) for e in events])
    store.close()
    return path


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return write_store(tmp_path / "run.db", synthetic_events())


@pytest.fixture()
def bad_stores(tmp_path: Path) -> dict[str, Path]:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not an sqlite file\x00" * 100)
    newer = write_store(tmp_path / "newer.db", synthetic_events())
    with sqlite3.connect(newer) as c:
        c.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    broken = tmp_path / "broken.db"
    write_store(broken, [*synthetic_events()[:3], Event(ev.REPORTED, 42, {"step": 1}, 1.0)])
    return {
        "missing": tmp_path / "missing.db",
        "corrupt": corrupt,
        "newer": newer,
        "inconsistent": broken,
    }


MESSAGES = {
    "missing": "no hyperpop store",
    "corrupt": "is not a hyperpop store",
    "newer": "upgrade hyperpop",
    "inconsistent": "inconsistent",
}


def test_view_folds_scores_exploits_and_schedules() -> None:
    view = RunView(synthetic_events())
    assert sorted(view.scores) == [0, 1, 2]
    assert len(view.exploits) == 4 and all(e["donor"] == 0 for e in view.exploits)
    assert view.params == ["lr", "opt/name"]
    # the receiver's line jumps to the donor's score at each exploit
    jumps = [p for p in view.scores[2] if p[0] in (2, 4, 6, 8)]
    assert (2, view.exploits[0]["score"]) in jumps
    assert view.exploits[0]["score"] == pytest.approx(2.0)  # member 0's score at step 2
    assert view.rejuvenations == [{"member": 1, "at": 8, "score": pytest.approx(4.0)}]
    s = view.summary()
    assert (s["status"], s["members"], s["reports"], s["exploits"]) == ("finished", 3, 24, 4)
    assert (s["failures"], s["best_member"], s["rejuvenations"]) == (1, 0, 1)
    unfinished = RunView(synthetic_events()[:20])
    assert [unfinished.status(a) for a in (True, False, None)] == [
        "running",
        "interrupted",
        "running or interrupted",
    ]
    rows = {r["member"]: r for r in view.member_rows()}
    assert rows[2]["parent"] == 0 and rows[2]["exploits"] == 4
    assert rows[1]["error"] == "ValueError: boom" and rows[1]["failures"] == 1
    assert rows[2]["config"] == {"lr": pytest.approx(0.15), "opt/name": "adam"}


def test_incremental_updates_equal_one_fold() -> None:
    events = synthetic_events()
    whole = payload(RunView(events))
    view = RunView()
    for i in range(0, len(events), 7):
        view.update(events[i : i + 7])
        json.dumps(payload(view), allow_nan=False)  # JSON-safe at every point (NaN → null)
    assert payload(view) == whole


def test_figures_count_members_and_edges() -> None:
    view = RunView(synthetic_events())
    scores = scores_spec(view)
    members = [t for t in scores["data"] if t["meta"]["kind"] == "member"]
    assert sorted(t["meta"]["member"] for t in members) == [0, 1, 2]
    assert all(t["line"]["width"] < 2 for t in members)  # no member's own line is the best's
    lineage = next(t for t in scores["data"] if t["meta"]["kind"] == "lineage")
    assert lineage["meta"]["member"] == 0 and lineage["x"] == list(range(1, 9))
    assert [t["meta"]["count"] for t in scores["data"] if t["meta"]["kind"] == "exploits"] == [4]
    assert None in [y for t in members if t["meta"]["member"] == 1 for y in t["y"]]  # NaN, gap
    sched = schedule_spec(view)
    pops = [t for t in sched["data"] if t["meta"]["kind"] == "population"]
    assert [t["meta"]["param"] for t in pops] == ["lr", "opt/name"]
    assert all(t["meta"]["members"] == 3 for t in pops)
    assert {t["yaxis"] for t in sched["data"]} == {"y", "y2"}
    assert "type" not in sched["layout"]["yaxis"]
    events = synthetic_events()
    events[0].data["space"] = {"lr": {"type": "float", "low": 0.01, "high": 1, "log": True}}
    assert schedule_spec(RunView(events))["layout"]["yaxis"]["type"] == "log"
    # a nested parameter: the stored space is flat, keyed by the full path
    events = synthetic_events()
    events[0].data["space"] = {"opt/name": {"type": "float", "low": 0.01, "high": 1, "log": True}}
    assert schedule_spec(RunView(events))["layout"]["yaxis2"]["type"] == "log"
    tree = {t["meta"]["kind"]: t for t in lineage_spec(view)["data"]}
    assert tree["edges"]["meta"]["count"] == 4 and tree["receivers"]["meta"]["count"] == 4
    assert set(tree["nodes"]["y"]) == {0, 1, 2}
    assert tree["rejuvenations"]["meta"]["count"] == 1
    assert tree["best"]["meta"]["member"] == 0


def overtaking_events() -> list[Event]:
    """Member 1 starts badly (loss 9..6), copies member 0's weights at step 4 and then beats
    it: the best member is 1, yet its first four steps were trained by member 0. Every report
    also carries ``acc`` and a string ``phase``; reports are recorded at their interval's end."""

    def reports(member: int, start: int, losses: list[float], t: float) -> list[Event]:
        out = []
        for i, loss in enumerate(losses, start + 1):
            metrics = {"loss": loss, "acc": 1 - loss / 10, "phase": "train"}
            out.append(
                Event(ev.REPORTED, member, {"step": i, "score": loss, "metrics": metrics}, t)
            )
        end = start + len(losses)
        return out + [
            Event(ev.CHECKPOINTED, member, {"step": end, "checkpoint": f"{member}-{end}"}, t)
        ]

    events = [
        Event(ev.RUN_STARTED, None, {"settings": {"metric": "loss", "mode": "min"}}, 0.0),
        Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.1}}, 0.0),
        Event(ev.MEMBER_CREATED, 1, {"config": {"lr": 0.2}}, 0.0),
        *reports(0, 0, [4.0, 3.0, 2.0, 1.0], 10.0),
        *reports(1, 0, [9.0, 8.0, 7.0, 6.0], 12.0),
        Event(ev.EXPLOITED, 1, {"donor": 0, "step": 4, "checkpoint": "0-4", "at": 4}, 13.0),
        Event(ev.EXPLORED, 1, {"config": {"lr": 0.3}}, 14.0),
        *reports(1, 4, [0.9, 0.8, 0.7, 0.5], 20.0),
        *reports(0, 4, [0.95, 0.9, 0.8, 0.6], 21.0),
    ]
    for i, e in enumerate(events, 1):
        e.seq = i
    return events


def test_score_plot_highlights_the_best_lineage_not_the_best_slot() -> None:
    view = RunView(overtaking_events())
    assert view.pop.best().id == 1
    spec = scores_spec(view)
    by = {(t["meta"]["kind"], t["meta"].get("member")): t for t in spec["data"]}
    own = by[("member", 1)]
    assert own["y"][:4] == [9.0, 8.0, 7.0, 6.0]  # the slot's weights before the copy
    lineage = by[("lineage", 1)]
    assert lineage["x"] == list(range(1, 9))
    assert lineage["y"] == [4.0, 3.0, 2.0, 1.0, 0.9, 0.8, 0.7, 0.5]  # member 0's, then its own
    assert lineage["text"][:4] == ["trained by member 0"] * 4
    assert lineage["line"]["width"] == 3 and lineage["name"] == "best member 1's lineage"
    assert spec["data"][-1]["meta"]["kind"] == "exploits"  # markers on top of everything


def test_the_page_and_plots_show_the_best_model_even_when_it_is_an_earlier_checkpoint() -> None:
    """Member 1 reaches loss 0.5 at step 8, then drifts to 6.0 by step 12, and member 0 ends
    at 0.6: the best model is member 1's checkpoint of step 8 (as result.best says), so its path
    ends at step 8, not at member 1 now."""
    events = overtaking_events()
    for i, loss in enumerate([3.0, 4.0, 5.0, 6.0], 9):
        events.append(Event(ev.REPORTED, 1, {"step": i, "score": loss}, 30.0))
    events.append(Event(ev.CHECKPOINTED, 1, {"step": 12, "checkpoint": "1-12"}, 30.0))
    for i, e in enumerate(events, 1):
        e.seq = i
    view = RunView(events)
    best = Result(events).best
    assert (best.id, best.step, best.checkpoint) == (1, 8, "1-8")
    data = page_data(view)
    assert {k: data["best"][k] for k in ("member", "step", "checkpoint", "kept")} == {
        "member": 1,
        "step": 8,
        "checkpoint": "1-8",
        "kept": True,
    }
    assert data["lineage"]["step"] == list(range(1, 9))
    assert data["lineage"]["by"] == [0] * 4 + [1] * 4
    assert data["lineage"]["y"]["loss"][-1] == 0.5
    lineage = next(t for t in scores_spec(view)["data"] if t["meta"]["kind"] == "lineage")
    assert lineage["x"] == list(range(1, 9)) and lineage["y"][-1] == 0.5
    assert "checkpoint at step 8" in lineage["name"]
    (schedule,) = (t for t in schedule_spec(view)["data"] if t["meta"]["kind"] == "best")
    assert schedule["x"][-1] == 8 and schedule["text"][-1] == "the checkpoint kept"
    tree = next(t for t in lineage_spec(view)["data"] if t["meta"]["kind"] == "best")
    assert tree["x"][-1] == 8


def test_every_numeric_metric_is_selectable() -> None:
    view = RunView(overtaking_events())
    assert view.metric_names() == ["loss", "acc"]  # the optimised first; "phase" is text
    spec = scores_spec(view, metric="acc")
    by = {(t["meta"]["kind"], t["meta"].get("member")): t for t in spec["data"]}
    assert by[("member", 0)]["y"] == [0.6, 0.7, 0.8, 0.9, 0.905, 0.91, 0.92, 0.94]
    # the jump at the copy lands on the donor's acc at step 4, the marker too
    assert by[("member", 1)]["y"][4] == 0.9 and by[("exploits", None)]["y"] == [0.9]
    assert by[("lineage", 1)]["y"] == [0.6, 0.7, 0.8, 0.9, 0.91, 0.92, 0.93, 0.95]
    assert spec["layout"]["yaxis"]["title"]["text"] == "acc"
    assert all(t["meta"]["metric"] == "acc" for t in spec["data"])
    with pytest.raises(ValueError, match=r"no metric 'phase' in this run; it reported \['loss'"):
        scores_spec(view, metric="phase")
    # the page gets the chosen metric's values (a report every metric's) beside the steps
    data = page_data(view, metrics=["acc"])
    assert data["metric"] == "loss" and data["metrics"] == ["loss", "acc"]
    assert list(data["series"]["y"]) == ["acc"] and "t" not in data["series"]
    lines = members_of(data["series"], ("step",), "y")
    for t in spec["data"]:
        if t["meta"]["kind"] == "member":
            line = lines[t["meta"]["member"]]
            assert (line["step"], line["y"]["acc"]) == (t["x"], t["y"])
    assert data["lineage"]["y"]["acc"] == by[("lineage", 1)]["y"]
    assert data["exploits"]["y"]["acc"] == [0.9]
    assert set(payload(view)["series"]["y"]) == {"loss", "acc"}
    json.dumps(payload(view), allow_nan=False)


def test_wall_time_axis_spreads_an_intervals_steps_over_its_time() -> None:
    view = RunView(overtaking_events())
    spec = scores_spec(view, x="time")
    assert spec["layout"]["xaxis"]["title"]["text"] == "wall time (s)"
    by = {(t["meta"]["kind"], t["meta"].get("member")): t for t in spec["data"]}
    # member 0: created at 0, four steps recorded together at 10, then four more at 21
    assert by[("member", 0)]["x"] == [2.5, 5.0, 7.5, 10.0, 12.75, 15.5, 18.25, 21.0]
    # member 1: its first interval, the copy at 13, then steps from its explore at 14 to 20
    assert by[("member", 1)]["x"] == [3.0, 6.0, 9.0, 12.0, 13.0, 15.5, 17.0, 18.5, 20.0]
    assert by[("lineage", 1)]["x"] == [2.5, 5.0, 7.5, 10.0, 15.5, 17.0, 18.5, 20.0]
    assert by[("exploits", None)]["x"] == [13.0]
    data = page_data(view, times=True)  # seconds since the run started; the page picks the unit
    lines = members_of(data["series"], ("step", "t"), "y")
    assert [lines[m]["t"] for m in (0, 1)] == [by[("member", m)]["x"] for m in (0, 1)]
    assert data["lineage"]["t"] == by[("lineage", 1)]["x"] and data["exploits"]["t"] == [13.0]
    assert data["clock"]["span"] == 21.0
    # long runs count in minutes or hours
    events = overtaking_events()
    for e in events[3:]:
        e.time *= 60
    assert scores_spec(RunView(events), x="time")["layout"]["xaxis"]["title"]["text"] == (
        "wall time (min)"
    )
    with pytest.raises(ValueError, match="x must be one of"):
        scores_spec(view, x="epoch")


def test_y_axis_zooms_to_where_the_scores_are() -> None:
    from hyperpop.dashboard.figures import robust_range

    rng = np.random.default_rng(0)
    scores = list(0.9 + 0.1 * rng.random(200))
    assert robust_range(scores, Ranking("max")) is None  # nothing to cut: autorange
    lo, hi = robust_range([-50.0, -20.0, *scores], Ranking("max"))  # two early diverged points
    assert 0.85 < lo < 0.92 and hi > max(scores)  # the best values always show
    lo, hi = robust_range([*scores, 40.0, 80.0], Ranking("min"))  # a loss that started high
    assert lo < min(scores) and 0.98 < hi < 1.05
    assert robust_range([1.0, float("nan"), None], Ranking("max")) is None  # too few to say
    # in the figure: a range the page can drop for the full one
    events = synthetic_events()
    events.insert(5, Event(ev.REPORTED, 0, {"step": 1, "score": -1000.0}, 2.0))
    for i, e in enumerate(events, 1):
        e.seq = i
    yaxis = scores_spec(RunView(events))["layout"]["yaxis"]
    assert yaxis["autorange"] is False and yaxis["range"][0] > -1000
    assert scores_spec(RunView(synthetic_events()))["layout"]["yaxis"]["autorange"] is True


def test_big_tree_draws_nodes_as_a_heatmap() -> None:
    events = synthetic_events(members=40, generations=80)
    tree = {t["meta"]["kind"]: t for t in lineage_spec(RunView(events))["data"]}
    assert tree["nodes"]["type"] == "heatmap" and tree["nodes"]["meta"]["members"] == 40
    assert len(tree["nodes"]["z"]) == 40 and "receivers" not in tree


def test_result_plot_methods_return_figures(db: Path) -> None:
    import plotly.graph_objects as go

    result = Result.load(db)
    for fig in (result.plot_scores(), result.plot_schedule(), result.plot_lineage()):
        assert isinstance(fig, go.Figure) and len(fig.data) >= 3


def test_report_is_one_offline_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    res = CliRunner().invoke(main, ["report", str(db), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "opens offline" in res.output
    from hyperpop.dashboard.report import plotly_js

    text = out.read_text()
    assert plotly_js() in text  # inlined; the rest of the page links nothing either
    rest = text.replace(plotly_js(), "").replace('<link rel="icon" href="data:,">', "")
    assert "<script src=" not in rest and "<link" not in rest and "http" not in rest
    assert "Plotly" in text and '"series"' in text
    # the page's data, once: every metric's values and the wall times beside one copy of the steps
    start = text.index("window.HYPERPOP = ") + len("window.HYPERPOP = ")
    config, _ = json.JSONDecoder().raw_decode(text[start:].replace("<\\/", "</"))
    view = RunView(Result.load(db).events)
    assert config["view"] == json.loads(json.dumps(payload(view, False)))
    assert list(config["view"]["series"]["y"]) == view.metric_names()
    assert text.count('"step":[1,2,3,4,5,6,7,8]') == 1
    assert write_report(db) == db.with_suffix(".html")  # default: beside the store


def test_api_serves_view_then_only_summary(db: Path) -> None:
    with TestClient(create_app(db), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 200 and 'src="static/plotly.min.js"' in page.text
        js = client.get("/static/plotly.min.js")
        assert js.status_code == 200 and len(js.content) > 1_000_000
        assert client.get("/static/dashboard.js").status_code == 200
        assert client.get("/static/../app.py").status_code == 404
        first = client.get("/api/view?since=-1").json()
        assert first["view"]["summary"]["members"] == 3
        assert len(first["view"]["members"]) == 3
        again = client.get(f"/api/view?since={first['seq']}").json()
        assert "view" not in again and again["summary"]["status"] == "finished"


def test_live_source_reads_only_new_events(tmp_path: Path) -> None:
    events = synthetic_events()
    store = SQLiteStore(tmp_path / "live.db", write=True)
    store.append([Event(e.kind, e.member, e.data, e.time) for e in events[:20]])
    source = StoreSource(tmp_path / "live.db")
    assert source.refresh().seq == 20
    assert source.refresh().summary(source.alive)["status"] == "running"  # our lease
    store.append([Event(e.kind, e.member, e.data, e.time) for e in events[20:]])
    view = source.refresh()
    assert view.seq == len(events) and view.summary(source.alive)["status"] == "finished"
    store.close()
    source.close()


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_bad_stores_give_clear_messages(bad_stores: dict[str, Path], kind: str) -> None:
    path = bad_stores[kind]
    runner = CliRunner()
    for args in (["dashboard", str(path)], ["report", str(path), "-o", str(path) + ".html"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 1, res.output
        assert MESSAGES[kind] in res.output and "Traceback" not in res.output
        assert res.output.count("\n") <= 2
    with TestClient(create_app(path), base_url="http://localhost") as client:
        page = client.get("/")
        assert page.status_code == 503
        assert MESSAGES[kind] in page.text and "Traceback" not in page.text
        assert MESSAGES[kind] in client.get("/api/view").json()["error"]


def test_source_starts_over_when_the_store_is_replaced(tmp_path: Path) -> None:
    path = write_store(tmp_path / "run.db", synthetic_events(members=3))
    source = StoreSource(path)
    assert source.refresh().summary()["members"] == 3
    for suffix in ("", "-wal", "-shm"):  # what `hyperpop run --overwrite` does
        Path(str(path) + suffix).unlink(missing_ok=True)
    assert source.refresh() is None and "no hyperpop store" in source.error
    write_store(path, synthetic_events(members=2, generations=1))
    view = source.refresh()
    assert view is not None and view.summary()["members"] == 2
    assert view.seq == len(synthetic_events(members=2, generations=1))
    source.close()


def test_dashboard_command_serves_until_stopped(db: Path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperpop", "dashboard", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.05)
        assert r.json() == {"ok": True}
        view = httpx.get(f"http://127.0.0.1:{port}/api/view", timeout=10).json()
        assert view["summary"]["members"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert f"http://localhost:{port}/" in out and "Traceback" not in out
    assert os.path.exists(db)


# --- the page's data: what changed since the event the page has --------------------------------
def merge(page: dict | None, data: dict) -> dict:
    """What the page script does with a response (dashboard.js ``merge``): per-member arrays cut
    at ``start`` and grown, whole parts replaced."""
    if page is None or data["since"] == -1:
        page = {"lines": {}, "configs": {}, "nodes": {}, "rows": {}, "exploits": {}, "rj": {}}
    if data["series_since"] == -1:
        page["lines"], page["exploits"] = {}, {}

    def grow(store: dict, part: dict, fields: tuple[str, ...], keyed: str) -> None:
        for mid, line in members_of(part, fields, keyed).items():
            start = part["start"][part["members"].index(mid)]
            old = store.setdefault(mid, {})
            for f in fields:
                old[f] = old.get(f, [])[:start] + line[f]
            for k, v in line[keyed].items():
                old.setdefault(keyed, {})[k] = old.get(keyed, {}).get(k, [])[:start] + v

    grow(page["lines"], data["series"], ("step", "t") if "t" in data["series"] else ("step",), "y")
    grow(page["configs"], data["configs"], ("step",), "values")
    grow(page["nodes"], data["nodes"], ("step", "score"), "none")
    for name, key in (("exploits", "exploits"), ("rj", "rejuvenations")):
        part = data[key]
        for f, v in part.items():
            if f == "start":
                continue
            if isinstance(v, dict):
                for k, vv in v.items():
                    old = page[name].setdefault(f, {}).get(k, [])
                    page[name][f][k] = old[: part["start"]] + vv
            else:
                page[name][f] = page[name].get(f, [])[: part["start"]] + v
    page["rows"].update({r["member"]: r for r in data["members"]})
    for k in ("seq", "summary", "lineage", "best", "params", "clock"):
        page[k] = data[k]
    return page


@pytest.mark.parametrize("events", [synthetic_events(), overtaking_events()], ids=["sync", "copy"])
def test_the_page_merges_what_changed_into_the_whole(events: list[Event]) -> None:
    """Fed the log a few events at a time, the page (sent only what changed since the event it
    has) holds what one whole answer holds, wall times of finished intervals included."""
    view = RunView()
    page = None
    metrics = None
    for i in range(0, len(events), 3):
        view.update(events[i : i + 3])
        metrics = view.metric_names()
        since = -1 if page is None else page["seq"]
        page = merge(page, page_data(view, since=since, metrics=metrics, times=True))
        whole = merge(None, page_data(view, metrics=metrics, times=True))
        assert page == whole, f"after event {view.seq}"
    assert page is not None and page["lines"][0]["y"][metrics[0]]
    # a late report sends one member's points of its open interval, not the run
    seq = view.seq
    view.update([Event(ev.REPORTED, 0, {"step": 99, "score": 1.0}, 99.0, seq + 1)])
    delta = page_data(view, since=seq)
    assert delta["series"]["members"] == [0] and delta["series"]["count"] == [1]
    assert [r["member"] for r in delta["members"]] == [0]
    assert delta["configs"]["members"] == delta["nodes"]["members"] == []
    assert delta["exploits"]["member"] == []


def test_api_answers_what_changed_since_the_pages_event(tmp_path: Path) -> None:
    events = synthetic_events()
    store = SQLiteStore(tmp_path / "live.db", write=True)
    store.append([Event(e.kind, e.member, e.data, e.time) for e in events[:20]])
    with TestClient(create_app(tmp_path / "live.db"), base_url="http://localhost") as client:
        first = client.get("/api/view").json()
        view = first["view"]
        assert first["seq"] == 20 and view["since"] == -1 and len(view["members"]) == 3
        assert sum(view["series"]["count"]) == sum(
            len(v) for v in RunView(events[:20]).scores.values()
        )
        same = f"since=20&epoch={view['epoch']}"
        assert "view" not in client.get(f"/api/view?{same}").json()  # nothing new: the summary
        store.append([Event(e.kind, e.member, e.data, e.time) for e in events[20:30]])
        delta = client.get(f"/api/view?{same}").json()["view"]
        assert delta["since"] == 20 and delta["seq"] == 30
        assert sum(delta["series"]["count"]) < sum(view["series"]["count"])
        # another metric or the time axis: its series whole, the rest still what changed
        other = client.get(f"/api/view?{same}&series_since=-1&x=time").json()["view"]
        assert other["series_since"] == -1 and other["since"] == 20 and "t" in other["series"]
        assert len(other["series"]["t"]) == sum(
            len(v) for v in RunView(events[:30]).scores.values()
        )
        # data of another store (replaced by --overwrite) is sent again whole
        again = client.get("/api/view?since=20&epoch=other").json()["view"]
        assert again["since"] == -1 and len(again["members"]) == 3
        unknown = client.get(f"/api/view?{same}&metric=nope&series_since=-1").json()["view"]
        assert list(unknown["series"]["y"]) == ["acc"]  # the optimised one, not an error
        assert client.get("/api/view?since=abc").json()["view"]["since"] == -1
    store.close()


def test_a_metric_spanning_decades_gets_a_log_axis() -> None:
    """Issue 19: a loss from 1 to 0.001 was flat on a linear axis after the first steps."""
    assert log_axis([1.0, 0.1, 0.01, 0.001]) and not log_axis([1.0, 0.5, 0.2])
    assert not log_axis([1.0, 0.001, 0.0]) and not log_axis([-1.0, -0.001])  # not all positive
    events = overtaking_events()
    for e in events:
        if e.kind == ev.REPORTED:  # a loss falling from 4 to 0.0005
            e.data["score"] = e.data["metrics"]["loss"] = 10.0 ** (-e.data["step"] / 2) * 4
    spec = scores_spec(RunView(events))
    assert spec["layout"]["yaxis"]["type"] == "log"
    assert scores_spec(RunView(overtaking_events()))["layout"]["yaxis"]["type"] == "linear"
    from hyperpop.dashboard.figures import robust_range

    values = [1e-3 * (1 + k / 100) for k in range(40)] + [1e3, 1e4]  # two diverged members
    lo, hi = robust_range(values, Ranking("min"), log=True)  # in decades (plotly log axes)
    assert -3.1 < lo < -3 and -3 < hi < -2.5
