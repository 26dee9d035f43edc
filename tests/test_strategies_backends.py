"""FIRE-PBT, MF-PBT and reserve PBT on the real backends (issue 23, item 4).

Their decision logic is tested on the simulated backend (tests/test_firepbt.py, test_mfpbt.py,
test_reserve.py). Here the same runs go through real worker processes (local backend),
asynchronously and synchronously, a real Ray cluster and the vectorized backend: every member
reports each step once between the decisions that move it, the roles show in ``Result.table()``
and the lineage, copies keep to the roles, evaluations hand weights over, and the result comes
from the right members. With ``deterministic=True`` (or synchronously) real workers decide
exactly as the simulated backend does; a driver killed with ``kill -9`` and resumed decides as
the uninterrupted run would; steering and rejuvenation go on beside the roles.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sim_backends import SteersSimulated

import hyperpop as hp
from hyperpop.steering import Steering
from hyperpop.store import events as ev
from hyperpop.store.requests import Request
from hyperpop.strategies import make_exploit
from hyperpop.summary import group_of
from hyperpop.userfile import RunFile, load_file

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
STRATEGIES = ("firepbt", "mfpbt", "reserve")
GROUPS = {
    "firepbt": {"greedy", "parent", "evaluator"},
    "mfpbt": {"mf 1/2 (every 1)", "mf 2/2 (every 4)"},
    "reserve": {"greedy", "reserve", "evaluator"},
}
#: who may copy whom (member's group -> donors' groups) while FIRE-style roles hold
ROLES = {
    "firepbt": {"greedy": {"greedy", "evaluator"}, "parent": {"parent"}, "evaluator": {"parent"}},
    "reserve": {"greedy": {"greedy", "evaluator"}, "reserve": set(), "evaluator": {"reserve"}},
}


@functools.cache
def example(name: str) -> RunFile:
    return load_file(EXAMPLES / f"{name}.py")


def run(exploit: str, backend: Any, task: str = "deceptive", **kw: Any) -> hp.Result:
    """8 members on 2 workers: the deceptive task for 200 steps, ready every 20 (long enough
    for FIRE-PBT's evaluations to succeed), or the noisy pbt_function task."""
    rf = example(task)
    steps, ready = (200, 20) if task == "deceptive" else (100, 5)
    settings: dict[str, Any] = dict(
        metric=rf.settings["metric"],
        mode=rf.settings["mode"],
        population=8,
        budget=hp.Steps(steps),
        ready=ready,
        seed=0,
        exploit=exploit,  # by name: a fresh strategy per run
        backend=backend,
        progress=False,
    )
    if isinstance(backend, str):
        settings["workers"] = 2
    settings.update(kw)
    return hp.run(rf.trainable, rf.space, **settings)


# --- what every run must show ----------------------------------------------------------------
def no_loss(res: hp.Result) -> None:
    """Each member reports steps 1, 2, ... in log order, each once, except that after a copy
    it goes on from the donor's step; every member reaches the budget."""
    budget = min(b["n"] for b in res.population.settings["budget"] if b["type"] == "steps")
    at: dict[int, int] = {}
    for e in res.events:
        if e.kind == ev.MEMBER_CREATED:
            at[e.member] = 0
        elif e.kind == ev.REPORTED:
            assert e.data["step"] == at[e.member] + 1, (e.member, e.data["step"], at[e.member])
            at[e.member] += 1
        elif e.kind == ev.EXPLOITED:
            at[e.member] = e.data["step"]
    assert res.summary()["status"] == "finished"
    assert {m.id: m.step for m in res.population.members.values()} == dict.fromkeys(at, budget)


def copies(res: hp.Result) -> list[tuple[str, str]]:
    """(member's group, donor's group) of every copy the strategy decided."""
    return [(r["group"], r["donor_group"]) for r in res.lineage() if r["by"] == "pbt"]


def check(res: hp.Result, exploit: str) -> Counter[tuple[str, str]]:
    """What every run of ``exploit`` shows; returns its copies by (member, donor) group."""
    no_loss(res)
    settings = res.population.settings
    strategy = make_exploit(exploit)
    table = res.table()
    assert set(table["group"]) == GROUPS[exploit]
    assert all(g == strategy.group_label(m, 8) for m, g in zip(table["member"], table["group"]))
    pairs = Counter(copies(res))
    if exploit in ROLES:
        allowed = ROLES[exploit]
        assert all(d in allowed[m] for m, d in pairs), pairs
        hyperparameters_follow_the_roles(res)
    # the best checkpoint kept is the best ready point of the members that may be the result
    pop, best = res.population, res.best
    members = [m for m in pop.members.values() if pop.in_result(m.id)]
    assert best.score == pytest.approx(pop.best_score)
    sign = 1 if settings["mode"] == "max" else -1
    assert sign * best.score >= max(sign * m.ready_score for m in members)
    if exploit == "firepbt":  # the greedy sub-population's; else any member's
        assert {group_of(settings, m.id) for m in members} == {"greedy"}
        assert group_of(settings, pop.blobs[pop.best_checkpoint].member) == "greedy"
    else:
        assert len(members) == len(pop.members)
    return pairs


def hyperparameters_follow_the_roles(res: hp.Result) -> None:
    """FIRE-PBT's hyperparameters, read off the log: an evaluator that copies a parent trains
    with a greedy member's hyperparameters (unexplored), and a greedy member that takes an
    evaluator's weights keeps its own."""
    settings = res.population.settings
    config: dict[int, Any] = {}  # each member's hyperparameters as the log stands
    greedy: list[Any] = []  # every config a greedy member trained with so far
    blob: dict[str, Any] = {}  # each checkpoint's config
    last: tuple[str, int, Any] | None = None  # the latest copy by the strategy: roles, member
    for e in [*res.events, None]:
        if last is not None and not (e and e.kind == ev.EXPLORED and e.member == last[1]):
            roles, m, before = last
            if roles == "evaluator":
                assert config[m] in greedy, (m, config[m])
            else:
                assert config[m] == before, (m, config[m], before)
            last = None
        if e is None:
            break
        if e.kind == ev.MEMBER_CREATED:
            config[e.member] = e.data["config"]
        elif e.kind in (ev.EXPLORED, ev.REJUVENATED):
            config[e.member] = e.data["config"]
        elif e.kind == ev.CHECKPOINTED:
            blob[e.data["checkpoint"]] = config[e.member]
            if group_of(settings, e.member) == "greedy":
                greedy.append(config[e.member])
        elif e.kind == ev.EXPLOITED:
            before, config[e.member] = config[e.member], blob[e.data["checkpoint"]]
            mine, theirs = group_of(settings, e.member), group_of(settings, e.data["donor"])
            if e.data.get("by") is None and mine == "evaluator":
                last = ("evaluator", e.member, before)
            elif e.data.get("by") is None and (mine, theirs) == ("greedy", "evaluator"):
                last = ("greedy", e.member, before)


def check_deceptive(res: hp.Result, exploit: str) -> None:
    """On the deceptive task the roles do their work: evaluations start on parents (reserve
    members) and hand their weights to greedy members; MF-PBT's slow sub-population copies at
    most once per four ready points, and members migrate both ways."""
    pairs = check(res, exploit)
    if exploit == "firepbt":
        assert {("evaluator", "parent"), ("greedy", "evaluator"), ("greedy", "greedy")} <= set(
            pairs
        ), pairs
    elif exploit == "reserve":
        assert {("evaluator", "reserve"), ("greedy", "evaluator")} <= set(pairs), pairs
    else:
        fast, slow = sorted(GROUPS["mfpbt"])
        assert {(fast, fast), (fast, slow), (slow, fast)} <= set(pairs), pairs
        for m in res.population.members.values():
            if m.id % 2:  # slow: at most one copy per four ready points
                mine = [r for r in res.lineage() if r["member"] == m.id and r["by"] == "pbt"]
                assert len(mine) <= m.ready_count // 4


def lineage(res: hp.Result) -> tuple[list, list]:
    """What a run decided and measured: its family tree and every report."""
    reports = sorted(
        (e.member, e.data["step"], e.data["score"]) for e in res.events if e.kind == ev.REPORTED
    )
    return [(e.kind, e.member, e.donor, e.step, e.at) for e in res.population.edges], reports


# --- real worker processes -------------------------------------------------------------------
@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("exploit", STRATEGIES)
def test_local_workers_decide_as_the_simulated_backend(exploit, synchronous):
    """Asynchronous runs with deterministic=True, and synchronous runs, make on real worker
    processes every decision the simulated backend makes, and the roles do their work."""
    local = run(exploit, "local", synchronous=synchronous, deterministic=True)
    check_deceptive(local, exploit)
    simulated = run(exploit, "simulated", synchronous=synchronous, deterministic=True)
    assert lineage(local) == lineage(simulated)


@pytest.mark.parametrize("exploit", ["firepbt", "mfpbt", "reserve"])
def test_steering_and_rejuvenation_go_on_beside_the_roles(tmp_path, monkeypatch, exploit):
    """On the noisy task, where members stall and are reset, a person pins a member (it decides
    nothing more), sets hyperparameters, makes a member copy and adds two (they get the roles
    of their ids and take part); the roles hold for every copy the strategy makes. Steering is
    the driver's, the same on every backend, so this runs simulated: on real workers in the
    default mode (results as they arrive) whether an added member is copied or two roles stall
    within the run depends on the order results arrive in (tests/test_steer.py steers real
    workers)."""
    # the driver reads the requests at its next poll (not up to 0.2 s later, when a loaded
    # machine may have trained the members to the end of a run this short)
    monkeypatch.setattr(Steering, "REQUEST_INTERVAL", 0.0)
    db = tmp_path / "run.db"
    asks = [
        Request("pin", 7, {"pinned": True}),
        Request("set_config", 2, {"config": {"lr": 0.005}}),
        Request("copy", 6, {"donor": 0}),
        Request("add", None, {"count": 2}),
    ]
    res = run(
        exploit,
        SteersSimulated(db, 300, asks),
        task="pbt_function",
        storage=db,
        rejuvenate=hp.Rejuvenate(patience=2, config="resample"),
    )
    handled = [e.data["status"] for e in res.events if e.kind == ev.REQUEST_HANDLED]
    assert handled == ["done"] * 4
    assert sorted(res.population.members) == list(range(10))
    pairs = check(res, exploit)
    settings = res.population.settings
    pinned = next(e.seq for e in res.events if e.kind == ev.PINNED)
    assert not [e for e in res.population.edges if e.member == 7 and e.seq > pinned]
    assert any(r["by"] == "user" and r["member"] == 6 for r in res.lineage())
    added = {group_of(settings, m) for m in (8, 9)}
    assert added == {make_exploit(exploit).group_label(m, 8) for m in (8, 9)}
    assert any(r["member"] in (8, 9) for r in res.lineage() if r["by"] == "pbt")
    reset = {group_of(settings, r["member"]) for r in res.rejuvenations()}
    assert len(reset) >= 2 and reset <= GROUPS[exploit]  # not only one role stalls
    assert pairs


# --- kill -9 of a real driver ----------------------------------------------------------------
JOB = """
import os, sys, time
sys.path.insert(0, {examples!r})
import hyperpop as hp
from deceptive import Deceptive, space


class Blocking(Deceptive):
    '''Blocks for good at step 100 of the first member to reach it, when BLOCK_FLAG names a
    file that does not exist yet (only in the driver that is killed).'''

    def train(self):
        flag = os.environ.get("BLOCK_FLAG")
        if flag and self.step == 100:
            try:
                os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                time.sleep(120)
        return super().train()


trainable = Blocking
settings = dict(metric="Q", mode="max", population=8, workers=2, budget=hp.Steps(200),
                ready=20, seed=0, exploit="firepbt", deterministic=True, progress=False)

if __name__ == "__main__":
    hp.run(trainable, space, storage=sys.argv[1], backend="local", **settings)
"""

#: what a run decided and measured, event by event (not when: times differ across sessions)
DECIDED = (ev.REPORTED, ev.CHECKPOINTED, ev.EXPLOITED, ev.EXPLORED, ev.FINISHED, ev.FAILED)


def decided(events: list) -> list[tuple]:
    return [
        (e.kind, e.member, e.data.get("step"), e.data.get("config"), e.data.get("score"))
        for e in events
        if e.kind in DECIDED
    ]


def test_a_killed_driver_resumes_to_the_uninterrupted_runs_decisions(tmp_path):
    """FIRE-PBT, asynchronous and deterministic, on real workers: the driver is killed with
    ``kill -9`` while a member trains its 6th interval; the resumed run keeps every event the
    killed one wrote and then takes every decision the uninterrupted run takes (roles,
    evaluations and the simulated clock are all read off the log)."""
    job, db = tmp_path / "job.py", tmp_path / "run.db"
    job.write_text(JOB.format(examples=str(EXAMPLES)))
    env = dict(os.environ, BLOCK_FLAG=str(tmp_path / "blocked"))
    proc = subprocess.Popen(
        [sys.executable, str(job), str(db)], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while not (tmp_path / "blocked").exists():
        assert proc.poll() is None, f"the run ended before the kill:\n{proc.stderr.read()}"
        assert time.time() < deadline, "no member reached step 100"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = decided(hp.load(db).events)
    assert before and not hp.load(db).population.finished

    rf = load_file(job)
    resumed = hp.resume(db, trainable=rf.trainable, progress=False)
    whole = hp.run(rf.trainable, rf.space, backend="simulated", **rf.settings)
    got, expected = decided(resumed.events), decided(whole.events)
    assert got[: len(before)] == before  # nothing the killed driver wrote was lost
    assert got == expected
    # decisions were taken on both sides of the kill
    assert ev.EXPLOITED in {e[0] for e in before} and ev.EXPLOITED in {
        e[0] for e in got[len(before) :]
    }
    assert resumed.population.resumes == 1
    check_deceptive(resumed, "firepbt")


# --- a Ray cluster ---------------------------------------------------------------------------
@pytest.mark.xdist_group("ray")
def test_a_ray_cluster_decides_as_the_simulated_backend():
    """Each strategy, asynchronous (deterministic) and synchronous, on warm actors of one local
    Ray cluster: the simulated backend's decisions, and the roles do their work."""
    pytest.importorskip("ray")
    from ray_local import local_ray

    from hyperpop.backends.ray import RayBackend

    local_ray()  # shared with the other Ray tests
    backend = RayBackend(2, keep_actors=True)
    try:
        for exploit in STRATEGIES:
            for synchronous in (False, True):
                res = run(exploit, backend, synchronous=synchronous, deterministic=True)
                assert res.population.settings["backend"] == "ray"
                check_deceptive(res, exploit)
                simulated = run(exploit, "simulated", synchronous=synchronous)
                assert lineage(res) == lineage(simulated), (exploit, synchronous)
    finally:
        backend.close()


# --- the vectorized backend ------------------------------------------------------------------
@functools.cache
def line() -> type:
    """A linear fit as a VectorizedTrainable (the members train as one stacked model)."""
    torch = pytest.importorskip("torch")
    from hyperpop.vectorized import VectorizedTrainable

    class Line(VectorizedTrainable):
        batch_size = 8
        batches_per_step = 1
        stop_at: int | None = None  # the run stops (as by Ctrl-C) once the members reach it

        def batches(self, members):
            if self.stop_at is not None and members.step >= self.stop_at:
                raise KeyboardInterrupt
            yield from super().batches(members)

        def build_model(self, config):
            return torch.nn.Linear(2, 1)

        def data(self, config):
            x = torch.linspace(-1, 1, 32).reshape(16, 2)
            return x, x.sum(1, keepdim=True)

        def loss(self, model, batch, hp):
            x, y = batch
            return (model(x) - y).pow(2).mean()

    return Line


def vectorized(exploit: str, synchronous: bool, trainable: type | None = None, **kw) -> hp.Result:
    """8 members of the linear fit, 8 steps, ready every 2, trained as one stacked model."""
    from hyperpop.backends.vectorized import VectorizedBackend

    return hp.run(
        trainable or line(),
        {"lr": hp.loguniform(1e-3, 0.5)},
        metric="loss",
        mode="min",
        population=8,
        budget=hp.Steps(8),
        ready=2,
        seed=0,
        exploit=exploit,
        synchronous=synchronous,
        deterministic=True,
        backend=VectorizedBackend(8, threads=1),
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("synchronous", [False, True], ids=["async", "sync"])
@pytest.mark.parametrize("exploit", STRATEGIES)
def test_the_vectorized_backend_trains_the_roles_together(exploit, synchronous):
    """The whole population trains as one stacked model: evaluators start on parents (reserve
    members) with a greedy member's hyperparameters, MF-PBT's sub-populations migrate, and a
    deterministic asynchronous run repeats."""
    res = vectorized(exploit, synchronous)
    assert res.population.settings["backend"] == "vectorized"
    pairs = set(check(res, exploit))
    evaluations = {"firepbt": ("evaluator", "parent"), "reserve": ("evaluator", "reserve")}
    if exploit in evaluations:
        assert evaluations[exploit] in pairs, pairs
    else:
        assert any(m != d for m, d in pairs), pairs  # migrations
    if not synchronous:
        assert lineage(vectorized(exploit, synchronous)) == lineage(res)


def test_a_vectorized_run_interrupted_and_resumed_decides_as_uninterrupted(tmp_path):
    """Synchronous FIRE-PBT on the vectorized backend, interrupted in its 4th generation: the
    resumed run takes every one of the uninterrupted run's decisions. (An asynchronous run
    resumes exactly too, although it groups members into other calls: each member draws its
    data order from its own generator, seeded by its id and step. See
    tests/test_vectorized_resume.py.)"""
    stops = type("Stops", (line(),), {"stop_at": 6})
    whole = vectorized("firepbt", True, storage=tmp_path / "whole.db")
    with pytest.raises(KeyboardInterrupt):
        vectorized("firepbt", True, trainable=stops, storage=tmp_path / "cut.db")
    resumed = hp.resume(tmp_path / "cut.db", trainable=line(), progress=False)
    assert resumed.population.resumes == 1
    assert decided(resumed.events) == decided(whole.events)
    check(resumed, "firepbt")
