"""The dashboard's data, figures, report, server and commands, without a browser.

The browser tests are in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("plotly")
pytest.importorskip("starlette")

import warnings  # noqa: E402

from click.testing import CliRunner  # noqa: E402

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hyperpop.cli import main  # noqa: E402
from hyperpop.dashboard.app import create_app  # noqa: E402
from hyperpop.dashboard.data import RunView, StoreSource  # noqa: E402
from hyperpop.dashboard.figures import (  # noqa: E402
    lineage_spec,
    payload,
    schedule_spec,
    scores_spec,
)
from hyperpop.dashboard.report import write_report  # noqa: E402
from hyperpop.results import Result  # noqa: E402
from hyperpop.store import events as ev  # noqa: E402
from hyperpop.store.events import Event  # noqa: E402
from hyperpop.store.sqlite import SQLiteStore  # noqa: E402


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
    assert members[-1]["meta"]["member"] == 0  # the best is drawn last (on top), thick
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
    events[0].data["space"] = {"opt/name": {"type": "float", "low": 0.01, "high": 1, "log": True}}
    assert schedule_spec(RunView(events))["layout"]["yaxis2"]["type"] == "log"
    tree = {t["meta"]["kind"]: t for t in lineage_spec(view)["data"]}
    assert tree["edges"]["meta"]["count"] == 4 and tree["receivers"]["meta"]["count"] == 4
    assert set(tree["nodes"]["y"]) == {0, 1, 2}
    assert tree["rejuvenations"]["meta"]["count"] == 1
    assert tree["best"]["meta"]["member"] == 0


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
    rest = text.replace(plotly_js(), "")
    assert "<script src=" not in rest and "<link" not in rest and "http" not in rest
    assert "Plotly" in text and '"figures"' in text
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
