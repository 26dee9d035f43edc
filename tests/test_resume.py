"""kill -9 of the driver, then resume: no report lost, nothing trained twice past a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import hyperpop as hp
from hyperpop.checkpoints import checkpoint_dir_for

HERE = Path(__file__).resolve().parent


def _env(tmp_path):
    env = dict(os.environ)
    env["BLOCK_FLAG"] = str(tmp_path / "blocked")
    env["BLOCK_RELEASE"] = str(tmp_path / "release")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early:\n{proc.stderr.read()}")
        if time.time() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat")
            if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return  # dead, waiting to be reaped by an init that may never reap it
        except (ProcessLookupError, FileNotFoundError):
            return
        time.sleep(0.02)
    raise AssertionError(f"worker {pid} outlived its driver")


def test_kill_9_then_resume_loses_nothing(tmp_path):
    db = tmp_path / "run.db"
    env = _env(tmp_path)
    cmd = [sys.executable, "-m", "hyperpop", "run", str(HERE / "resume_job.py"), "-q"]
    proc = subprocess.Popen(
        cmd + ["--storage", str(db)], env=env, stderr=subprocess.PIPE, text=True
    )
    # a member blocks inside its 4th interval (step 13): three generations are recorded
    _wait_for(tmp_path / "blocked", proc)
    before = hp.load(db)
    assert before.summary()["status"] == "running"
    worker = int((tmp_path / "blocked").read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert hp.load(db).summary()["status"] == "interrupted"
    # the workers die with their driver: none trains on, or writes checkpoints, as an orphan
    _wait_gone(worker)

    reports_before = [
        (e.seq, e.member, e.data["step"]) for e in before.events if e.kind == "reported"
    ]
    # the member that blocked (the first to train step 13: every member has tag 0, and the
    # queue picks among equals by worker affinity) is stuck at its third checkpoint; the
    # others are there too or wait at the next barrier
    steps = sorted(m.step for m in before.members)
    assert steps[0] == 12 and set(steps) <= {12, 16}

    out = subprocess.run(
        [sys.executable, "-m", "hyperpop", "resume", str(db), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    after = hp.load(db)
    reports_after = [
        (e.seq, e.member, e.data["step"]) for e in after.events if e.kind == "reported"
    ]
    # every report recorded before the kill is still there, unchanged, in the same place
    assert reports_after[: len(reports_before)] == reports_before
    # each member reports every step exactly once: the interrupted interval was redone from
    # the last checkpoint, and nothing recorded was trained twice
    for m in range(4):
        steps = [s for _, mem, s in reports_after if mem == m]
        assert steps == list(range(1, 25)), (m, steps)
    assert after.summary()["status"] == "finished" and after.population.resumes == 1
    assert all(m.status == "finished" and m.step == 24 for m in after.members)
    # checkpoints: exactly the live ones remain (orphans of the killed run were collected)
    ckpts = {p.name[: -len(".ckpt")] for p in checkpoint_dir_for(db).glob("*.ckpt")}
    assert ckpts == {m.checkpoint for m in after.members}
    assert "best member" in out.stdout


def test_resume_in_python_and_a_finished_run_is_returned_as_is(tmp_path):
    db = tmp_path / "run.db"
    env = _env(tmp_path)
    (tmp_path / "blocked").write_text("already")  # never block
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hyperpop",
            "run",
            str(HERE / "resume_job.py"),
            "-q",
            "--storage",
            str(db),
            "--steps",
            "8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    done = hp.load(db)
    again = hp.resume(db)  # nothing to do
    assert len(again.events) == len(done.events)
