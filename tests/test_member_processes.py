"""A member of several processes on the local backend (issue 22): the group's environment,
rank 0's reports and checkpoints, every rank's state and hyperparameters, a rank that dies,
raises or hangs, a driver killed with groups running, and resizing the backend."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from group_trainables import GroupWalker

import hyperpop as hp
from hyperpop.backends.base import Task
from hyperpop.backends.local import LocalBackend
from hyperpop.backends.process_group import ProcessGroup
from hyperpop.checkpoints import CheckpointStore
from hyperpop.errors import SettingsError
from hyperpop.store.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

HERE = Path(__file__).resolve().parent


def space(folder: Path, **extra) -> dict:
    return {"lr": hp.uniform(0.1, 1.0), "dir": str(folder), **extra}


def ranks(folder: Path) -> list[dict]:
    """What every rank wrote at each step (group_trainables.GroupWalker)."""
    path = folder / "ranks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def events(db: Path) -> list:
    try:
        store = SQLiteStore(db)
    except Exception:  # noqa: BLE001 - not created yet
        return []
    try:
        return store.read()
    finally:
        store.close()


def check_history(db: Path, steps: int) -> None:
    """Each member's reports continue the state its checkpoints (its own or a donor's) held,
    one step at a time, nothing lost or repeated, and every member trained all its steps."""
    state: dict[int, tuple[int, float]] = {}
    config: dict[int, dict] = {}
    blobs: dict[str, tuple] = {}
    for e in events(db):
        m, d = e.member, e.data
        if e.kind == "member_created":
            state[m], config[m] = (0, 0.0), d["config"]
        elif e.kind == "reported":
            step, x = state[m]
            metrics = d["metrics"]
            assert d["step"] == step + 1 == metrics["n"], (e.seq, d)
            assert metrics["rank"] == 0 and metrics["world"] == 2
            assert metrics["lr_used"] == config[m]["lr"]
            assert math.isclose(metrics["x"], x + metrics["lr_used"], rel_tol=1e-9)
            state[m] = (d["step"], metrics["x"])
        elif e.kind == "checkpointed":
            blobs[d["checkpoint"]] = (state[m], dict(config[m]))
        elif e.kind == "exploited":
            state[m], config[m] = blobs[d["checkpoint"]][0], dict(blobs[d["checkpoint"]][1])
        elif e.kind == "explored":
            config[m] = d["config"]
    assert state and all(step == steps for step, _ in state.values()), state


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_a_member_of_two_processes_trains_as_the_ranks_of_one_group(tmp_path):
    db = tmp_path / "run.db"
    result = hp.run(GroupWalker, space(tmp_path), metric="score", population=2, workers=1,
                    budget=6, ready=2, processes_per_member=2, storage=db,
                    progress=False)  # fmt: skip
    assert result.population.settings["processes_per_member"] == 2
    check_history(db, 6)  # rank 0 reports; exploits give the donor's state (every rank checks)
    seen = ranks(tmp_path)
    assert {(s["rank"], s["world"]) for s in seen} == {(0, 2), (1, 2)}
    assert len({s["group"] for s in seen}) == 1 and seen[0]["group"].startswith("local-0-")
    # apply reaches every rank: each step of rank 0 has a step of rank 1 with the same lr
    by_rank = [sorted((s["n"], s["lr"]) for s in seen if s["rank"] == r) for r in (0, 1)]
    assert by_rank[0] == by_rank[1]
    explored = [e.data["config"]["lr"] for e in events(db) if e.kind == "explored"]
    assert explored and all(lr in {s["lr"] for s in seen if s["rank"] == 1} for lr in explored)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("kill", "(rank 1 of 2) died while training member"),
        ("raise", "rank 1 fails on purpose"),
        ("hang", "exceeded step_timeout=2s"),
    ],
)
def test_a_rank_that_dies_raises_or_hangs_fails_the_interval_and_the_group(tmp_path, fault, says):
    db = tmp_path / "run.db"
    t0 = time.monotonic()
    result = hp.run(GroupWalker, space(tmp_path, fault=fault, at=3), metric="score",
                    population=2, workers=1, budget=6, ready=2, processes_per_member=2,
                    step_timeout=2, storage=db, progress=False)  # fmt: skip
    assert time.monotonic() - t0 < 30  # no rank waited on a dead peer for long
    failed = [e.data["error"] for e in events(db) if e.kind == "failed"]
    assert len(failed) == 1 and says in failed[0], failed
    check_history(db, 6)  # the member was retried from its checkpoint: nothing lost
    assert [m.status for m in result.members] == ["finished", "finished"]
    # the failed group's ranks were stopped, and the retry ran on a fresh group
    bad = int((tmp_path / "fault-done").read_text())
    group = next(s["group"] for s in ranks(tmp_path) if s["pid"] == bad)
    assert all(gone(s["pid"]) for s in ranks(tmp_path) if s["group"] == group)
    assert len({s["group"] for s in ranks(tmp_path)}) == 2


def test_a_group_runs_intervals_for_an_actor(tmp_path):
    """ProcessGroup.run: the blocking use a Ray actor makes of a group (state kept between
    intervals, a failed group started afresh by the next call)."""
    import cloudpickle

    ckpts = CheckpointStore(tmp_path / "ckpt")
    config = {"lr": 0.5, "dir": str(tmp_path)}
    init = {"factory": cloudpickle.dumps(GroupWalker), "root": str(ckpts.root), "name": "a-0",
            "cache": None, "threads": 1}  # fmt: skip
    group = ProcessGroup(2, init)
    group.start()
    try:
        result = group.run(Task(3, config, None, 0, 4))
        assert result.error is None and [r["n"] for r in result.reports] == [1, 2, 3, 4]
        assert ckpts.load(result.checkpoint) == {"x": 2.0, "n": 4, "rank": 0}
        killed = group.run(Task(3, {**config, "fault": "kill", "at": 5}, result.checkpoint, 4, 2))
        assert "(rank 1 of 2) died" in (killed.error or "") and not group.alive()
        more = group.run(Task(3, config, result.checkpoint, 4, 2))
        assert [r["x"] for r in more.reports] == [2.5, 3.0] and more.restored
    finally:
        group.stop()


def test_a_driver_killed_with_groups_running_resumes(tmp_path):
    db = tmp_path / "run.db"
    env = dict(os.environ, GROUP_DIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "hyperpop", "run", str(HERE / "group_job.py"), "-q",
           "--storage", str(db), "--processes-per-member", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while sum(e.kind == "reported" for e in events(db)) < 5:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no reports"
        time.sleep(0.02)
    running = {s["pid"] for s in ranks(tmp_path)}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in running):  # the ranks die with their driver
        assert time.monotonic() < deadline, "ranks outlived their driver"
        time.sleep(0.01)
    before = len(events(db))
    result = hp.resume(db, progress=False)  # processes_per_member as recorded
    assert len(events(db)) > before and result.summary()["status"] == "finished"
    check_history(db, 8)
    after = [s for s in ranks(tmp_path) if s["pid"] not in running]
    assert after and {s["world"] for s in after} == {2}


def test_processes_per_member_is_checked_and_refused_where_it_cannot_run(tmp_path):
    with pytest.raises(SettingsError, match=r"processes_per_member must be a positive int"):
        hp.run(GroupWalker, space(tmp_path), metric="score", processes_per_member=0)
    with pytest.raises(SettingsError, match="not with processes_per_member=2"):
        hp.run(GroupWalker, space(tmp_path), metric="score", processes_per_member=2,
               backend="vectorized")  # fmt: skip
    with pytest.raises(SettingsError, match="give ready in steps"):
        hp.run(GroupWalker, space(tmp_path), metric="score", processes_per_member=2,
               ready=hp.Ready(seconds=1.0))  # fmt: skip
    with pytest.raises(ValueError, match="does not split over processes_per_member=2"):
        LocalBackend(gpus=["0", "1", "2"], gpus_per_member=3, processes_per_member=2,
                     gpu_discovery=lambda: ["0", "1", "2"])  # fmt: skip
    two = LocalBackend(gpus=["0", "1"], processes_per_member=2, gpu_discovery=lambda: ["0", "1"])
    assert two.worker_devices == [("0", "1")]  # one GPU per rank by default


def _walk(backend: LocalBackend, member: int, steps: int, folder: Path) -> Task:
    task = Task(member, {"lr": 0.5, "dir": str(folder), "sleep": 0.05}, None, 0, steps)
    backend.submit(task)
    return task


def test_resize_grows_at_once_and_shrinks_without_killing_an_interval(tmp_path):
    backend = LocalBackend(workers=1, threads_per_worker=1)
    backend.start(GroupWalker, CheckpointStore(tmp_path / "ckpt"))
    try:
        first = set(backend.pids())
        backend.resize(2)  # a new worker process starts now, the old one stays
        assert backend.capacity == 2 and len(backend.free_slots()) == 2
        assert first < set(backend.pids()) and len(backend.pids()) == 2
        long, short = _walk(backend, 0, 8, tmp_path), _walk(backend, 1, 1, tmp_path)
        backend.resize(1)
        assert backend.capacity == 1 and backend.free_slots() == []
        results = []
        while len(results) < 2:
            results += backend.poll(5.0)
            # the surplus slot retires once its interval ends; never free meanwhile
            assert len(backend.free_slots()) + sum(r.task is long for r in results) <= 1
        assert {r.task.member for r in results} == {long.member, short.member}
        assert all(r.error is None for r in results)
        assert len(backend.pids()) == 1 and backend.free_slots() == [0]
        _walk(backend, 2, 1, tmp_path)
        assert backend.poll(5.0)[0].error is None
    finally:
        backend.shutdown()


def test_the_ddp_example_gives_every_rank_the_explored_config_and_exports_a_plain_model(
    tmp_path,
):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from hyperpop.userfile import load_file

    rf = load_file(HERE.parent / "examples" / "digits_ddp.py")
    seen = tmp_path / "applied.jsonl"

    def apply(self, config):
        rf.trainable.apply(self, config)
        with open(seen, "a") as f:  # what each rank trains with from now on
            f.write(json.dumps({"rank": os.environ["RANK"], "config": config}) + "\n")

    recording = type("Recording", (rf.trainable,), {"apply": apply})
    # batches of 32 (16 per rank): half the optimiser steps, and so half the gradient
    # all-reduces, of batches of 16
    good = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32}
    bad = {**good, "lr": 1e-3}
    db = tmp_path / "run.db"
    # the weaker member is ready at step 2 and copies the stronger one (at its step 2 or 4, as
    # the single worker's order has it), which still has steps left before step 5
    kw = {"storage": db, "population": 2, "budget": hp.Steps(5), "ready": 2,
          "configs": [good, bad], "exploit": "tournament", "progress": False}  # fmt: skip
    result = hp.run(recording, rf.space, **{**rf.settings, **kw})
    explored = [e.data["config"] for e in events(db) if e.kind == "explored"]
    assert explored, "the weaker member exploited the stronger one"
    applied = [json.loads(line) for line in seen.read_text().splitlines()]
    for config in explored:  # both ranks took the explored hyperparameters
        assert {a["rank"] for a in applied if a["config"] == config} == {"0", "1"}
    state = result.load_checkpoint()
    assert not any(k.startswith("module.") for k in state["model"])
    assert rf.module.evaluate(state) > 0.85  # the exported state loads in one process


@pytest.mark.parametrize(("given", "strategy"), [({}, "ddp"), ({"strategy": "fsdp"}, "fsdp")])
def test_lightning_in_a_group_trains_with_ddp_over_its_processes(monkeypatch, given, strategy):
    pytest.importorskip("lightning")
    from types import SimpleNamespace

    from hyperpop.integrations.lightning import LightningTrainable

    built: dict = {}

    class Built(Exception):
        pass

    def trainer(**kwargs):
        built.update(kwargs)
        os.environ.pop("WORLD_SIZE", None)  # as Lightning's teardown does after a fit
        raise Built

    t = LightningTrainable()
    t.trainer_kwargs, t.quiet, t._ckpt = given, False, None
    t._pl = SimpleNamespace(Trainer=trainer)
    t._io_class, t._hook_class = (lambda: SimpleNamespace(store={})), (lambda owner: None)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(Built):
        t.train()
    assert built["devices"] == 1 and built.get("strategy") == given.get("strategy")  # one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(Built):
        t.train()
    assert (built["strategy"], built["devices"], built["num_nodes"]) == (strategy, 2, 1)
    assert os.environ["WORLD_SIZE"] == "2"  # the next interval's fit is in the group too


def test_the_torch_helpers_save_a_full_plain_state_and_load_it_on_every_rank():
    torch = pytest.importorskip("torch")
    from torch import nn

    import hyperpop.torch as hpt

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))

    plain = model()
    assert hpt.wrap_ddp(plain) is plain and hpt.split_batch(torch.ones(4))[0].shape == (4,)
    want = {k: v.clone() for k, v in plain.state_dict().items()}
    torch.distributed.init_process_group(
        "gloo", store=torch.distributed.HashStore(), rank=0, world_size=1
    )
    try:
        ddp = hpt.wrap_ddp(model())
        assert type(ddp).__name__ == "DistributedDataParallel"
        state = hpt.full_state_dict(ddp)  # no "module." prefix: loads into a plain model
        assert state.keys() == want.keys()
        hpt.load_full_state_dict(ddp, {k: v + 1 for k, v in want.items()})
        assert torch.equal(hpt.unwrap(ddp)[0].bias, want["0.bias"] + 1)
        sharded = hpt.wrap_fsdp(model())
        hpt.load_full_state_dict(sharded, {k: v * 2 for k, v in want.items()})
        full = hpt.full_state_dict(sharded)
        assert all(torch.equal(full[k], want[k] * 2) for k in want)
    finally:
        torch.distributed.destroy_process_group()


def test_random_kills_of_single_ranks_and_of_the_driver_lose_nothing(tmp_path):
    """The fault-injection campaign of test_faults on members of two processes: its worker
    strikes SIGKILL one rank of a group at random moments, between driver kills and resumes."""
    from test_faults import Campaign

    class Groups(Campaign):
        def start(self) -> None:
            cli = [sys.executable, "-m", "hyperpop"]
            if self.db.exists():
                cmd = cli + ["resume", str(self.db), "-q"]  # processes_per_member as recorded
            else:
                cmd = cli + ["run", str(HERE / "fault_job.py"), "-q", "--storage", str(self.db),
                             "--processes-per-member", "2"]  # fmt: skip
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)  # fmt: skip

    campaign = Groups(tmp_path, seed=2)
    tally = campaign.play()
    assert hp.load(campaign.db).population.settings["processes_per_member"] == 2
    assert tally.get("worker", 0) >= 1 and sum(tally.values()) >= 3, campaign.log


def test_a_retiring_worker_that_dies_is_not_replaced(tmp_path):
    backend = LocalBackend(workers=2, threads_per_worker=1)
    backend.start(GroupWalker, CheckpointStore(tmp_path / "ckpt"))
    try:
        kept, retiring = _walk(backend, 0, 8, tmp_path), _walk(backend, 1, 8, tmp_path)
        backend.resize(1)
        os.kill(backend.pids()[1], signal.SIGKILL)  # the worker of the retiring slot
        results = []
        while len(results) < 2:
            results += backend.poll(5.0)
        errors = {r.task.member: r.error for r in results}
        assert errors[kept.member] is None and "died" in (errors[retiring.member] or "")
        assert len(backend.pids()) == 1 and backend.free_slots() == [0]
    finally:
        backend.shutdown()
