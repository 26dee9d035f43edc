"""Elastic workers (issue 22, item 4): a running run changes how many members train at once on
request, answered like every request, and a resume starts with the last number asked for."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from reliability_trainables import Walker

import hyperpop as hp
from hyperpop.backends.base import Backend
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.cli import main
from hyperpop.live import LiveView
from hyperpop.steer import SteerError
from hyperpop.store import requests as rq
from hyperpop.store import vocabulary as voc
from hyperpop.store.requests import RequestLog
from hyperpop.store.sqlite import SQLiteStore, StoreError, WriterLock
from hyperpop.summary import RunState

SPACE = {"lr": hp.uniform(0.1, 1.0)}


def _run(db: Path, backend: Backend, **kw):
    args = dict(metric="score", population=3, budget=12, ready=2, seed=1, progress=False)
    return hp.run(Walker, SPACE, storage=db, backend=backend, **{**args, **kw})


class Asks(SimulatedBackend):
    """Simulated workers that ask for other numbers of workers through ``hp.steer`` as the
    run reaches a number of reports (a person watching the run), and keep, for each interval
    started, (reports so far, workers, intervals running with it)."""

    def __init__(self, db: Path, plan: dict[int, int], workers: int = 1):
        super().__init__(workers=workers)
        self.db, self.plan, self.reports = db, dict(plan), 0
        self.started: list[tuple[int, int, int]] = []

    def submit(self, task, slot=None):
        super().submit(task, slot)
        self.started.append((self.reports, self.workers, len(self._running)))

    def poll(self, timeout):
        out = super().poll(timeout)
        self.reports += sum(len(r.reports) for r in out)
        for at in sorted(a for a in self.plan if a <= self.reports):
            hp.steer(self.db, timeout=None).workers(self.plan.pop(at), wait=False)
        return out


def _changes(result) -> list[voc.WorkersChanged]:
    return [e.payload for e in result.events if isinstance(e.payload, voc.WorkersChanged)]


def test_a_live_run_goes_from_one_to_two_to_one_worker_on_request(tmp_path):
    db = tmp_path / "run.db"
    backend = Asks(db, {6: 2, 18: 1})
    result = _run(db, backend)
    assert [(c.old_workers, c.workers, c.by) for c in _changes(result)] == [
        (1, 2, "user"),
        (2, 1, "user"),
    ]
    answers = [h for h in result.population.handled.values() if h["kind"] == "workers"]
    assert [a["status"] for a in answers] == ["done", "done"], answers
    one, two, back = (
        [
            running
            for reports, workers, running in backend.started
            if workers == n and lo <= reports < hi
        ]
        for n, lo, hi in ((1, 0, 6), (2, 6, 18), (1, 18, 99))
    )
    assert one and max(one) == 1  # one at a time
    assert max(two) == 2  # two at once once asked
    # fewer: the interval running on the surplus worker ended before the next one started
    assert back and set(back) == {1}
    assert result.population.settings["workers"] == 1
    assert {i["kind"] for i in result.interventions()} == {"workers"}
    assert all(m.status == "finished" and m.step == 12 for m in result.members)


class DiesAfter(Asks):
    """:class:`Asks`, and the driver stops (as by Ctrl-C) once ``reports`` came back."""

    def __init__(self, db: Path, plan: dict[int, int], reports: int):
        super().__init__(db, plan)
        self.left = reports

    def poll(self, timeout):
        out = super().poll(timeout)
        if self.reports >= self.left:
            raise KeyboardInterrupt
        return out


def test_more_workers_than_members_are_capped_and_a_resume_starts_with_the_last_number(tmp_path):
    db = tmp_path / "run.db"
    with pytest.raises(KeyboardInterrupt):
        _run(db, DiesAfter(db, {2: 8}, reports=10))
    (changed,) = _changes(hp.load(db))
    assert (changed.old_workers, changed.workers) == (1, 3)  # one per member at most
    (answer,) = hp.load(db).population.handled.values()
    assert answer["status"] == "done" and "8 asked for" in answer["reason"], answer
    result = hp.resume(db, progress=False)
    resumed = next(e.payload for e in result.events if isinstance(e.payload, voc.RunResumed))
    assert resumed.workers == 3
    assert all(m.status == "finished" and m.step == 12 for m in result.members)


def _no_room(self, workers):
    raise RuntimeError("no room for another worker")


@pytest.mark.parametrize(
    "resize, why",
    [
        (Backend.resize, "the 'fixed' backend cannot change its number of workers"),
        (_no_room, "could not start 2 workers: no room for another worker"),
    ],
)
def test_a_backend_that_cannot_resize_refuses_and_the_run_goes_on(tmp_path, resize, why):
    class Fixed(Asks):
        name = "fixed"

    Fixed.resize = resize  # type: ignore[method-assign]
    db = tmp_path / "run.db"
    result = _run(db, Fixed(db, {2: 2}))
    (answer,) = result.population.handled.values()
    assert answer["status"] == "refused" and why in answer["reason"], answer
    assert not _changes(result)
    assert all(m.status == "finished" and m.step == 12 for m in result.members)


# --- workers="auto": the Ray cluster decides, the driver records -----------------------------
class Cluster(SimulatedBackend):
    """Stands in for Ray's backend under the name "ray": built as hp.run and hp.resume build
    it, and, under ``workers="auto"``, changing its own number of workers as a cluster's
    nodes join and leave (:attr:`PLAN`: after so many reports, so many workers) and saying so
    (``own_resizes``), as RayBackend does. :attr:`STOP` reports stop the driver (Ctrl-C)."""

    name = "ray"
    PLAN = {4: 3, 10: 1}
    STOP: int | None = None
    built: list[tuple[object, int | None]] = []

    def __init__(self, workers=None, *, max_workers=None):
        Cluster.built.append((workers, max_workers))
        super().__init__(workers=1 if workers in (None, "auto") else workers)
        self.auto, self.max_workers = workers == "auto", max_workers
        self.reports, self.plan, self.changes = 0, dict(self.PLAN), []

    def poll(self, timeout):
        out = super().poll(timeout)
        self.reports += sum(len(r.reports) for r in out)
        for at in sorted(a for a in self.plan if a <= self.reports):
            workers = min(self.plan.pop(at), self.max_workers or 99)
            if self.auto and workers != self.workers:
                self.changes.append((self.workers, workers))
                super().resize(workers)
        if self.STOP is not None and self.reports >= self.STOP:
            raise KeyboardInterrupt
        return out

    def own_resizes(self):
        out, self.changes = self.changes, []
        return out


def test_workers_auto_on_ray_is_recorded_each_change_is_an_event_and_resume_follows_again(
    tmp_path, monkeypatch
):
    from hyperpop import backends

    monkeypatch.setitem(backends._REGISTRY, "ray", (__name__, "Cluster", ""))
    monkeypatch.setattr(Cluster, "built", [])
    monkeypatch.setattr(Cluster, "STOP", 14)
    db = tmp_path / "run.db"
    with pytest.raises(KeyboardInterrupt):
        _run(db, "ray", workers="auto")
    stopped = hp.load(db)
    assert stopped.population.settings["workers"] == "auto"
    assert [(c.old_workers, c.workers, c.by, c.request) for c in _changes(stopped)] == [
        (1, 3, "cluster", None),
        (3, 1, "cluster", None),
    ]
    assert not stopped.interventions()  # nobody asked
    status = CliRunner().invoke(main, ["status", str(db)])
    assert "workers: auto (following the Ray cluster; 1 now)" in status.output, status.output
    view = LiveView()  # the live view: the workers there are now (the monitor's RunState)
    with view.console.capture() as shown:
        view.console.print(view._render(stopped.population, RunState(workers=1)))
    assert "workers 1 (auto)" in shown.get()
    monkeypatch.setattr(Cluster, "STOP", None)
    result = hp.resume(db, progress=False)
    assert Cluster.built == [("auto", 3), ("auto", 3)]  # one actor per member at most
    assert len(_changes(result)) == 4 and result.population.settings["workers"] == "auto"
    assert all(m.status == "finished" and m.step == 12 for m in result.members)


def test_workers_auto_is_for_ray_only_and_given_once(tmp_path):
    for backend in ("local", "simulated", SimulatedBackend(workers=1)):
        with pytest.raises(hp.SettingsError, match="use backend='ray'|RayBackend\\('auto'"):
            _run(tmp_path / "run.db", backend, workers="auto")
    with pytest.raises(hp.SettingsError, match="given twice"):
        _run(tmp_path / "run.db", "simulated", workers=2, backend_options={"workers": 3})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "data, why",
    [
        ({"workers": 0}, "from 1 to"),
        ({"workers": "2"}, "without quotes"),
        ({"workers": True}, "must be an int"),
        ({"workers": 2.0}, "must be an int"),
        ({}, "needs 'workers'"),
        ({"workers": 2, "n": 1}, "takes no 'n'"),
    ],
)
def test_a_malformed_workers_request_is_refused_naming_the_fix(data, why):
    with pytest.raises(rq.RequestError, match=why):
        rq.parse("workers", None, data)


class Holds(SimulatedBackend):
    """One simulated worker that, after the first results, keeps the driver polling (it
    answers requests meanwhile) until the test lets it go on."""

    def __init__(self):
        super().__init__(workers=1)
        self.go, self.held = threading.Event(), threading.Event()

    def poll(self, timeout):
        if self.clock.now >= 2 and not self.go.is_set():
            self.held.set()
            self.go.wait(timeout or 0.05)
            self.clock.now += 0.5  # time passes while it waits (the driver reads requests)
            return []
        return super().poll(timeout)


def test_the_command_line_hp_steer_and_the_dashboard_change_the_workers(tmp_path):
    db = tmp_path / "run.db"
    backend = Holds()
    out: dict[str, object] = {}
    driver = threading.Thread(target=lambda: out.setdefault("result", _run(db, backend)))
    driver.start()
    try:
        assert backend.held.wait(30), "the run never reached its first results"
        runner = CliRunner()
        ok = runner.invoke(main, ["workers", str(db), "2"])
        assert ok.exit_code == 0, ok.output
        assert "(workers) done: 2 workers (was 1)" in ok.output
        rows = len(RequestLog(db).read())
        bad = runner.invoke(main, ["workers", str(db), "0"])
        assert bad.exit_code == 1 and "from 1 to" in bad.output and "Traceback" not in bad.output
        assert len(RequestLog(db).read()) == rows  # refused before anything was written
        with pytest.raises(SteerError, match="must be an int"):
            hp.steer(db).workers("3")  # type: ignore[arg-type]
        answer = hp.steer(db).workers(1)
        assert answer.ok and answer.reason.startswith("1 worker (was 2)"), answer
        assert backend.capacity == 1
        # the dashboard's control sends the same request, checked the same way
        from starlette.testclient import TestClient

        from hyperpop.dashboard.app import create_app

        with TestClient(create_app(db, token="t"), base_url="http://localhost") as client:
            post = {"headers": {"X-Hyperpop-Token": "t"}}
            r = client.post(
                "/api/request", json={"kind": "workers", "data": {"workers": 2}}, **post
            )
            assert r.status_code == 200 and r.json()["status"] == "done", r.json()
            r = client.post(
                "/api/request", json={"kind": "workers", "data": {"workers": -1}}, **post
            )
            assert r.status_code == 400 and "from 1 to" in r.json()["error"], r.json()
    finally:
        backend.go.set()
        driver.join(60)
    result = out["result"]
    assert [(c.old_workers, c.workers) for c in _changes(result)] == [(1, 2), (2, 1), (1, 2)]


# --- the local backend, through the real request path -------------------------------------------
class Clocked(Walker):
    """:class:`Walker` that says which process trained each step, and when."""

    def train(self):
        t0 = time.time()
        time.sleep(0.02)
        return {**super().train(), "pid": os.getpid(), "t0": t0, "t1": time.time()}


def _steps(db: Path) -> list[dict]:
    try:
        store = SQLiteStore(db)
    except StoreError:  # the driver is creating it
        return []
    try:
        return [e.data["metrics"] for e in store.read() if e.kind == "reported"]
    finally:
        store.close()


def _until(what: str, condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _overlap(steps: list[dict]) -> bool:
    """Two processes trained at the same moment."""
    return any(
        a["pid"] != b["pid"] and a["t0"] < b["t1"] and b["t0"] < a["t1"]
        for i, a in enumerate(steps)
        for b in steps[i + 1 :]
    )


def _one_process_since_the_other_stopped(steps: list[dict]) -> bool:
    """A process stopped training, and at least 12 steps were trained since, all by one other
    process."""
    for gone in {s["pid"] for s in steps}:
        end = max(s["t1"] for s in steps if s["pid"] == gone)
        after = [s for s in steps if s["t0"] > end]
        if len(after) >= 12 and len({s["pid"] for s in after}) == 1:
            return True
    return False


def test_a_live_local_run_goes_from_one_to_two_to_one_worker_on_request(tmp_path):
    db = tmp_path / "run.db"
    out: dict[str, object] = {}
    space = {"lr": hp.uniform(0.1, 1.0)}
    run = dict(metric="score", population=3, budget=100_000, ready=4, progress=False)

    def driver() -> None:
        out["result"] = hp.run(Clocked, space, storage=db, backend="local", workers=1, **run)

    thread = threading.Thread(target=driver)
    thread.start()
    try:
        _until("the run's first reports", lambda: WriterLock(db).held() and len(_steps(db)) >= 4)
        s = hp.steer(db)
        answer = s.workers(2)
        assert answer.ok and answer.reason.startswith("2 workers (was 1)"), answer
        _until("two processes training at once", lambda: _overlap(_steps(db)))
        answer = s.workers(1)
        assert answer.ok and answer.reason.startswith("1 worker (was 2)"), answer
        _until("one process alone again", lambda: _one_process_since_the_other_stopped(_steps(db)))
        assert s.stop().ok
    finally:
        if thread.is_alive() and WriterLock(db).held():
            hp.steer(db).stop(wait=False)
        thread.join(60)
    result = out["result"]
    assert [(c.old_workers, c.workers) for c in _changes(result)] == [(1, 2), (2, 1)]
    assert not [e for e in result.events if e.kind == "failed"]  # no interval was cut short
