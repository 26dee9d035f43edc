"""Never lose a run: the faults of issue 10 (items 1-5 and 14), each reproduced with a real
SQLite store; with real processes where the fault needs them (a killed driver or worker, a hung
interval, the writer's lock), on the simulated backend where it is the driver's own work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from in_process import hyperpop_in_process
from reliability_trainables import Clashing, Hangs, LeavesLitter, Walker

import hyperpop as hp
from hyperpop.backends.local import LocalBackend
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.checkpoints import CheckpointStore, checkpoint_dir_for
from hyperpop.store.sqlite import SQLiteStore
from hyperpop.strategies.exploit import Truncation

HERE = Path(__file__).resolve().parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _reports(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        s = SQLiteStore(db)
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    try:
        return sum(1 for e in s.read() if e.kind == "reported")
    finally:
        s.close()


def _wait(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the process ended before {what}:\n{err}")
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _state(pid: int) -> str:
    """The kernel's state letter of a process (``Z``: a zombie), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _walker_run(db: Path, **kw) -> subprocess.Popen:
    """A driver in its own process: a small run of :class:`Walker` writing ``db``."""
    settings = dict(metric="score", population=4, workers=2, budget=30, ready=3, seed=1)
    settings.update(kw)
    code = (
        "import hyperpop as hp\n"
        "from reliability_trainables import Walker\n"
        "if __name__ == '__main__':\n"
        f"    hp.run(Walker, {{'lr': hp.uniform(0.1, 1.0), 'sleep': 0.01}}, storage={str(db)!r},"
        f" **{settings!r})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=_env(), stderr=subprocess.PIPE, text=True
    )


# --- 14: the writer lease is a kernel lock -------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_zombie_driver_killed_with_sigkill_does_not_block_resume(tmp_path):
    db = tmp_path / "run.db"
    proc = _walker_run(db)
    _wait(lambda: _reports(db) >= 8, "8 reports", proc)
    os.kill(proc.pid, signal.SIGKILL)
    # not reaped: the driver stays a zombie, as under an init that never reaps
    _wait(lambda: _state(proc.pid) == "Z", "the driver to be a zombie")
    _wait(lambda: hp.load(db).summary()["status"] == "interrupted", "status 'interrupted'")
    result = hp.resume(db)
    assert _state(proc.pid) == "Z"  # still unreaped, and it blocked nothing
    assert result.summary()["status"] == "finished"
    assert all(m.step == 30 and m.status == "finished" for m in result.members)
    proc.wait()


def test_readers_tell_a_live_writer_through_the_lock(tmp_path):
    db = tmp_path / "r.db"
    code = (
        "import sys; from hyperpop.store.sqlite import SQLiteStore; "
        f"s = SQLiteStore({str(db)!r}, write=True); print('ready', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader = SQLiteStore(db)
        assert reader.writer_alive() is True
        assert reader.writer()["pid"] == proc.pid  # kept as information
        # a reader's check never makes a writer's start fail
        for _ in range(50):
            assert reader.writer_alive() is True
        reader.close()
    finally:
        proc.kill()
    _wait(lambda: _state(proc.pid) in ("Z", "gone"), "the writer to die")
    reader = SQLiteStore(db)
    # the kernel drops the lock as it tears the process down (a moment after SIGKILL)
    _wait(lambda: reader.writer_alive() is False, "the lease to be released")
    assert reader.writer() is None
    reader.close()
    proc.wait()


def test_stop_interrupts_a_live_driver_and_refuses_a_dead_one(tmp_path):
    db = tmp_path / "run.db"
    proc = _walker_run(db, budget=200)
    _wait(lambda: _reports(db) >= 8, "8 reports", proc)
    # in this process (a real `hyperpop stop` process is tests/test_steer.py's): a request
    # through the store, as from any other process
    out = hyperpop_in_process("stop", db)
    assert out.returncode == 0 and f"pid {proc.pid}" in out.stdout, out.stderr
    proc.wait(timeout=60)
    _wait(lambda: hp.load(db).summary()["status"] == "interrupted", "status 'interrupted'")
    out = hyperpop_in_process("stop", db)
    assert out.returncode == 1 and "no driver is writing" in out.stderr


# --- 3: two --overwrite starts on one path -------------------------------------------------
_OVERWRITE = """
import os, pathlib, sys, time
import hyperpop as hp
from reliability_trainables import Blocks

db, tag, hold = sys.argv[1], sys.argv[2], sys.argv[3] == "hold"
here = pathlib.Path(db).parent
if hold:  # pause between deciding to delete the old run and deleting it
    unlink = pathlib.Path.unlink

    def slow_unlink(self, missing_ok=False):
        if str(self) == db and not (here / "go").exists():
            (here / "deleting").write_text("")
            while not (here / "go").exists():
                time.sleep(0.01)
        return unlink(self, missing_ok=missing_ok)

    pathlib.Path.unlink = slow_unlink
if __name__ == "__main__":
    space = {"flag": str(here / f"training-{tag}"), "release": str(here / "go")}
    hp.run(Blocks, space, metric="score", population=1, workers=1, budget=1, storage=db,
           overwrite=True)
"""


def test_two_overwrite_starts_at_once_never_both_run(tmp_path):
    db = tmp_path / "run.db"
    script = tmp_path / "overwrite.py"
    script.write_text(_OVERWRITE)

    def start(tag: str, hold: bool) -> subprocess.Popen:
        args = [sys.executable, str(script), str(db), tag, "hold" if hold else "-"]
        return subprocess.Popen(args, env=_env(), stderr=subprocess.PIPE, text=True)

    first = start("a", hold=True)  # about to delete whatever is at db
    _wait(lambda: (tmp_path / "deleting").exists(), "the first start to reach its delete", first)
    second = start("b", hold=False)
    # the second either refuses at once, or (the bug) starts its run, which the first deletes
    _wait(
        lambda: second.poll() is not None or (tmp_path / "training-b").exists(),
        "the second start to refuse or train",
    )
    (tmp_path / "go").write_text("")
    codes = (first.wait(timeout=120), second.wait(timeout=120))
    errors = second.stderr.read()
    assert codes == (0, 1), (codes, errors, first.stderr.read())
    assert "StoreLockedError" in errors and f"pid {first.pid}" in errors
    (started,) = [e for e in hp.load(db).events if e.kind == "run_started"]
    assert started.data["pid"] == first.pid


# --- 1: the store and the checkpoints never disagree ---------------------------------------
class InterruptedTruncation(Truncation):
    """Truncation whose ``select`` raises KeyboardInterrupt on its ``at``-th call (as Ctrl-C or a
    bug in a custom strategy would, in the middle of a decision)."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def select(self, member, ctx):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().select(member, ctx)


def _missing_checkpoints(db: Path) -> list[str]:
    live = hp.load(db).population.live_checkpoints()
    root = checkpoint_dir_for(db)
    return sorted(b for b in live if not (root / f"{b}.ckpt").exists())


@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("at", [3, 10, 17])
def test_an_exception_inside_a_decision_never_deletes_a_checkpoint_the_log_names(
    tmp_path, at, synchronous
):
    db = tmp_path / "run.db"
    space = {"lr": hp.uniform(0.1, 1.0)}
    kw = dict(metric="score", population=4, workers=1, budget=hp.Steps(40), storage=db)
    kw["synchronous"] = synchronous
    # the driver's bookkeeping is the same on every backend: one case on a real worker
    # process, the others in-process on the simulated backend (the resume follows the run's)
    if (at, synchronous) != (10, True):
        kw.update(backend="simulated", progress=False)
    with pytest.raises(KeyboardInterrupt):
        hp.run(Walker, space, ready=2, exploit=InterruptedTruncation(at), seed=at, **kw)
    assert _missing_checkpoints(db) == []
    result = hp.resume(db, Walker)
    assert [m.status for m in result.members] == ["finished"] * 4
    assert result.summary()["failures"] == 0
    assert all(m.step == 40 for m in result.members)


def _steps_once(result, members, last: int) -> None:
    """Each of ``members`` reported every step 1..last exactly once."""
    for m in members:
        steps = [e.data["step"] for e in result.events if e.kind == "reported" and e.member == m]
        assert steps == list(range(1, last + 1)), (m, steps)


# --- 2: a worker that dies while idle ------------------------------------------------------
class KillsIdleWorkers(LocalBackend):
    """The local backend, but each of the first ``kills`` results is followed by SIGKILL to
    the worker that sent it, now idle (waiting until the kernel has it dead)."""

    def __init__(self, workers: int, kills: int):
        super().__init__(workers)
        self.kills, self.killed = kills, []

    def poll(self, timeout):
        out = super().poll(timeout)
        for r in out:
            if len(self.killed) < self.kills and r.error is None:
                pid = self.pids()[int(r.worker.rsplit("-", 1)[1])]
                os.kill(pid, signal.SIGKILL)
                _wait(lambda pid=pid: _state(pid) in ("Z", "gone"), f"worker {pid} to die")
                self.killed.append(pid)
        return out


@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
def test_workers_killed_while_idle_are_replaced_and_the_run_completes(tmp_path, synchronous):
    backend = KillsIdleWorkers(workers=2, kills=6)
    result = hp.run(
        Walker,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=4,
        budget=12,
        ready=2,
        exploit=None,
        explore=None,
        synchronous=synchronous,
        backend=backend,
        storage=tmp_path / "run.db",
    )
    assert len(set(backend.killed)) == 6
    assert [m.status for m in result.members] == ["finished"] * 4
    _steps_once(result, range(4), 12)
    # the members whose state died with a worker went on from their checkpoints
    for e in result.events:
        if e.kind == "reported":
            assert e.data["metrics"]["n"] == e.data["step"]


# --- 5: a train() that hangs ---------------------------------------------------------------
def test_a_hung_interval_is_timed_out_its_worker_replaced_and_the_run_goes_on(tmp_path):
    space = {
        "lr": hp.uniform(0.1, 1.0),
        "tag": hp.choice([0, 1, 2]),
        "always": 0,
        "once": 1,
        "at": 3,
        "dir": str(tmp_path),
    }
    result = hp.run(
        Hangs,
        space,
        metric="score",
        population=3,
        workers=2,
        budget=8,
        ready=2,
        exploit=None,
        explore=None,
        synchronous=True,  # a generation must not wait for the hung member
        configs=[{"tag": 0}, {"tag": 1}, {"tag": 2}],
        max_failures=1,
        step_timeout=1,  # an interval of two steps of Hangs takes milliseconds
        storage=tmp_path / "run.db",
    )
    m0, m1, m2 = result.members
    assert m0.status == "failed" and m0.failures == 2  # hung on every attempt: given up
    assert "member 0's interval exceeded step_timeout=1s" in m0.last_error
    assert m1.status == m2.status == "finished" and m1.failures == 1 and m2.failures == 0
    _steps_once(result, [1, 2], 8)
    assert result.settings["step_timeout"] == 1


def test_step_timeout_from_the_command_line(tmp_path):
    job = tmp_path / "hangs.py"
    job.write_text(
        "import hyperpop as hp\n"
        "from reliability_trainables import Hangs\n"
        "trainable = Hangs\n"
        f"space = {{'lr': 0.5, 'tag': hp.choice([0, 1]), 'always': -1, 'once': 0, 'at': 2,"
        f" 'dir': {str(tmp_path)!r}}}\n"
        "settings = dict(metric='score', population=2, workers=2, budget=4, ready=2,"
        " exploit=None, explore=None, configs=[{'tag': 0}, {'tag': 1}])\n"
    )
    db = tmp_path / "run.db"
    # `hyperpop run` in this process: its workers are real processes all the same
    out = hyperpop_in_process("run", job, "-q", "--storage", db, "--step-timeout", "1")
    assert out.returncode == 0, out.stderr
    result = hp.load(db)
    assert result.settings["step_timeout"] == 1
    (failed,) = [e for e in result.events if e.kind == "failed"]
    assert "member 0's interval exceeded step_timeout=1s" in failed.data["error"]
    _steps_once(result, [0, 1], 4)


# --- 4: metrics named like hyperpop's own columns ------------------------------------------
def test_metrics_named_like_hyperpops_columns_are_kept(tmp_path):
    db = tmp_path / "run.db"
    result = hp.run(
        Clashing,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="loss",
        mode="min",
        population=1,
        workers=1,
        budget=2,
        ready=1,
        storage=db,
        backend="simulated",
        progress=False,
    )
    rows = result.records()
    assert [r["step"] for r in rows] == [1, 2]  # hyperpop's own columns keep their names
    assert [r["score"] for r in rows] == [1.0, 0.5]  # the optimised metric, loss
    assert rows[1]["member"] == 0 and isinstance(rows[1]["time"], float)
    assert isinstance(rows[1]["config/lr"], float)
    # the user's metrics lose nothing: those that clash are under metric/<name>
    assert rows[1]["loss"] == 0.5
    assert rows[1]["metric/step"] == 1002
    assert rows[1]["metric/time"] == "epoch-2"
    assert rows[1]["metric/score"] == -2
    assert rows[1]["metric/member"] == "mine"
    assert rows[1]["metric/config/lr"] == "not the config"
    assert rows[1]["metric/metric/step"] == "already prefixed"
    out = hyperpop_in_process("table", db)
    header = out.stdout.splitlines()[0].split(",")
    assert {"step", "metric/step", "metric/score", "metric/member"} <= set(header), header


def test_a_metric_named_score_that_is_optimised_is_not_doubled(tmp_path):
    result = hp.run(
        Walker,
        {"lr": 0.5},
        metric="score",
        population=1,
        workers=1,
        budget=2,
        ready=1,
        backend="simulated",
        progress=False,
    )
    (row, _) = result.records()
    assert row["score"] == 0.5 and "metric/score" not in row


# --- found by the fault-injection suite ----------------------------------------------------
def test_a_run_that_ends_leaves_only_the_checkpoints_its_log_names(tmp_path):
    db = tmp_path / "run.db"
    root = checkpoint_dir_for(db)
    result = hp.run(
        LeavesLitter,
        {"lr": hp.uniform(0.1, 1.0), "ckpt": str(root)},
        metric="score",
        population=2,
        workers=2,
        budget=4,
        ready=2,
        storage=db,
        backend="simulated",
        progress=False,
    )
    on_disk = {p.name for p in root.iterdir() if p.name != ".hyperpop-run"}  # the owner marker
    assert on_disk == {f"{b}.ckpt" for b in result.population.live_checkpoints()}


class KillsStartingWorkers(LocalBackend):
    """The local backend, but its first ``kills`` worker processes are killed as they start."""

    def __init__(self, workers: int, kills: int):
        super().__init__(workers)
        self.kills, self.killed = kills, 0

    def _spawn(self, slot):
        super()._spawn(slot)
        if self.killed < self.kills:
            self.killed += 1
            slot.proc.kill()


def test_a_worker_killed_while_it_starts_is_started_again(tmp_path):
    backend = KillsStartingWorkers(workers=2, kills=3)
    result = hp.run(
        Walker,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=2,
        budget=4,
        ready=2,
        backend=backend,
    )
    assert backend.killed == 3
    assert [m.step for m in result.members] == [4, 4]


def test_the_driver_deletes_only_blobs_the_written_log_no_longer_names(tmp_path):
    """Even if a future code path folds an event and never writes it, a normal flush deletes
    no blob the written log still names (the fold alone never decides a deletion)."""
    from hyperpop.backends.simulated import SimulatedBackend
    from hyperpop.checkpoints import CheckpointStore, encode
    from hyperpop.driver import Driver, WrittenRefs
    from hyperpop.population import Population
    from hyperpop.settings import RunSettings
    from hyperpop.store import events as ev
    from hyperpop.store.events import Event
    from hyperpop.store.sqlite import MemoryStore

    store, ckpts = MemoryStore(), CheckpointStore(tmp_path / "ckpt")
    for blob in ("a", "b", "c"):
        ckpts.write(blob, encode({}))
    written = [
        Event(ev.RUN_STARTED, None, {"settings": {"metric": "score"}}),
        Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.1}}),
        Event(ev.REPORTED, 0, {"step": 1, "score": 1.0, "metrics": {"score": 1.0}}),
        Event(ev.CHECKPOINTED, 0, {"step": 1, "checkpoint": "a"}),
    ]
    store.append(written)
    pop = Population.from_events(written)
    driver = Driver(
        store=store,
        pop=pop,
        controller=None,
        backend=SimulatedBackend(1),
        checkpoints=ckpts,
        settings=RunSettings(metric="score", max_failures=0),
    )
    driver.written = WrittenRefs(pop)
    # folded, never queued: in the fold "a" is dead, in the written log member 0 still holds it
    pop.extend(
        [
            # (a lower score: "b" is not the run's best checkpoint, which is kept to the end)
            Event(ev.REPORTED, 0, {"step": 2, "score": 0.5, "metrics": {"score": 0.5}}),
            Event(ev.CHECKPOINTED, 0, {"step": 2, "checkpoint": "b"}),
        ]
    )
    driver.flush()
    assert ckpts.exists("a")
    # what is written is followed: "c" replaces "b", and "b" (never written, dead) may go
    driver.commit([Event(ev.CHECKPOINTED, 0, {"step": 2, "checkpoint": "c"})])
    driver.flush()
    assert ckpts.exists("c") and not ckpts.exists("b")
    # "a" is an orphan now (no longer named): collected at the session's clean end or on resume
    assert not driver.written.names("a")


def test_resume_on_a_backend_without_step_timeout_warns_instead_of_refusing(tmp_path, caplog):
    db = tmp_path / "run.db"
    kw = dict(metric="score", population=2, workers=1, budget=8, ready=2, synchronous=True)
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            Walker,
            {"lr": hp.uniform(0.1, 1.0)},
            exploit=InterruptedTruncation(3),
            step_timeout=30,
            storage=db,
            **kw,
        )
    with pytest.raises(ValueError, match="cannot enforce step_timeout"):
        hp.resume(db, Walker, backend="simulated", step_timeout=30)  # asked for: refused
    with caplog.at_level("WARNING", logger="hyperpop"):
        result = hp.resume(db, Walker, backend="simulated")  # only recorded: a warning
    assert "step_timeout=30" in caplog.text and "simulated" in caplog.text
    assert [m.step for m in result.members] == [8, 8]


# --- issue 19, item 7: given up for a cause that has gone away ----------------------------------
class _StopsAfter(SimulatedBackend):
    """Two simulated workers; the driver stops (as by Ctrl-C) once ``reports`` came back."""

    def __init__(self, reports: int):
        super().__init__(workers=2)
        self.left = reports

    def poll(self, timeout):
        out = super().poll(timeout)
        self.left -= sum(len(r.reports) for r in out)
        if self.left <= 0:
            raise KeyboardInterrupt
        return out


def test_a_member_given_up_for_a_missing_checkpoint_trains_on_once_it_is_restored(tmp_path):
    """A member whose checkpoint is missing is retried ``max_failures`` times and given up;
    the run then finished, and stayed finished even after the blob was put back. Resume gives
    every member given up one more round of retries: while the blob is missing it is given up
    again (the run ends), once it is back the member trains to the end of its budget."""
    from test_steer import each_step_once

    db = tmp_path / "run.db"
    settings = dict(metric="score", population=3, budget=12, ready=3, seed=1, exploit=None)
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            Walker,
            {"lr": hp.uniform(0.1, 1.0)},
            storage=db,
            backend=_StopsAfter(12),
            progress=False,
            **settings,
        )
    blob = hp.load(db).population.members[0].checkpoint
    assert blob is not None
    kept = CheckpointStore.for_store(db).path(blob)
    aside = tmp_path / "aside.ckpt"
    kept.rename(aside)

    def resume() -> hp.Result:
        return hp.resume(db, backend=SimulatedBackend(workers=2), progress=False)

    for _ in range(2):  # given up at each resume while the cause stays
        result = resume()
        assert result.summary()["status"] == "finished"
        m0 = result.population.members[0]
        assert m0.status == "failed" and "missing" in (m0.last_error or "")
        assert all(m.status == "finished" and m.step == 12 for m in result.members if m.id)
    failures = [e for e in result.events if e.kind == "failed" and e.member == 0]
    assert len(failures) == 2 * 4  # two rounds of 1 + max_failures attempts
    aside.rename(kept)  # the cause has gone away
    result = resume()
    assert result.summary()["status"] == "finished"
    assert all(m.status == "finished" and m.step == 12 for m in result.members)
    assert result.population.members[0].failures == 8  # none since the blob came back
    each_step_once(result.events)
    # the retry is in the log: the resume that gave member 0 another round names it
    assert [e.data.get("retry") for e in result.events if e.kind == "run_resumed"] == [
        None,
        [0],
        [0],
    ]


class _Misdefined(Walker):
    """Member 0's ``train()`` raises an error a retry cannot fix while ``config['flag']``
    exists (a bug in the trainable, fixed by removing the file)."""

    def setup(self, config):
        super().setup(config)
        self.flag = Path(config["flag"])
        self.first = config["lr"] == config["first"]

    def train(self):
        if self.first and self.flag.exists():
            raise hp.TrainableError("train() is misdefined for this member")
        return super().train()


def test_a_member_given_up_for_an_error_a_retry_cannot_fix_is_retried_on_resume(tmp_path):
    """An error a retry cannot fix stops the run at once. Resume retries the member: while
    the error stays it is given up again and the others finish (resume is never stuck on
    it); once the trainable is fixed, a resume trains it to the end."""
    db, flag = tmp_path / "run.db", tmp_path / "bug"
    flag.write_text("")
    space = {"lr": hp.choice([0.25, 0.5, 0.75]), "flag": str(flag), "first": 0.25}
    configs = [{"lr": lr} for lr in (0.25, 0.5, 0.75)]
    settings = dict(metric="score", population=3, budget=9, ready=3, seed=1, exploit=None)

    def resume() -> hp.Result:
        return hp.resume(db, _Misdefined, backend=SimulatedBackend(workers=2), progress=False)

    with pytest.raises(hp.RunError, match="a retry cannot fix"):
        hp.run(
            _Misdefined,
            space,
            configs=configs,
            storage=db,
            backend=SimulatedBackend(workers=2),
            progress=False,
            **settings,
        )
    result = resume()  # the bug is still there: given up again, the others finish
    assert result.summary()["status"] == "finished"
    assert result.population.members[0].status == "failed"
    assert all(m.status == "finished" and m.step == 9 for m in result.members if m.id)
    flag.unlink()  # the bug is fixed
    result = resume()
    assert all(m.status == "finished" and m.step == 9 for m in result.members)
