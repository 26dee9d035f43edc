"""A request-fuzzing campaign (issue 19): random kinds, members and payloads, well formed and
malformed, through the Python API (``hp.steer``), the command line (click's runner, in process),
the dashboard's request endpoint (starlette's test client, in process) and straight into the
store's table (what no hyperpop writer makes), while the driver runs, is interrupted and
resumes.

What must hold, whatever was asked:

* every request written into the store is answered exactly once (one ``request_handled``);
* a malformed request is never carried out: its writer refuses it before writing, or the
  driver refuses it, naming the problem;
* the driver never dies of a request (only the interruptions the campaign makes stop it);
* every (member, step) is recorded once along the member's own history.

The in-process rounds drive the simulated backend (its clock times the driver, so a seed replays
the same campaign); one round runs a real driver process and kills it with SIGKILL.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from reliability_trainables import Walker
from test_steer import each_step_once

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.cli import main
from hyperpop.steer import Steer, SteerError
from hyperpop.store import events as ev
from hyperpop.store.requests import RequestLog
from hyperpop.store.sqlite import SQLiteStore, StoreError

HERE = Path(__file__).resolve().parent
SEED = 19
ROUNDS = 8
#: requests each in-process round sends (then the run is left to end)
PER_ROUND = 16
MEMBERS = [0, 1, 2, 3, 9]  # 9: usually no such member
SETTINGS: dict[str, Any] = dict(metric="score", population=3, budget=12, ready=3)
SPACE = {"lr": hp.uniform(0.1, 1.0)}

# --- requests -----------------------------------------------------------------------------------
#: values each data field must never take (any of them makes the request malformed)
BAD: dict[str, list[Any]] = {
    "pinned": ["no", 1, 0, None, [True]],
    "config": ["abc", [1, 2], 5, None, {}],
    "donor": ["0", [1], 1.0, True, -1, 10**21, None],
    "count": ["abc", -2, 0, True, 1.5, 10**21, None],
    "configs": ["x", [], [1], {"lr": 0.5}, None],
    "budget": [
        "steps",
        ["x"],
        [],
        [{"type": "steps", "n": 0}],
        [{"type": "steps", "n": "5"}],
        [{"type": "epochs", "n": 5}],
        [{"type": "steps", "n": 5, "m": 1}],
        [{"type": "steps", "n": 8}, {"type": "steps", "n": 9}],
        [{"type": "wall_time", "seconds": float("nan")}],
        None,
    ],
}
BAD_MEMBERS: list[Any] = ["1", True, -1, 10**21, 1.5]


def well_formed(rng: random.Random) -> tuple[str, Any, dict[str, Any]]:
    """A request its writer accepts (the driver may still refuse it: a finished member, no
    checkpoint to copy yet, a value outside the space)."""
    kind = rng.choice(["stop", "pin", "pin", "set_config", "set_config", "copy", "add", "budget"])
    m = rng.choice(MEMBERS)
    if kind == "stop":
        return kind, (None if rng.random() < 0.3 else m), {}
    if kind == "pin":
        return kind, m, {"pinned": rng.random() < 0.7}
    if kind == "set_config":
        return kind, m, {"config": {"lr": rng.choice([0.2, 0.5, 0.9, 5.0])}}
    if kind == "copy":
        return kind, m, {"donor": rng.choice([d for d in MEMBERS if d != m])}
    if kind == "add":
        return kind, None, rng.choice([{"count": rng.randint(1, 2)}, {"configs": [{"lr": 0.5}]}])
    budget = [{"type": "steps", "n": rng.randint(9, 18)}]
    if rng.random() < 0.2:
        budget.append({"type": "wall_time", "seconds": 3600})
    return kind, None, {"budget": budget}


def malformed(rng: random.Random, *, members: bool = True) -> tuple[Any, Any, Any]:
    """A well-formed request broken in one way (``members``: the member may be the broken
    part)."""
    kind, member, data = well_formed(rng)
    ways = ["value", "extra key", "missing key", "not an object", "kind"]
    if members:
        ways += ["member", "member where none belongs"]
    way = rng.choice(ways)
    if way == "value" and data:
        key = rng.choice(sorted(data))
        data = {**data, key: rng.choice(BAD[key])}
    elif way == "extra key" or (way == "value" and not data):
        data = {**data, rng.choice(["zzz", "force", "member"]): 1}
    elif way == "missing key" and data:
        data = {}
    elif way == "missing key":  # a stop: the member may not be missing, so add a key
        data = {"pinned": True}
    elif way == "not an object":
        data = rng.choice(["x", [1], 3])
    elif way == "kind":
        kind = rng.choice(["explode", "Pin", "", "set"])
    elif way == "member":
        if kind in ("add", "budget"):
            member = 0
        else:
            member = rng.choice(BAD_MEMBERS + ([None] if kind != "stop" else []))
    else:
        if kind in ("add", "budget"):
            member = rng.choice([0, 1])
        elif kind == "stop":
            data = {"now": True}
        else:
            member = None
    return kind, member, data


# --- the channels ---------------------------------------------------------------------------------
class Tally:
    """What the campaign sent and how its writers answered."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        #: (store, request id) -> whether it was malformed
        self.written: dict[tuple[Path, int], bool] = {}

    def rows(self, db: Path) -> int:
        return len(RequestLog(db).read())


def _cli_args(rng: random.Random, db: Path) -> tuple[list[str], bool]:  # one branch per command
    """A command line that steers ``db`` and whether it is malformed."""
    kind, member, data = well_formed(rng)
    bad = rng.random() < 0.4
    base = [str(db)]
    if kind == "stop":
        args = ["stop", *base] + ([] if member is None else ["--member", str(member)])
        if bad:
            args += ["--member", "x"]
    elif kind == "pin":
        args = ["pin" if data["pinned"] else "unpin", *base, str(member)]
        if bad:
            args[-1] = rng.choice(["x", str(10**21), "-1"])
    elif kind == "set_config":
        args = ["set", *base, str(member), f"lr={data['config']['lr']}"]
        if bad:
            args += rng.choice([["lr=0.3"], ["bogus"], ["lrr=0.3"]])
    elif kind == "copy":
        args = ["copy", *base, str(member), str(data["donor"])]
        if bad:
            args[-1] = rng.choice([str(member), "x", "-1"])
    elif kind == "add":
        args = ["add", *base, "-n", str(data.get("count", 1))]
        if bad:
            args += rng.choice([["-n", "-2"], ["-n", "0"], ["lr=0.2", "lr=0.3"]])
    else:
        args = ["budget", *base, "--steps", str(data["budget"][0]["n"])]
        if bad:
            args = ["budget", *base] + rng.choice([["--steps", "-5"], ["--steps", "0"], []])
    return [*args, "--timeout", "0"], bad


class Campaign:
    """Sends seeded requests into the store at ``db`` from inside a simulated backend's poll
    (the driver is in the middle of its loop, holding the store), by every channel."""

    def __init__(self, db: Path, rng: random.Random, tally: Tally):
        self.db, self.rng, self.tally = db, rng, tally
        self.left = PER_ROUND
        self.interruptions = 0
        self.threads: list[threading.Thread] = []
        self.responses: list[tuple[int, dict[str, Any], bool]] = []
        self._client: Any = None
        self._runner = CliRunner()

    # one request, by one channel -------------------------------------------------------------
    def send(self) -> None:
        self.left -= 1
        channel = self.rng.choice(["python", "python", "cli", "dashboard", "store"])
        before = self.tally.rows(self.db)
        bad = self.rng.random() < 0.45
        if channel == "cli":
            args, bad = _cli_args(self.rng, self.db)
            out = self._runner.invoke(main, args)
            assert "Traceback" not in out.output, out.output
            assert out.exception is None or isinstance(out.exception, SystemExit), out.output
            ok = out.exit_code == 0
            assert ok != bad, (args, out.output)
            assert ok or "Error" in out.output, (args, out.output)
        elif channel == "python":
            kind, member, data = malformed(self.rng) if bad else well_formed(self.rng)
            try:
                Steer(self.db, timeout=None).request(kind, member, data)
                ok = True
            except SteerError as e:
                ok = False
                assert str(e), (kind, member, data)
            assert ok != bad, (kind, member, data)
        elif channel == "dashboard":
            ok = self._dashboard(bad)
            assert ok != bad
        else:
            ok = True
            self._raw(*(malformed(self.rng) if bad else well_formed(self.rng)))
        after = self.tally.rows(self.db)
        assert after == before + ok, f"{channel}: {after - before} rows for one request"
        if ok:
            (row,) = RequestLog(self.db).read(after - 1)
            assert row.id is not None
            self.tally.written[self.db, row.id] = bad
        self.tally.counts[f"{channel} {'malformed' if bad else 'well formed'}"] += 1

    def _raw(self, kind: Any, member: Any, data: Any) -> None:
        """Straight into the table, as something other than hyperpop might write it."""
        if isinstance(member, int) and abs(member) >= 2**63:
            member = str(member)  # SQLite cannot hold it as an integer
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            with conn:
                conn.execute(
                    "INSERT INTO requests(time, kind, member, data, origin) VALUES (?,?,?,?,?)",
                    (time.time(), kind, member, json.dumps(data), "fuzz"),
                )
        finally:
            conn.close()

    def _dashboard(self, bad: bool) -> bool:
        """POST to the dashboard's endpoint from a thread (its answer waits for the driver,
        which waits for this poll to return); return once the row is written or refused."""
        from starlette.testclient import TestClient

        from hyperpop.dashboard.app import create_app

        if self._client is None:
            self._client = TestClient(create_app(self.db, token="t"), base_url="http://localhost")
        # the dashboard reads a member from a form field with int(): its member is not fuzzed
        kind, member, data = malformed(self.rng, members=False) if bad else well_formed(self.rng)
        body = {"kind": kind, "data": data} | ({} if member is None else {"member": member})
        before = self.tally.rows(self.db)
        done = threading.Event()

        def post() -> None:
            r = self._client.post("/api/request", json=body, headers={"X-Hyperpop-Token": "t"})
            self.responses.append((r.status_code, r.json(), bad))
            done.set()

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        self.threads.append(thread)
        deadline = time.monotonic() + 30
        while not done.is_set() and self.tally.rows(self.db) == before:
            assert time.monotonic() < deadline, "the dashboard neither wrote nor refused"
            done.wait(0.01)
        return self.tally.rows(self.db) > before

    def end_session(self) -> None:
        """The driver let go of the store: the dashboard's waits end (answered, or pending
        until a resume)."""
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a dashboard request hung"
        self.threads = []
        for status, body, bad in self.responses:
            if bad:
                assert status == 400 and body["error"], body
            else:
                assert status == 200 and body["status"] in ("done", "refused", "pending"), body
        self.tally.counts["dashboard answers checked"] += len(self.responses)
        self.responses = []
        if self._client is not None:
            self._client.close()
            self._client = None


class Fuzzed(SimulatedBackend):
    """Two simulated workers; after each poll the campaign may send requests, and the driver
    may be interrupted (as by Ctrl-C) once ``interrupt_at`` reports came back."""

    def __init__(self, campaign: Campaign, interrupt_at: int | None):
        super().__init__(workers=2)
        self.campaign, self.interrupt_at = campaign, interrupt_at
        self.reports = 0

    def poll(self, timeout):
        out = super().poll(timeout)
        self.reports += sum(len(r.reports) for r in out)
        c = self.campaign
        while c.left > 0 and c.rng.random() < 0.5:
            c.send()
        if self.interrupt_at is not None and self.reports >= self.interrupt_at:
            self.campaign.interruptions += 1
            raise KeyboardInterrupt
        return out


def _settle(db: Path, campaign: Campaign) -> int:
    """Resume (the campaign goes on in each session) until the run is finished and every
    request answered; how many resumes."""
    resumes = 0
    while True:
        result = hp.load(db)
        pending = [r for r in RequestLog(db).read() if r.id not in result.population.handled]
        if result.population.finished and not pending:
            return resumes
        assert resumes < 12, f"the run does not settle: {result.summary()}, {pending}"
        resumes += 1
        # while requests are still to come, a resumed session may be interrupted too
        interrupt = campaign.left > 0 and campaign.rng.random() < 0.4
        at = campaign.rng.randint(3, 20) if interrupt else None
        try:
            hp.resume(db, backend=Fuzzed(campaign, at), progress=False)
        except KeyboardInterrupt:
            assert at is not None
        campaign.end_session()


def _check(db: Path, tally: Tally) -> Counter[str]:
    """The campaign's invariants over one round's store."""
    store = SQLiteStore(db)
    try:
        events = store.read()
        rows = store.read_requests()
    finally:
        store.close()
    answered = Counter(e.data["id"] for e in events if e.kind == ev.REQUEST_HANDLED)
    answers = {e.data["id"]: e.data for e in events if e.kind == ev.REQUEST_HANDLED}
    assert {r.id for r in rows} == set(answered), "a request unanswered, or an answer to none"
    assert set(answered.values()) == {1}, f"answered twice: {answered}"
    out: Counter[str] = Counter()
    for r in rows:
        a = answers[r.id]
        if tally.written.get((db, r.id) if r.id is not None else (db, 0), False):
            assert a["status"] == "refused" and a["reason"], (r, a)
        out[a["status"]] += 1
    each_step_once(events)
    result = hp.load(db)
    assert result.summary()["status"] == "finished"
    assert all(m.status == "finished" for m in result.members), result.summary()
    return out


def test_a_request_fuzzing_campaign_with_interruptions_and_resumes(tmp_path):
    """ROUNDS rounds of PER_ROUND requests each on the simulated backend, in process."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    rng = random.Random(SEED)
    tally = Tally()
    answers: Counter[str] = Counter()
    resumes = interruptions = 0
    for round_ in range(ROUNDS):
        db = tmp_path / f"round{round_}.db"
        campaign = Campaign(db, rng, tally)
        interrupt_at = rng.randint(3, 30) if rng.random() < 0.75 else None
        backend = Fuzzed(campaign, interrupt_at)
        try:
            hp.run(
                Walker, SPACE, seed=round_, storage=db, backend=backend, progress=False, **SETTINGS
            )
        except KeyboardInterrupt:
            assert interrupt_at is not None
        campaign.end_session()
        resumes += _settle(db, campaign)
        interruptions += campaign.interruptions
        answers += _check(db, tally)
    sent = sum(v for k, v in tally.counts.items() if k.endswith("formed"))
    assert 0 < sent <= ROUNDS * PER_ROUND  # a round whose run ends first sends fewer
    assert len(tally.written) == sum(answers.values())
    # the campaign reached every channel both ways, and the driver both acted and refused
    for channel in ("python", "cli", "dashboard", "store"):
        assert tally.counts[f"{channel} malformed"] and tally.counts[f"{channel} well formed"]
    assert answers["done"] and answers["refused"]
    assert interruptions and resumes
    print(
        f"\nrequest fuzz: {sent} requests in {ROUNDS} rounds, {len(tally.written)} written "
        f"and answered once ({dict(answers)}), {sent - len(tally.written)} refused by their "
        f"writer; {interruptions} interruptions, {resumes} resumes; {dict(tally.counts)}"
    )


# --- one real driver process, killed with SIGKILL ------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _reports(db: Path) -> int:
    try:
        store = SQLiteStore(db)
    except StoreError:  # not created yet
        return 0
    try:
        return sum(e.kind == ev.REPORTED for e in store.read())
    finally:
        store.close()


def _handled(db: Path) -> set[int]:
    store = SQLiteStore(db)
    try:
        return {e.data["id"] for e in store.read() if e.kind == ev.REQUEST_HANDLED}
    finally:
        store.close()


def _wait(cond: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the driver exited ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_fuzzed_requests_to_a_real_driver_then_kill_9_and_resume(tmp_path):
    """A real driver process answers fuzzed requests without dying, is killed with SIGKILL with
    requests unanswered, and the resume answers each of them once."""
    db = tmp_path / "run.db"
    code = (
        "import hyperpop as hp\n"
        "from reliability_trainables import Walker\n"
        "if __name__ == '__main__':\n"
        f"    hp.run(Walker, {{'lr': hp.uniform(0.1, 1.0), 'sleep': 0.01}}, storage={str(db)!r},"
        " metric='score', population=3, workers=2, budget=60, ready=3, seed=1, progress=False)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=_env(), stderr=subprocess.PIPE, text=True
    )
    rng = random.Random(SEED)
    tally = Tally()
    campaign = Campaign(db, rng, tally)
    try:
        _wait(lambda: _reports(db) >= 9, "9 reports", proc)
        written: list[int] = []
        while len(written) < 12:
            bad = rng.random() < 0.5
            kind, member, data = malformed(rng) if bad else well_formed(rng)
            if not bad and (kind == "budget" or (kind == "stop" and member is None)):
                continue  # the run should go on until it is killed
            before = tally.rows(db)
            campaign._raw(kind, member, data)
            written.append(before + 1)
            tally.written[db, before + 1] = bad
        _wait(lambda: set(written) <= _handled(db), "the answers", proc)
        late = [Steer(db, timeout=None).pin(0).id, Steer(db, timeout=None).unpin(1).id]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    killed = hp.load(db)
    assert not killed.population.finished  # killed in the middle of the run
    result = hp.resume(db, backend=SimulatedBackend(workers=2), progress=False)
    assert result.population.resumes == 1
    handled = result.population.handled
    assert set(written) | set(late) <= set(handled)
    assert result.summary()["status"] == "finished"
    _check(db, tally)
