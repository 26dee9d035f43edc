"""The Ray backend on a local Ray cluster of its own (issue 22): ``workers="auto"`` follows the
cluster (a second node joins mid-run, its new actor trains members, then the node leaves: its
interval is retried and no report is lost), a request changes the number of actors, and a
member of two processes runs on one actor's node. The cluster is tests/ray_nodes.py's head
node, shared with tests/test_ray_multinode.py."""

from __future__ import annotations

import json
import os
import signal

import cloudpickle
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("psutil")

from ray_nodes import (  # noqa: E402
    RAY,
    NodeToy,
    in_child,
    passes_in_a_fresh_interpreter,
    shared_head,
    toy,
    wait_for,
)

import hyperpop as hp  # noqa: E402
from hyperpop.backends.ray import RayBackend  # noqa: E402
from hyperpop.store import vocabulary as voc  # noqa: E402

pytestmark = pytest.mark.skipif(RAY is None, reason="the `ray` command is not installed")


@pytest.mark.timeout(360)
def test_in_a_fresh_interpreter(request):
    """As in tests/test_ray_multinode.py (and in the same interpreter, on the same head
    node): without the Ray variables an earlier ``ray.init`` left in this one's environment."""
    passes_in_a_fresh_interpreter(request)


@pytest.fixture(scope="module")
def head(request):
    """The shared head node (one CPU), this process connected to it."""
    return shared_head(request)


@pytest.mark.timeout(200)
@in_child
def test_a_node_joins_trains_and_leaves(tmp_path, head):
    head_node = ray.get_runtime_context().get_node_id()
    backend = RayBackend("auto", follow_seconds=0.3)
    joined: list[str] = []
    nodes = []

    def alive() -> list[str]:
        return [n["NodeID"] for n in ray.nodes() if n["Alive"]]

    def follow_the_cluster(pop):  # the driver loop calls this after each poll
        if not joined and pop.reports >= 8:  # a node joins: the run waits for its actor
            nodes.append(head.add_node("joining", wait=False))
            log = head.logs / "joining.log"
            wait_for("the second node", lambda: len(alive()) == 2, log=log)
            joined.extend(set(alive()) - {head_node})
            wait_for("its actor", lambda: backend.capacity == 2)
        elif (
            joined
            and nodes[0].poll() is None
            and joined[0] in {m.last_metrics.get("node") for m in pop.members.values()}
        ):
            os.killpg(nodes[0].pid, signal.SIGTERM)  # the node leaves (ray stop)
            nodes[0].wait(30)
            wait_for("Ray to see it gone", lambda: alive() == [head_node])

    cloudpickle.register_pickle_by_value(toy)
    try:
        steps = 24
        res = hp.run(
            NodeToy,
            toy.space,
            metric="Q",
            population=4,
            budget=hp.Steps(steps),
            ready=4,
            backend=backend,
            storage=tmp_path / "r.db",
            progress=follow_the_cluster,
            seed=0,
        )
    finally:
        cloudpickle.unregister_pickle_by_value(toy)
        for node in nodes:
            head.remove(node)
    assert joined and backend.resized[:2] == [(1, 2), (2, 1)], backend.resized
    followed = [  # each change the cluster made is an event (the last may end the session)
        (e.payload.old_workers, e.payload.workers)
        for e in res.events
        if isinstance(e.payload, voc.WorkersChanged) and e.payload.by == voc.CLUSTER
    ]
    assert followed[:1] == [(1, 2)] and followed == backend.resized[: len(followed)], followed
    assert {r["node"] for r in res.records()} == {head_node, joined[0]}  # both trained
    assert all(not e.data.get("fatal") for e in res.events if e.kind == "failed")
    reported = [(e.member, e.data["step"]) for e in res.events if e.kind == "reported"]
    assert len(reported) == len(set(reported)) == res.population.reports  # each once, none lost
    assert all(m.status == "finished" and m.step == steps for m in res.members)


class Ranked(hp.Trainable):
    """``x`` grows by the lr, ``n`` counts steps; it says which rank of how many reported, and
    every other rank writes what it trained to the file ``config["ranks"]``, for the test."""

    def setup(self, config):
        self.x, self.n = 0.0, 0
        self.apply(config)

    def apply(self, config):
        self.lr, self.ranks = config["lr"], config["ranks"]

    def train(self):
        self.x, self.n = self.x + self.lr, self.n + 1
        out = {"score": self.x, "n": self.n, "x": self.x, "lr_used": self.lr}
        if os.environ.get("RANK", "0") != "0":
            with open(self.ranks, "a") as f:
                f.write(json.dumps([self.n, self.x, self.lr]) + "\n")
        return {**out, "rank": os.environ.get("RANK"), "world": os.environ.get("WORLD_SIZE")}

    def save(self):
        return {"x": self.x, "n": self.n}

    def load(self, state):
        self.x, self.n = state["x"], state["n"]


@pytest.mark.timeout(120)
@in_child
def test_a_member_of_two_processes_runs_on_one_actors_node(tmp_path, head):
    backend = RayBackend(1, num_cpus=0.5, processes_per_member=2)  # two ranks on the 1-CPU head
    res = hp.run(
        Ranked,
        {"lr": hp.uniform(0.1, 1.0), "ranks": str(tmp_path / "ranks.jsonl")},
        metric="score",
        population=3,
        budget=12,
        ready=3,
        seed=2,
        backend=backend,
        storage=tmp_path / "r.db",
        progress=False,
    )
    assert {(r["world"], r["rank"]) for r in res.records()} == {("2", "0")}  # rank 0 reports
    assert any(e.kind == "exploited" for e in res.events)
    # rank 1 trained every reported step from the same state with the same hyperparameters,
    # after exploits too
    rank1 = {
        tuple(json.loads(line)) for line in (tmp_path / "ranks.jsonl").read_text().splitlines()
    }
    assert {(r["n"], r["x"], r["lr_used"]) for r in res.records()} <= rank1
    assert all(m.status == "finished" and m.step == 12 for m in res.members)


@pytest.mark.timeout(120)
@in_child
def test_a_ray_run_goes_from_one_to_two_to_one_actor_on_request(tmp_path, head):
    import reliability_trainables
    from test_elastic import Clocked, _one_process_since_the_other_stopped, _overlap, _steps

    db = tmp_path / "r.db"
    asked: list[int] = []

    def ask(pop):  # the driver loop calls this after each poll; each request waits on the store
        steps = _steps(db)
        if not asked and len(steps) >= 8:
            asked.append(2)
        elif asked == [2] and _overlap(steps):  # two actors trained at the same moment
            asked.append(1)
        elif asked == [2, 1] and _one_process_since_the_other_stopped(steps):
            asked.append(0)
            return hp.steer(db, timeout=None).stop(wait=False)
        else:
            return None
        hp.steer(db, timeout=None).workers(asked[-1], wait=False)

    backend = RayBackend(1, num_cpus=0.5)  # two fit on the one-CPU head
    cloudpickle.register_pickle_by_value(reliability_trainables)
    try:
        res = hp.run(
            Clocked,
            {"lr": hp.uniform(0.1, 1.0)},
            metric="score",
            population=3,
            budget=100_000,
            ready=4,
            backend=backend,
            storage=db,
            progress=ask,
        )
    finally:
        cloudpickle.unregister_pickle_by_value(reliability_trainables)
    assert asked == [2, 1, 0] and backend.resized == [(1, 2), (2, 1)], (asked, backend.resized)
    changed = [
        (e.data["old_workers"], e.data["workers"])
        for e in res.events
        if e.kind == "workers_changed"
    ]
    assert changed == [(1, 2), (2, 1)]
    assert not [e for e in res.events if e.kind == "failed"]  # no interval was cut short
