"""Progress people can follow and per-member logs (issue 11, items 5 and 6).

Real driver processes and real stores; waits are for conditions, with timeouts.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from in_process import hyperpop_in_process
from rich.console import Console
from test_population import build, interval

import hyperpop as hp
from hyperpop.live import LiveView, PlainProgress, RunState
from hyperpop.store import events as ev
from hyperpop.store.events import Event

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "hyperpop"]

# a script as a user writes it: no main guard, prints from inside train()
TALKER = """
import sys, time
import hyperpop as hp


class Talker(hp.Trainable):
    def setup(self, config):
        self.x, self.tag = 0.0, config["tag"]

    def apply(self, config):
        pass

    def train(self):
        time.sleep(SLEEP)
        self.x += 1.0
        print(f"hello from {self.tag} at {self.x:g}")
        print(f"warning from {self.tag}", file=sys.stderr)
        return {"score": self.x}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


hp.run(Talker, {"tag": hp.choice(["a", "b"])}, metric="score", population=2, workers=2,
       budget=BUDGET, ready=READY, storage=DB, configs=[{"tag": "a"}, {"tag": "b"}],
       exploit=None, explore=None)
print("done")
"""


def _script(tmp_path: Path, *, sleep: float, budget: int, ready: int) -> tuple[Path, Path]:
    db = tmp_path / "talk.db"
    script = tmp_path / "talker.py"
    script.write_text(
        TALKER.replace("SLEEP", repr(sleep))
        .replace("BUDGET", str(budget))
        .replace("READY", str(ready))
        .replace("DB", repr(str(db)))
    )
    return script, db


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _wait(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except hp.StoreError:
            pass  # the store is not created yet
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- item 5: progress -------------------------------------------------------------------------
def test_status_sees_reports_between_ready_points(tmp_path):
    """3 s into a run with 0.3 s steps and ready=20, no ready point is reached, yet status
    counts the reports of the intervals in flight."""
    script, db = _script(tmp_path, sleep=0.3, budget=20, ready=20)
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), stderr=subprocess.PIPE
    )
    try:
        _wait(lambda: hp.load(db).summary()["unrecorded_reports"] >= 4, "4 counted", proc)
        summary = hp.load(db).summary()
        assert summary["reports"] == 0  # ready points are what they were: none yet
        out = hyperpop_in_process("status", db)
        assert "in flight" in out.stdout, out.stdout
        counted = json.loads(hyperpop_in_process("status", db, "--json").stdout)
        assert counted["unrecorded_reports"] >= 4 and counted["reports"] == 0
        # the dashboard folds the same log
        from hyperpop.dashboard.data import StoreSource

        source = StoreSource(db)
        try:
            view = source.refresh()
            assert view is not None and view.summary()["unrecorded_reports"] >= 4
            assert any((r["live_step"] or 0) > r["step"] for r in view.member_rows())
        finally:
            source.close()
    finally:
        proc.kill()
        proc.wait()


def test_a_run_into_a_pipe_prints_plain_lines_and_no_table(tmp_path):
    script, db = _script(tmp_path, sleep=0.0, budget=6, ready=2)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("hyperpop ")]
    assert lines, out.stderr
    assert "steps 12/12 (100%)" in lines[-1] and "2 finished" in lines[-1]
    for text in (out.stdout, out.stderr):
        assert "│" not in text and "┃" not in text  # no (cut) table in a file or a pipe


def _pop():
    return build(
        [
            Event(ev.RUN_STARTED, None, {"settings": {"mode": "max", "metric": "acc"}}),
            *[Event(ev.MEMBER_CREATED, i, {"config": {"lr": 0.1 * (i + 1)}}) for i in range(3)],
            *interval(0, 0, 4, 0.9, "a"),
            *interval(1, 0, 4, 0.3, "b"),
            Event(ev.PROGRESS, 2, {"step": 2}),
        ]
    )


def test_the_live_view_shows_elapsed_time_eta_and_who_trains_or_waits():
    view = LiveView()
    console = Console(record=True, width=160)
    state = RunState(running=frozenset({2}), queued=frozenset({1}), elapsed=65.0, max_steps=8)
    view._render(_pop(), RunState(elapsed=5.0, max_steps=8))  # the ETA's starting point
    console.print(view._render(_pop(), state))
    text = console.export_text()
    for needle in ("elapsed 0:01:05", "steps 10/24", "ETA", "1 training", "1 queued"):
        assert needle in text, (needle, text)
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    assert "queued" in rows["1"] and "training" in rows["2"] and "waiting" in rows["0"]


def test_plain_progress_writes_one_line_at_a_time():
    stream = io.StringIO()
    p = PlainProgress(every=0, stream=stream)
    p(_pop(), state=RunState(running=frozenset({2}), elapsed=3.0, max_steps=8))
    p.close()
    (line,) = stream.getvalue().splitlines()  # the last line is not repeated
    assert line.startswith("hyperpop 0:00:03 · steps 10/24 (42%)")
    assert "1 training" in line and "best acc=0.9 (member 0)" in line


# --- item 6: per-member logs ------------------------------------------------------------------
def test_each_members_output_goes_to_its_own_log(tmp_path):
    script, db = _script(tmp_path, sleep=0.2, budget=10, ready=2)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_a = Path(f"{db}-logs") / "member-0.log"
    _wait(log_a.exists, "member 0's log", proc)
    follow = subprocess.Popen(
        [*CLI, "logs", str(db), "--member", "0", "-f"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    followed, _ = follow.communicate(timeout=60)  # -f ends with the driver
    assert follow.returncode == 0
    assert "hello from a at 10" in followed and "hello from b" not in followed
    # the driver's terminal is left to the progress lines
    assert "hello from" not in out and "warning from" not in err and "done" in out
    text_a = log_a.read_text()
    assert "hello from a at 1\n" in text_a and "warning from a" in text_a
    assert "member 0: from step 0" in text_a
    text_b = (Path(f"{db}-logs") / "member-1.log").read_text()
    assert "hello from b at 10" in text_b and "from a" not in text_b
    shown = hyperpop_in_process("logs", db, "-m", 1, "-n", 2)  # `logs -f` above: a real process
    assert shown.stdout.splitlines() == ["hello from b at 10", "warning from b"]
    listed = hyperpop_in_process("logs", db)
    assert "member-0.log" in listed.stdout and "member-1.log" in listed.stdout


def test_the_dashboard_serves_a_members_log(tmp_path):
    import pytest

    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from hyperpop.dashboard.app import create_app

    script, db = _script(tmp_path, sleep=0.0, budget=4, ready=2)
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True, capture_output=True)
    with TestClient(create_app(db), base_url="http://localhost") as client:
        r = client.get("/logs/1")
        assert r.status_code == 200 and "hello from b at 4" in r.text
        assert client.get("/logs/7").status_code == 404
