"""Resume restores every decision's state (issue 12): a seeded synchronous run killed with
``kill -9`` and resumed makes the same decisions, lineage and scores as the run uninterrupted.

Decisions draw from generators keyed by (seed, member, ready point), PB2 learns from every
interval in the log, and the synchronous barrier is rebuilt from the fold; the toy trainable is
deterministic, so both runs must agree exactly. One strategy is killed for real (a driver
process and its workers); the others are interrupted in-process on the simulated backend, where
the resume is the same fold of the same log, in milliseconds.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.scheduling import replay_schedule
from hyperpop.session import controller_for
from hyperpop.settings import RunSettings
from hyperpop.space import Space
from hyperpop.store.requests import Request, RequestLog
from hyperpop.store.sqlite import SQLiteStore
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import toy  # noqa: E402

SETTINGS = dict(
    metric="Q",
    mode="max",
    population=4,
    workers=2,
    budget=hp.Steps(40),
    ready=4,
    synchronous=True,
    seed=5,
)
STRATEGIES = {
    "truncation": dict(exploit="truncation", explore="perturb"),
    "ttest": dict(exploit=hp.WelchTTest(window=4, min_samples=2), explore="perturb"),
    "pb2": dict(exploit="truncation", explore=hp.PB2(min_data=4)),
}
JOB = """
import sys
sys.path.insert(0, {examples!r})
sys.path.insert(0, {tests!r})
import hyperpop as hp
import toy
from test_resume_determinism import SETTINGS, STRATEGIES

if __name__ == "__main__":
    hp.run(toy.Toy, toy.space, storage=sys.argv[1], progress=False,
           **SETTINGS, **STRATEGIES[sys.argv[2]])
"""


def outcome(db: Path) -> tuple:
    res = hp.load(db)
    reports = sorted(
        (e.member, e.data["step"], e.data["score"]) for e in res.events if e.kind == "reported"
    )
    edges = [(e.member, e.donor, e.step, e.at) for e in res.population.edges]
    configs = {m.id: m.config for m in res.members}
    return reports, edges, configs


def reports_in(db: Path) -> int:
    try:
        store = SQLiteStore(db)
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    try:
        return sum(1 for e in store.read() if e.kind == "reported")
    finally:
        store.close()


def strategies(name: str) -> dict:
    """Fresh strategy instances (a run in this process must not see another's state)."""
    return copy.deepcopy(STRATEGIES[name])


@pytest.mark.parametrize("strategy,kill_at", [("ttest", 72), ("pb2", 56)])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, strategy, kill_at):
    settings = {k: v for k, v in SETTINGS.items() if k != "workers"}
    whole, db = tmp_path / "whole.db", tmp_path / "interrupted.db"
    on = dict(storage=whole, progress=False, backend=SimulatedBackend(SETTINGS["workers"]))
    hp.run(toy.Toy, toy.space, **on, **settings, **strategies(strategy))
    with pytest.raises(KeyboardInterrupt):
        on = dict(storage=db, progress=False, backend=Interrupted(kill_at))
        hp.run(toy.Toy, toy.space, **on, **settings, **strategies(strategy))
    assert not hp.load(db).population.finished
    hp.resume(db, trainable=toy.Toy, progress=False)

    assert outcome(db) == outcome(whole)


@pytest.mark.parametrize("strategy,kill_at", [("truncation", 40)])
def test_killed_and_resumed_equals_uninterrupted(tmp_path, strategy, kill_at):
    whole = tmp_path / "whole.db"
    hp.run(toy.Toy, toy.space, storage=whole, progress=False, **SETTINGS, **STRATEGIES[strategy])

    job = tmp_path / "job.py"
    job.write_text(JOB.format(examples=str(EXAMPLES), tests=str(Path(__file__).parent)))
    db = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [sys.executable, str(job), str(db), strategy], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while reports_in(db) < kill_at:
        assert proc.poll() is None, f"the run ended before the kill:\n{proc.stderr.read()}"
        assert time.time() < deadline, "the run never reached the kill point"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not hp.load(db).population.finished
    hp.resume(db, trainable=toy.Toy, progress=False)

    assert outcome(db) == outcome(whole)


# --- asynchronous, deterministic ------------------------------------------------------------
#: what a run decided and measured, event by event (not when: times differ across sessions)
DECIDED = ("reported", "checkpointed", "exploited", "explored", "rejuvenated", "finished", "failed")


def decided(db: Path) -> list[tuple]:
    """Every report, checkpoint and decision in log order: kind, member, step, config, score."""
    out = []
    for e in hp.load(db).events:
        if e.kind in DECIDED:
            d = e.data
            out.append((e.kind, e.member, d.get("step"), d.get("config"), d.get("score")))
    return out


def first_difference(a: list[tuple], b: list[tuple]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"event {i}: uninterrupted {x}, resumed {y}"
    return f"{len(a)} events against {len(b)}"


def async_run(task: str, exploit: str, **kw):
    """A deterministic asynchronous run: 8 members on 2 simulated workers."""
    rf = load_file(EXAMPLES / f"{task}.py")
    settings = dict(rf.settings, storage=None, synchronous=False, deterministic=True, seed=3)
    settings.update(budget=hp.Steps(60), ready=5, exploit=exploit, progress=False)
    settings.pop("workers")
    settings.update(kw)
    return hp.run(rf.trainable, rf.space, **settings), rf.trainable


# where the driver is interrupted: once this many reports (of a run's 330-480) came back, in
# the backend's poll (the result is lost) or before the next fill (its decisions are lost)
@pytest.mark.parametrize(
    "task,exploit,cuts",
    [
        ("deceptive", "truncation", [(37, "poll"), (201, "fill"), (318, "poll")]),
        ("deceptive", "firepbt", [(52, "fill"), (260, "poll")]),
        ("pbt_function", "reserve", [(88, "poll"), (233, "fill")]),
    ],
)
def test_async_deterministic_resume_decides_as_uninterrupted(tmp_path, task, exploit, cuts):
    """A deterministic asynchronous run interrupted (several times) and resumed handles every
    interval in the uninterrupted run's order and takes every one of its decisions: the
    simulated clock, the intervals that were running and the queue are rebuilt from the log."""
    whole, db = tmp_path / "whole.db", tmp_path / "cut.db"
    _, trainable = async_run(task, exploit, storage=whole, backend=SimulatedBackend(2))
    expected = decided(whole)
    (first, at), later = cuts[0], cuts[1:]
    with pytest.raises(KeyboardInterrupt):
        async_run(task, exploit, storage=db, backend=Interrupted(first, at))
    for cut, at in later:  # interrupted again while resumed, further on
        done = sum(1 for e in decided(db) if e[0] == "reported")
        with pytest.raises(KeyboardInterrupt):
            hp.resume(db, trainable=trainable, backend=Interrupted(cut - done, at), progress=False)
    hp.resume(db, trainable=trainable, progress=False)
    got = decided(db)
    assert got == expected, first_difference(expected, got)


@pytest.mark.timeout(60)  # were its interval waited for, the run would never end
def test_a_member_stopped_before_its_interrupted_interval_restarts(tmp_path):
    """A stop waiting at resume for a member whose interval the interrupted session had
    started: it finishes before that interval is handed out again and leaves the rebuilt
    clock; the others train on to the budget (nothing waits for an interval that never runs)."""
    db = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        async_run("deceptive", "truncation", storage=db, backend=Interrupted(201))
    cut = hp.load(db)
    settings = RunSettings.from_dict(cut.population.settings)
    controller = controller_for(settings, Space.from_dict(cut.population.space))
    replayed = replay_schedule(cut.events, controller)
    assert replayed is not None
    (running, *_), at = replayed[0].running(), cut.population.members
    RequestLog(db).append(Request("stop", running, {}))
    res = hp.resume(db, trainable=load_file(EXAMPLES / "deceptive.py").trainable, progress=False)
    assert res.summary()["status"] == "finished"
    assert {m.id: m.step for m in res.members} == {
        i: at[i].step if i == running else 60 for i in at
    }
