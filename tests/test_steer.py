"""Steering a running run through requests in its store (issue 11, items 1 and 2).

Real driver processes writing real SQLite stores (what a request meets at resume runs
in-process on the simulated backend); every wait is for a condition, with a timeout.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from in_process import hyperpop_in_process
from reliability_trainables import Walker
from sim_backends import SteersSimulated

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.controller import Controller, Ready, Steps
from hyperpop.population import Population
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.requests import Request, RequestLog
from hyperpop.store.sqlite import SQLiteStore, StoreError
from hyperpop.strategies import Perturb, Truncation

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "hyperpop"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _wait(cond, what: str, proc: subprocess.Popen | None = None, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _events(db: Path) -> list[Event]:
    try:
        store = SQLiteStore(db)
    except StoreError:  # not created yet, or created but empty
        return []
    try:
        return store.read()
    finally:
        store.close()


def _reports(db: Path) -> int:
    return sum(1 for e in _events(db) if e.kind == ev.REPORTED)


def _driver(
    db: Path, *, ignore_sigint: bool = False, slow: Path | None = None, **kw
) -> subprocess.Popen:
    """A driver in its own process running :class:`Walker` (0.02 s steps) into ``db``; with
    ``slow``, :class:`steer_trainables.Paced` (0.02 s steps while the file ``slow`` exists)."""
    settings = dict(metric="score", population=4, workers=2, budget=400, ready=3, seed=1)
    settings.update(kw)
    fixed = {"sleep": 0.02} | ({"slow": str(slow)} if slow else {})
    code = (
        "import signal\n"
        "import hyperpop as hp\n"
        # the driver reads the request table at every poll, not every 0.2 s: each answer comes
        # within a poll (what a request does is the same; the tests make many)
        "from hyperpop.steering import Steering\n"
        "Steering.REQUEST_INTERVAL = 0.0\n"
        + (
            "from steer_trainables import Paced as Walker\n"
            if slow
            else "from reliability_trainables import Walker\n"
        )
        + ("signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if ignore_sigint else "")
        + "if __name__ == '__main__':\n"
        f"    hp.run(Walker, {{'lr': hp.uniform(0.1, 1.0), **{fixed!r}}}, storage={str(db)!r},"
        f" **{settings!r})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=_env(), stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the driver did not exit:\n{err}") from None
    return err


# --- item 1: a stop that always works ---------------------------------------------------------
def test_stop_reaches_a_driver_that_ignores_sigint_and_the_run_resumes(tmp_path):
    """A driver started in the background of a script ignores SIGINT; ``hyperpop stop``
    still stops it (a request, not a signal), and the run resumes where it stopped."""
    db = tmp_path / "run.db"
    # a budget the run cannot finish while the `hyperpop stop` process starts on a loaded
    # machine (4.8 s of steps at least); the resume, the file `slow` gone, trains fast
    slow = tmp_path / "slow"
    slow.touch()
    proc = _driver(db, ignore_sigint=True, budget=120, slow=slow)
    try:
        _wait(lambda: _reports(db) >= 6, "6 reports", proc)
        out = subprocess.run(
            [*CLI, "stop", str(db)], capture_output=True, text=True, timeout=60, env=_env()
        )
        assert out.returncode == 0, out.stderr
        assert "stopped" in out.stdout and f"hyperpop resume {db}" in out.stdout
        err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    slow.unlink()
    events = _events(db)
    kinds = [e.kind for e in events]
    assert ev.RUN_STOPPED in kinds and ev.RUN_FINISHED not in kinds
    handled = [e for e in events if e.kind == ev.REQUEST_HANDLED]
    assert [(h.data["kind"], h.data["status"]) for h in handled] == [("stop", "done")]
    # recorded like an interrupt: resumable, nothing lost
    summary = hp.load(db).summary()
    assert summary["status"] == "interrupted" and summary["reason"] == "stopped on request"
    result = hp.resume(db)
    assert result.summary()["status"] == "finished"
    assert all(m.step == 120 and m.status == "finished" for m in result.members)


def test_stop_without_a_live_driver_says_so_and_signals_nobody(tmp_path):
    """A lease file naming a live, unrelated process (a stale lease, a pid reused) is never
    mistaken for a driver: the kernel lock is the test, and no signal is sent."""
    db = tmp_path / "run.db"
    hp.run(
        Walker,
        {"lr": 0.5},
        metric="score",
        population=1,
        workers=1,
        budget=3,
        storage=db,
        backend="simulated",
    )
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        for host in (os.uname().nodename, "another-host"):  # a stale lease, or another host's
            holder = {"pid": bystander.pid, "host": host, "since": 0}
            Path(f"{db}.lock").write_text(json.dumps(holder))
            out = hyperpop_in_process("stop", db)
            assert out.returncode == 1 and "no driver is writing" in out.stderr
            assert bystander.poll() is None  # alive: nobody was signalled
        with pytest.raises(hp.SteerError, match="no driver is writing"):
            hp.steer(db).pin(0)
        assert RequestLog(db).read() == []  # nothing written for nobody
    finally:
        bystander.kill()
        bystander.wait()


# --- item 2: a human in the loop --------------------------------------------------------------
def test_people_steer_a_running_population_from_python_and_it_shows_in_the_log(tmp_path):
    db = tmp_path / "run.db"
    proc = _driver(db, budget=400)
    try:
        _wait(lambda: _reports(db) >= 12, "12 reports", proc)
        s = hp.steer(db)
        # pin the worst member: PBT would copy a better one into it, but it must not
        a = s.pin(0)
        assert a.ok, a
        bad = s.set(1, lr=5.0)  # outside the space
        assert bad.status == "refused" and "outside the space" in bad.reason
        with pytest.raises(hp.SpaceError, match="lrr"):
            s.set(1, lrr=0.5)
        a = s.set(0, lr=0.95)  # the pinned member: PBT never copies over what a person set
        assert a.ok, a
        a = s.copy(2, donor=3)
        assert a.ok and "copied member 3" in a.reason, a
        a = s.add(2)
        assert a.ok and "[4, 5]" in a.reason, a
        assert s.pin(99).status == "refused"
        a = s.stop(member=3)
        assert a.ok, a
        # the added members train; then a budget the run can reach soon ends it
        _wait(
            lambda: any(e.kind == ev.CHECKPOINTED and e.member == 5 for e in _events(db)),
            "an added member to reach a ready point",
            proc,
        )
        # a budget just ahead of everyone (an interval in flight trains at most 3 more steps)
        end = max(e.data["step"] for e in _events(db) if e.kind == ev.REPORTED) + 9
        a = s.budget(hp.Steps(end))
        assert a.ok, a
        err = _finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = hp.load(db)
    events = result.events
    pinned_at = next(e.seq for e in events if e.kind == ev.PINNED and e.member == 0)
    after_pin = [e for e in events if e.seq > pinned_at and e.member == 0]
    # a pinned member never copies, is never reset, and keeps the hyperparameters it was given
    assert not [e for e in after_pin if e.kind in (ev.EXPLOITED, ev.REJUVENATED)]
    assert all(e.data.get("by") == "user" for e in after_pin if e.kind == ev.EXPLORED)
    assert result.population.members[0].pinned
    # a user's hyperparameters are in the schedule, by user
    m0 = result.member(0)
    assert m0.config["lr"] == 0.95
    assert any(seg.get("by") == "user" and seg["config"]["lr"] == 0.95 for seg in m0.schedule)
    assert any(r.get("by") == "user" for r in result.schedule(0))
    # the copy is an exploit edge in the lineage, by user
    assert any(e["member"] == 2 and e["donor"] == 3 and e["by"] == "user" for e in result.lineage())
    # member 3 was stopped by a person; the others trained to the new budget
    assert result.population.members[3].finish_reason == "stopped by user"
    assert len(result.members) == 6
    for m in result.members:
        if m.id != 3:
            assert m.status == "finished" and m.step == end, m
    # the dashboard's family tree marks the copy a person asked for
    from hyperpop.dashboard.data import RunView
    from hyperpop.dashboard.figures import payload

    drawn = json.dumps(payload(RunView(result.events)))
    assert "member 2 copied member 3" in drawn and "(by user)" in drawn
    kinds = {i["kind"] for i in result.interventions()}
    assert kinds == {"pin", "set", "copy", "add", "stop", "budget"}
    assert result.summary()["status"] == "finished"


class DiesAfter(SimulatedBackend):
    """Two simulated workers; the driver stops (as by Ctrl-C) once ``reports`` reports came
    back, losing the result that reached the mark as a killed driver loses its last interval."""

    def __init__(self, reports: int):
        super().__init__(workers=2)
        self.left = reports

    def poll(self, timeout):
        out = super().poll(timeout)
        self.left -= sum(len(r.reports) for r in out)
        if self.left <= 0:
            raise KeyboardInterrupt
        return out


def test_requests_left_unanswered_are_acted_on_at_resume_and_a_stale_stop_is_dropped(tmp_path):
    """The guarantee of the request channel: a request and the events that carry it out are
    written in one transaction, so a driver that dies in between has done nothing, and the
    next one (resume) acts on it; a stop made while no driver ran is answered, not obeyed."""
    db = tmp_path / "run.db"
    # a driver that dies with 6 reports recorded (in-process: the resume is what is tested)
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            Walker,
            {"lr": hp.uniform(0.1, 1.0)},
            metric="score",
            population=4,
            budget=24,
            ready=3,
            seed=1,
            storage=db,
            backend=DiesAfter(9),
            progress=False,
        )
    assert _reports(db) == 6 and not hp.load(db).population.finished
    log = RequestLog(db)
    pin = log.append(Request("pin", 1, {"pinned": True}))
    stop = log.append(Request("stop", None, {}))
    result = hp.resume(db)
    assert result.summary()["status"] == "finished"
    answers = {h["id"]: h for h in result.population.handled.values()}
    assert answers[pin.id]["status"] == "done"
    assert answers[stop.id]["status"] == "refused" and "no driver ran" in answers[stop.id]["reason"]
    assert result.population.members[1].pinned


# --- the controller honours a pin ----------------------------------------------------------------
def _pop(scores: dict[int, float], step: int = 8) -> Population:
    pop = Population()
    pop.apply(Event(ev.RUN_STARTED, None, {"settings": {"mode": "max"}}, 1.0))
    for i, s in scores.items():
        pop.apply(Event(ev.MEMBER_CREATED, i, {"config": {"lr": 0.5}}, 1.0))
        pop.apply(Event(ev.REPORTED, i, {"step": step, "score": s}, 2.0))
        pop.apply(Event(ev.CHECKPOINTED, i, {"step": step, "checkpoint": f"b{i}"}, 2.0))
    return pop


def test_a_pinned_member_never_copies_and_is_never_reset_but_may_be_a_donor():
    space = Space({"lr": hp.uniform(0.1, 1.0)})
    c = Controller(
        space,
        mode="max",
        ready=Ready(steps=4),
        budget=[Steps(100)],
        exploit=Truncation(),
        explore=Perturb(),
        rejuvenate=1,
        seed=0,
    )
    pop = _pop({0: 0.0, 1: 1.0, 2: 2.0, 3: 3.0})
    pop.apply(Event(ev.PINNED, 0, {"pinned": True}, 3.0))
    pop.members[0].stall = 5
    for _ in range(20):
        c.on_ready(pop, 0, 3.0)
        (d,) = c.decide(pop, 0, 3.0)
        assert d.kind == "continue"
    # the pinned best member is still copied from
    pop.apply(Event(ev.PINNED, 0, {"pinned": False}, 3.0))
    pop.apply(Event(ev.PINNED, 3, {"pinned": True}, 3.0))
    pop.members[0].stall = 0
    c.rejuvenate = None
    donors = set()
    for _ in range(20):
        c.on_ready(pop, 0, 3.0)
        (d,) = c.decide(pop, 0, 3.0)
        donors.add(d.donor)
    assert 3 in donors
    assert np.all(pop.index.ok)


def test_a_store_from_before_requests_opens_and_its_writer_adds_the_table(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    hp.run(
        Walker, {"lr": 0.5}, metric="score", population=1, budget=3, storage=db, backend="simulated"
    )
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE requests")  # as a store written before requests existed
    conn.commit()
    conn.close()
    reader = SQLiteStore(db)
    assert reader.read_requests() == [] and len(reader.read()) > 3
    reader.close()
    with pytest.raises(LookupError, match="takes no requests"):
        RequestLog(db).append(Request("pin", 0, {"pinned": True}))
    writer = SQLiteStore(db, write=True)  # a resuming driver migrates it
    writer.close()
    assert RequestLog(db).append(Request("pin", 0, {"pinned": True})).id == 1


# --- the dashboard: actions with the token, read-only without --------------------------------
def test_the_dashboard_steers_only_with_its_token(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from hyperpop.dashboard.app import create_app

    db = tmp_path / "run.db"
    proc = _driver(db, budget=400)
    try:
        _wait(lambda: _reports(db) >= 6, "6 reports", proc)
        pin = {"kind": "pin", "member": 2, "data": {"pinned": True}}
        with TestClient(create_app(db), base_url="http://localhost") as read_only:
            r = read_only.post("/api/request", json=pin)
            assert r.status_code == 403 and "read-only" in r.json()["error"]
        app = create_app(db, token="s3cret")
        with TestClient(app, base_url="http://localhost") as client:
            assert client.post("/api/request", json=pin).status_code == 403
            r = client.post("/api/request", json=pin, headers={"X-Hyperpop-Token": "wrong"})
            assert r.status_code == 403
            assert RequestLog(db).read() == []  # refused requests never reach the store
            r = client.post("/api/request", json=pin, headers={"X-Hyperpop-Token": "s3cret"})
            assert r.status_code == 200 and r.json()["status"] == "done", r.text
            form = {
                "token": "s3cret",
                "kind": "set_config",
                "member": "1",
                "data": '{"config": {"lr": 0.3}}',
            }
            r = client.post("/api/request", data=form)
            assert r.status_code == 200 and r.json()["status"] == "done", r.text
            view = client.get("/api/view").json()
            assert view["summary"]["pinned"] == [2]
            assert {i["kind"] for i in view["summary"]["interventions"]} == {"pin", "set"}
            row = next(m for m in view["view"]["members"] if m["member"] == 2)
            assert row["pinned"] is True
            r = client.post(
                "/api/request", json={"kind": "stop"}, headers={"X-Hyperpop-Token": "s3cret"}
            )
            assert r.json()["status"] == "done", r.text
        _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert hp.load(db).summary()["status"] == "interrupted"


def test_the_command_line_steers_a_run_and_says_what_the_driver_did(tmp_path):
    db = tmp_path / "run.db"
    proc = _driver(db, budget=400)

    cli = hyperpop_in_process  # the real `hyperpop stop` process is the test above
    try:
        _wait(lambda: _reports(db) >= 6, "6 reports", proc)
        out = cli("pin", db, 1)
        assert out.returncode == 0 and "done: member 1 pinned" in out.stdout, out.stderr
        out = cli("set", db, 2, "lr=0.25")
        assert out.returncode == 0 and "done" in out.stdout, out.stderr
        out = cli("set", db, 2, "lr=7")
        assert out.returncode == 1 and "refused" in out.stderr and "outside" in out.stderr
        out = cli("set", db, 2, "lrr=0.3")
        assert out.returncode == 1 and "'lrr' is not in the search space" in out.stderr
        out = cli("add", db, "-n", 2, "lr=0.5")
        assert out.returncode == 0 and "[4, 5]" in out.stdout, out.stderr
        out = cli("copy", db, 0, 9)
        assert out.returncode == 1 and "no member 9" in out.stderr
        out = cli("budget", db, "--steps", 600)
        assert out.returncode == 0 and "done" in out.stdout, out.stderr
        out = cli("stop", db, "--member", 3)
        assert out.returncode == 0 and "member 3 finished" in out.stdout, out.stderr
        out = cli("stop", db)
        assert out.returncode == 0 and "resume with" in out.stdout, out.stderr
        _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = hp.load(db)
    assert result.population.members[1].pinned
    (user_set,) = [e for e in result.events if e.kind == ev.EXPLORED and e.data.get("by") == "user"]
    assert user_set.member == 2 and user_set.data["config"]["lr"] == 0.25
    added = [e for e in result.events if e.kind == ev.MEMBER_CREATED and e.data.get("by")]
    assert [(e.member, e.data["config"]["lr"]) for e in added] == [(4, 0.5), (5, 0.5)]
    assert result.settings["budget"] == [{"type": "steps", "n": 600}]
    assert result.population.members[3].status == "finished"
    status = cli("status", db)
    assert "interrupted" in status.stdout


def test_a_smaller_budget_finishes_queued_members_where_they_stand(tmp_path):
    """One worker, four members: three wait in the queue. A budget every member has already
    reached finishes them at once; only the interval in flight is recorded after it."""
    db = tmp_path / "run.db"
    proc = _driver(db, budget=400, workers=1)
    try:
        _wait(lambda: _reports(db) >= 24, "24 reports", proc)
        a = hp.steer(db).budget(hp.Steps(3))
        assert a.ok, a
        _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    events = _events(db)
    changed = next(e.seq for e in events if e.kind == ev.BUDGET_CHANGED)
    after = {e.member for e in events if e.kind == ev.REPORTED and e.seq > changed}
    assert len(after) <= 1  # the member in flight, nobody else trained on
    result = hp.load(db)
    assert result.summary()["status"] == "finished"
    assert all(m.status == "finished" for m in result.members)
    assert result.settings["budget"] == [{"type": "steps", "n": 3}]


# --- issue 19, items 2 and 4: every request is checked where it is read -----------------------
def _interrupted(db: Path) -> None:
    """A run of four members on the simulated backend, stopped (as by Ctrl-C) with 6 reports
    recorded: the store a later resume meets."""
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            Walker,
            {"lr": hp.uniform(0.1, 1.0)},
            metric="score",
            population=4,
            budget=24,
            ready=3,
            seed=1,
            storage=db,
            backend=DiesAfter(9),
            progress=False,
        )


def _answers(result) -> dict[int, dict]:
    return {h["id"]: h for h in result.population.handled.values()}


#: malformed requests, and a phrase of the reason each is refused with
MALFORMED = [
    (("set_config", 0, {"config": "abc"}), "config must be a JSON object"),
    (("set_config", 0, {"config": [1, 2]}), "config must be a JSON object"),
    (("copy", 0, {"donor": [1]}), "donor (the member to copy) must be an int"),
    (("add", None, {"count": "abc"}), "count (members to add) must be an int"),
    (("budget", None, {"budget": ["x"]}), "each budget must be a JSON object"),
    (("budget", None, {"budget": "steps"}), "budget must be a non-empty list"),
    (("budget", None, {"budget": [{"type": "steps", "n": True}]}), "n must be an int"),
    (("add", None, {"count": 999999999999999999999}), "from 1 to 1000"),
    (("pin", 0, {"pinned": True, "force": 1}), "takes no 'force'"),
    (("stop", 0, {"now": True}), "takes no 'now'"),
    (("pin", None, {"pinned": True}), "needs a member"),
]


def test_malformed_requests_are_refused_and_a_store_that_holds_them_resumes(tmp_path):
    """Item 2: a request the driver cannot read used to crash it in the middle of the run and
    at every resume after. Each one is now refused, naming the problem; the run goes on."""
    db = tmp_path / "run.db"
    _interrupted(db)
    log = RequestLog(db)
    sent = [(log.append(Request(*args)).id, why) for args, why in MALFORMED]
    # what no hyperpop writer makes, written into the table directly
    conn = sqlite3.connect(db)
    with conn:
        for kind, member, data, when, why in [
            ("explode", None, "{}", 1.0, "unknown request kind 'explode'"),
            ("pin", "abc", '{"pinned": true}', 1.0, "member must be an int"),
            ("pin", 1, "{not json", 1.0, "must be a JSON object"),
            ("pin", 1, "[1]", 1.0, "must be a JSON object"),
            ("stop", None, "{}", "yesterday", "is not a time"),
        ]:
            cur = conn.execute(
                "INSERT INTO requests(time, kind, member, data) VALUES (?,?,?,?)",
                (when, kind, member, data),
            )
            sent.append((cur.lastrowid, why))
    conn.close()
    pin = log.append(Request("pin", 1, {"pinned": True}))
    result = hp.resume(db, progress=False)
    answers = _answers(result)
    for request, why in sent:
        assert answers[request]["status"] == "refused", answers[request]
        assert why in answers[request]["reason"], (why, answers[request])
    assert answers[pin.id]["status"] == "done" and result.population.members[1].pinned
    assert result.summary()["status"] == "finished"
    assert all(m.status == "finished" and m.step == 24 for m in result.members)


def test_loose_checks_no_longer_answer_wrongly(tmp_path):
    """Item 4: a negative count added nobody and said done; the donor "0" was "no member 0"
    though member 0 exists; pinned "no" pinned. A value outside the space names its range."""
    db = tmp_path / "run.db"
    _interrupted(db)
    log = RequestLog(db)
    add = log.append(Request("add", None, {"count": -2}))
    copy = log.append(Request("copy", 1, {"donor": "0"}))
    pin = log.append(Request("pin", 2, {"pinned": "no"}))
    lr = log.append(Request("set_config", 3, {"config": {"lr": 5}}))
    result = hp.resume(db, progress=False)
    answers = _answers(result)
    assert answers[add.id]["status"] == "refused"
    assert (
        "count (members to add) must be an int from 1 to 1000, got -2"
        in (answers[add.id]["reason"])
    )
    assert answers[copy.id]["status"] == "refused"
    assert "must be an int, got '0' (write it without quotes)" in answers[copy.id]["reason"]
    assert answers[pin.id]["status"] == "refused"
    assert "pinned must be true or false, got 'no'" in answers[pin.id]["reason"]
    assert not result.population.members[2].pinned
    assert answers[lr.id]["status"] == "refused"
    assert "lr is a float from 0.1 to 1" in answers[lr.id]["reason"]
    assert len(result.members) == 4


def test_the_python_api_the_command_line_and_the_dashboard_refuse_a_malformed_request(tmp_path):
    """The writers check with the driver's own rules before they write: a clear error at once,
    nothing in the store (and no live driver is needed to be told)."""
    from click.testing import CliRunner

    from hyperpop.cli import main
    from hyperpop.steer import SteerError

    db = tmp_path / "run.db"
    _interrupted(db)
    s = hp.steer(db)
    for call, why in [
        (lambda: s.request("set_config", 0, {"config": "abc"}), "config must be a JSON object"),
        (lambda: s.copy(0, donor="0"), "must be an int, got '0'"),
        (lambda: s.copy(0, donor=0), "cannot copy itself"),
        (lambda: s.add(-2), "from 1 to 1000, got -2"),
        (lambda: s.budget("steps"), "each budget must be a JSON object"),
        (lambda: s.pin(999999999999999999999), "member must be an int from 0"),
        (lambda: s.request("zap"), "unknown request kind 'zap'"),
        (lambda: s.request("pin", True, {"pinned": True}), "member must be an int, got True"),
    ]:
        with pytest.raises(SteerError, match=re.escape(why)):
            call()
    runner = CliRunner()
    for args, why in [
        (["add", str(db), "h0=0.5", "h0=0.6"], "'h0=0.5' and 'h0=0.6' both set h0"),
        (["set", str(db), "1", "lr=0.5", "lr=0.6"], "both set lr"),
        (["pin", str(db), "999999999999999999999"], "member must be an int from 0"),
        (["budget", str(db), "--steps", "-5"], "n must be an int from 1"),
        (["copy", str(db), "1", "1"], "member 1 cannot copy itself"),
    ]:
        out = runner.invoke(main, args)
        assert out.exit_code != 0 and why in out.output, (args, out.output)
        assert "Traceback" not in out.output
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from hyperpop.dashboard.app import create_app

    token = {"X-Hyperpop-Token": "s3cret"}
    with TestClient(create_app(db, token="s3cret"), base_url="http://localhost") as client:
        for body, why in [
            ({"kind": "pin", "member": 0, "data": {"pinned": "no"}}, "pinned must be true"),
            ({"kind": "pin", "data": {"pinned": True}}, "needs a member"),
            ({"kind": "add", "data": {"count": "abc"}}, "must be an int"),
            ({"kind": "copy", "member": 1, "data": {"donor": [1]}}, "must be an int"),
        ]:
            r = client.post("/api/request", json=body, headers=token)
            assert r.status_code == 400 and why in r.json()["error"], r.text
    assert RequestLog(db).read() == []  # nothing malformed reached the store


# --- issue 19, item 3: requests that arrive as the run ends ----------------------------------
class AsksAsItEnds(SteersSimulated):
    """Two simulated workers; the requests are written into the store as the run's last
    interval comes back (a person asking a moment before the run ends)."""


def each_step_once(events: list[Event]) -> None:
    """Every (member, step) is recorded once along the member's own history: each report is
    the step after the one its model holds (a copy takes the donor's checkpointed step), and
    :class:`Walker`'s own step counter agrees."""
    step: dict[int | None, int] = {}
    saved: dict[str, int] = {}
    for e in events:
        where = f"event {e.seq} ({e.kind}, member {e.member})"
        if e.kind == ev.MEMBER_CREATED:
            step[e.member] = 0
        elif e.kind == ev.REPORTED:
            assert e.data["step"] == step[e.member] + 1 == e.data["metrics"]["n"], where
            step[e.member] = e.data["step"]
        elif e.kind == ev.CHECKPOINTED:
            assert e.data["step"] == step[e.member], where
            saved[e.data["checkpoint"]] = e.data["step"]
        elif e.kind == ev.EXPLOITED:
            step[e.member] = saved[e.data["checkpoint"]]
            assert e.data["step"] == step[e.member], where
        elif e.kind == ev.REJUVENATED and e.data.get("reset", "full") == "full":
            step[e.member] = 0


def _reported_once(result) -> None:
    each_step_once(result.events)


def test_requests_made_as_the_run_ends_are_answered_and_a_larger_budget_goes_on(tmp_path):
    """Item 3: a request written just before the last member finished stayed unanswered. The
    driver answers every request before it records the run's end; a larger budget continues
    the run, a set for a member that is done is refused."""
    db = tmp_path / "run.db"
    asks = [
        Request("set_config", 0, {"config": {"lr": 0.5}}),
        Request("budget", None, {"budget": [{"type": "steps", "n": 9}]}),
        Request("stop", None, {}),
    ]
    result = hp.run(
        Walker,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=2,
        budget=6,
        ready=3,
        seed=1,
        storage=db,
        backend=AsksAsItEnds(db, 12, asks),
        progress=False,
    )
    answers = _answers(result)
    assert sorted(answers) == [1, 2, 3]  # all three answered, once each (a dict by id)
    assert sum(e.kind == ev.REQUEST_HANDLED for e in result.events) == 3
    set_, budget, stop = answers[1], answers[2], answers[3]
    assert set_["status"] == "refused" and "the run has finished" in set_["reason"], set_
    assert stop["status"] == "refused" and "the run has finished" in stop["reason"], stop
    assert budget["status"] == "done", budget
    assert all(m.status == "finished" and m.step == 9 for m in result.members)
    assert result.summary()["status"] == "finished"
    _reported_once(result)


def test_resume_of_a_finished_run_answers_what_is_pending(tmp_path):
    """Item 3: resume of a finished run returned it as it was, leaving a request written as
    it ended unanswered for good. Resume answers it (and a larger budget goes on)."""
    db = tmp_path / "run.db"
    hp.run(
        Walker,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=2,
        budget=6,
        ready=3,
        seed=1,
        storage=db,
        backend=SimulatedBackend(workers=2),
        progress=False,
    )
    log = RequestLog(db)
    pin = log.append(Request("pin", 0, {"pinned": True}))
    more = log.append(Request("budget", None, {"budget": [{"type": "steps", "n": 12}]}))
    result = hp.resume(db, backend=SimulatedBackend(workers=2), progress=False)
    answers = _answers(result)
    assert answers[pin.id]["status"] == "refused" and "has finished" in answers[pin.id]["reason"]
    assert answers[more.id]["status"] == "done"
    assert all(m.status == "finished" and m.step == 12 for m in result.members)
    _reported_once(result)
    # nothing pending: a finished run is returned as it is (no session, no event)
    again = hp.resume(db, backend=SimulatedBackend(workers=2), progress=False)
    assert len(again.events) == len(result.events)
