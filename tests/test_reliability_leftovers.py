"""Small reliability defects: each test failed before its fix."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from reliability_trainables import Walker
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop import checkpoints as ckpt
from hyperpop.backends.base import Task
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.backends.transfer import SharedStorage, WorkerStore
from hyperpop.backends.worker import WorkerCore
from hyperpop.checkpoints import checkpoint_dir_for
from hyperpop.space import Space, SpaceError
from hyperpop.store.requests import RequestLog

# --- a bool is not a number in the search space ------------------------------------------


@pytest.mark.parametrize(
    "param",
    [
        lambda: hp.uniform(True, 5.0),
        lambda: hp.uniform(0.0, True),
        lambda: hp.loguniform(1e-3, True),
        lambda: hp.randint(False, 5),
        lambda: hp.qloguniform(1, True),
    ],
)
def test_bool_bounds_are_refused_with_the_fix(param):
    with pytest.raises(SpaceError) as e:
        Space({"x": param()})
    msg = str(e.value)
    assert "'x'" in msg and "bool" in msg and "\n" not in msg
    assert "write a number" in msg


def test_a_bool_value_for_a_float_or_int_is_refused():
    space = Space({"lr": hp.uniform(0.0, 2.0), "n": hp.randint(0, 3), "k": hp.choice([1, 2])})
    config = {"lr": 0.5, "n": 1, "k": 2}
    for key in ("lr", "n", "k"):
        with pytest.raises(SpaceError, match=rf"parameter '{key}': True is a bool"):
            space.merge(config, {key: True})
        with pytest.raises(SpaceError, match=rf"parameter '{key}': False is a bool"):
            space.validate_config({**config, key: False})
    # a number where a number is meant still passes (an int for a real number too)
    assert space.merge(config, {"lr": 1, "n": 2, "k": 1}) == {"lr": 1.0, "n": 2, "k": 1}


def test_a_choice_of_bools_still_takes_bools():
    space = Space({"nesterov": hp.choice([True, False]), "mixed": hp.choice([0, False])})
    config = {"nesterov": True, "mixed": 0}
    assert space.merge(config, {"nesterov": False, "mixed": False}) == {
        "nesterov": False,
        "mixed": False,
    }
    space.validate_config({"nesterov": False, "mixed": False})


def _never_trained(config, checkpoint):
    raise AssertionError("the run must be refused before any training")


def test_a_bool_initial_config_is_refused():
    with pytest.raises(SpaceError, match=r"'lr': True is a bool"):
        hp.run(
            _never_trained,
            {"lr": hp.uniform(0.0, 2.0)},
            metric="m",
            population=2,
            configs=[{"lr": True}],
            budget=hp.Steps(1),
            storage=None,
        )


# --- the dashboard's steer endpoint: a member id is an int, not a bool or a float ----------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished run's store (simulated backend: no processes)."""
    db = tmp_path_factory.mktemp("steer") / "run.db"
    hp.run(
        Walker,
        {"lr": 0.5},
        metric="score",
        population=2,
        budget=2,
        storage=db,
        backend="simulated",
    )
    return db


def _post(db, **kw):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from hyperpop.dashboard.app import create_app

    with TestClient(create_app(db, token="t"), base_url="http://localhost") as client:
        return client.post("/api/request", headers={"X-Hyperpop-Token": "t"}, **kw)


@pytest.mark.parametrize(
    ("member", "shown"), [(True, "True"), (False, "False"), (1.7, "1.7"), (1.0, "1.0")]
)
def test_the_dashboard_refuses_a_member_that_is_not_an_int(finished_run, member, shown):
    body = {"kind": "pin", "member": member, "data": {"pinned": True}}
    r = _post(finished_run, json=body)
    assert r.status_code == 400
    assert r.json() == {"error": f"a request's member must be an int, got {shown}"}
    assert RequestLog(finished_run).read() == []


@pytest.mark.parametrize(
    ("kind", "data", "error"),
    [
        ("add", {"count": True}, "count (members to add) must be an int, got True"),
        ("workers", {"workers": 2.0}, "workers (members training at once) must be an int, got 2.0"),
        (
            "budget",
            {"budget": [{"type": "steps", "n": True}]},
            "a steps budget's n must be an int, got True",
        ),
    ],
)
def test_the_dashboard_refuses_other_numbers_that_are_not_ints(finished_run, kind, data, error):
    r = _post(finished_run, json={"kind": kind, "data": data})
    assert r.status_code == 400 and r.json() == {"error": error}


def test_the_dashboard_refuses_a_bool_donor(finished_run):
    body = {"kind": "copy", "member": 0, "data": {"donor": True}}
    r = _post(finished_run, json=body)
    assert r.status_code == 400
    assert r.json() == {"error": "donor (the member to copy) must be an int, got True"}


def test_a_form_member_is_read_as_a_whole_number_only(finished_run):
    form = {"token": "t", "kind": "pin", "member": "1.7", "data": '{"pinned": true}'}
    r = _post(finished_run, data=form)
    assert r.status_code == 400
    assert r.json()["error"].startswith("a request's member must be an int, got '1.7'")
    # a whole number reaches the request's other checks (here: no driver writes the store)
    r = _post(finished_run, data={**form, "member": "1"})
    assert r.status_code == 400 and "no driver is writing" in r.json()["error"]


# --- a full disk: shared storage (Ray) gives the checkpoint folder's one-line error -------


def _disk_full_for_blobs(monkeypatch):
    """Every blob write fails as on a full disk (the technique of test_checkpoint_folders)."""
    real = ckpt.write_atomic

    def full(path, data, *, fsync=True):
        if str(path).endswith(".ckpt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data, fsync=fsync)

    monkeypatch.setattr(ckpt, "write_atomic", full)


def test_shared_storage_on_a_full_disk_gives_the_checkpoint_folders_error(tmp_path, monkeypatch):
    folder = checkpoint_dir_for(tmp_path / "r.db")
    _disk_full_for_blobs(monkeypatch)
    with pytest.raises(ckpt.CheckpointFullError) as local:
        ckpt.CheckpointStore(folder).write("m0-s1-a", b"x")
    with pytest.raises(ckpt.CheckpointFullError) as shared:
        SharedStorage(folder).write("m0-s1-a", b"x")
    assert str(shared.value) == str(local.value)
    assert "\n" not in str(local.value) and f"hyperpop resume {tmp_path / 'r.db'}" in str(
        local.value
    )
    assert not list(folder.glob("*"))  # nothing half-written


def test_a_worker_saving_to_full_shared_storage_stops_the_run_not_the_member(tmp_path, monkeypatch):
    """A Ray actor trains with a WorkerCore whose saves go to shared storage: its failure must
    read, in the driver, as the full disk (one line, the run stops), not as the member's
    fault (retried, then given up)."""
    folder = checkpoint_dir_for(tmp_path / "r.db")
    store = WorkerStore(SharedStorage(folder), sees_shared=True, transfer="shared")
    core = WorkerCore(Walker, store)
    _disk_full_for_blobs(monkeypatch)
    result = core.run(Task(member=0, config={"lr": 0.5}, checkpoint=None, step=0, steps=2))
    full = ckpt.full_disk_error(result.error)
    assert full is not None, result.error
    assert str(full).startswith(f"cannot write a checkpoint to {folder}: the disk is full")
    assert f"hyperpop resume {tmp_path / 'r.db'}" in str(full)


def test_full_shared_storage_elsewhere_names_the_store_to_resume(tmp_path, monkeypatch):
    """Shared storage apart from the checkpoint folder (an NFS mount): the actor cannot know
    the store, so the driver fills in the resume command with its own path."""
    db, shared = tmp_path / "r.db", tmp_path / "nfs"
    store = WorkerStore(SharedStorage(shared), sees_shared=True, transfer="shared")
    _disk_full_for_blobs(monkeypatch)
    result = WorkerCore(Walker, store).run(
        Task(member=0, config={"lr": 0.5}, checkpoint=None, step=0, steps=1)
    )
    full = ckpt.full_disk_error(result.error, store=db)
    assert full is not None and f"cannot write a checkpoint to {shared}: the disk is full" in str(
        full
    )
    assert str(full).endswith(f"free some space, then `hyperpop resume {db}` continues")


# --- retries: a resume counts the failures the log holds ------------------------------------


class _BreaksAtStep2(hp.Trainable):
    """Member configs with ``breaks`` raise from step 2 on, on every attempt (each retry
    starts again from the checkpoint at step 2)."""

    def setup(self, config):
        self.n, self.breaks = 0, config["breaks"]

    def apply(self, config):
        self.breaks = config["breaks"]

    def train(self):
        if self.breaks and self.n >= 2:
            raise RuntimeError("a bug that a retry does not fix")
        self.n += 1
        return {"score": float(self.n)}

    def save(self):
        return {"n": self.n}

    def load(self, state):
        self.n = state["n"]


_RETRY_RUN = dict(
    metric="score",
    population=2,
    budget=6,
    ready=2,
    exploit=None,
    explore=None,
    max_failures=3,
    configs=[{"breaks": 1}, {"breaks": 0}],
    progress=False,
)


def _failures_of_member_0(result: hp.Result) -> list[tuple[int, bool]]:
    return [
        (e.data["attempt"], e.data.get("fatal", False))
        for e in result.events
        if e.kind == "failed" and e.member == 0
    ]


def test_a_resumed_run_gives_a_member_up_after_the_same_number_of_failures(tmp_path):
    space = {"breaks": hp.choice([0, 1])}
    whole = hp.run(
        _BreaksAtStep2, space, storage=tmp_path / "whole.db", backend="simulated", **_RETRY_RUN
    )
    expected = [(1, False), (2, False), (3, False), (4, True)]  # 1 + max_failures attempts
    assert _failures_of_member_0(whole) == expected
    db = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            _BreaksAtStep2,
            space,
            storage=db,
            backend=Interrupted(2, at="fill", failures=True),
            **_RETRY_RUN,
        )
    assert len(_failures_of_member_0(hp.load(db))) == 2
    resumed = hp.resume(db, _BreaksAtStep2, backend=SimulatedBackend(workers=2), progress=False)
    assert _failures_of_member_0(resumed) == expected  # not 2 + 4 failures
    m0, m1 = resumed.members
    assert (m0.status, m0.failures, m0.step) == ("failed", 4, 2)
    assert (m1.status, m1.step) == ("finished", 6)


def test_a_member_given_up_gets_a_whole_new_round_of_retries_on_resume(tmp_path):
    """As the guide says: a resume gives a member given up ``max_failures`` retries again."""
    space = {"breaks": hp.choice([0, 1])}
    db = tmp_path / "run.db"
    hp.run(_BreaksAtStep2, space, storage=db, backend="simulated", **_RETRY_RUN)
    again = hp.resume(db, _BreaksAtStep2, backend=SimulatedBackend(workers=2), progress=False)
    assert _failures_of_member_0(again) == [(1, False), (2, False), (3, False), (4, True)] * 2


class _FailsOnceAt2And4(_BreaksAtStep2):
    """Raises once at step 2 and once at step 4 (the steps it failed at are in a file)."""

    def setup(self, config):
        super().setup(config)
        self.seen = Path(config["dir"]) / "failed-at"

    def train(self):
        failed = self.seen.read_text().split() if self.seen.exists() else []
        if self.n in (2, 4) and str(self.n) not in failed:
            self.seen.write_text(" ".join([*failed, str(self.n)]))
            raise RuntimeError(f"a passing fault at step {self.n}")
        self.n += 1
        return {"score": float(self.n)}


def test_a_success_ends_a_run_of_failures_across_a_resume(tmp_path):
    """max_failures=1: a member that fails once, succeeds, then fails once again is not given
    up, whether or not the run was interrupted between the two failures."""
    db = tmp_path / "run.db"
    settings = {**_RETRY_RUN, "population": 1, "configs": None, "max_failures": 1}
    space = {"breaks": 0, "dir": str(tmp_path)}
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            _FailsOnceAt2And4,
            space,
            storage=db,
            backend=Interrupted(1, at="fill", failures=True),
            **settings,
        )
    resumed = hp.resume(db, _FailsOnceAt2And4, backend=SimulatedBackend(workers=2), progress=False)
    assert _failures_of_member_0(resumed) == [(1, False), (1, False)]
    (m0,) = resumed.members
    assert (m0.status, m0.step, m0.failures) == ("finished", 6, 2)
