"""The Ray backend across two Ray nodes on this machine, one of which is lost mid-run.

A head node (`ray start --head`) and a second node (`ray start --address=...`), each with its
own raylet and one CPU: hyperpop's two actors land one on each. When the second node has
trained some members (a condition on the recorded reports, not a sleep), its raylet is killed
with SIGKILL. Every (member, step) is recorded exactly once, and the run finishes on the head.
The nodes are tests/ray_nodes.py's; the head is shared with tests/test_ray_elastic.py.
"""

from __future__ import annotations

import signal

import cloudpickle
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("psutil")  # comes with ray

from ray_nodes import (  # noqa: E402
    RAY,
    NodeToy,
    alive,
    in_child,
    passes_in_a_fresh_interpreter,
    raylet_of,
    shared_head,
    toy,
    wait_for,
)

import hyperpop as hp  # noqa: E402
from hyperpop.backends.ray import RayBackend  # noqa: E402
from hyperpop.store.sqlite import open_store  # noqa: E402

pytestmark = pytest.mark.skipif(RAY is None, reason="the `ray` command is not installed")


@pytest.mark.timeout(360)
def test_runs_in_a_fresh_interpreter(request):
    """After a local Ray cluster earlier in the suite (``tests/test_ray_backend.py``) the actors
    on the two-node cluster were cancelled before they ran, so the multi-node test runs in a
    fresh interpreter (with tests/test_ray_elastic.py's, on the same head node)."""
    passes_in_a_fresh_interpreter(request)


@pytest.fixture(scope="module")
def two_nodes(request):
    """The shared head node and a second node; the second is taken down afterwards."""
    head = shared_head(request)
    second = head.add_node("second")
    try:
        wait_for("two live nodes", lambda: sum(n["Alive"] for n in ray.nodes()) == 2)
        yield head, second
    finally:
        head.remove(second)


@pytest.mark.timeout(180)
@in_child
def test_a_lost_node_loses_no_report_and_the_run_finishes_on_the_head(tmp_path, two_nodes):
    head, second = two_nodes
    head_node = ray.get_runtime_context().get_node_id()  # the driver runs on the head
    raylet = raylet_of(second)
    assert raylet is not None
    second_node = next(n["NodeID"] for n in ray.nodes() if n["NodeID"] != head_node)
    agents = raylet.children()  # the node's agents and workers, started by its raylet
    killed: list[int] = []

    def dead(node: str) -> bool:
        return not next(n["Alive"] for n in ray.nodes() if n["NodeID"] == node)

    def kill_when_the_second_node_trained(pop):  # the driver loop calls this after each poll
        if killed:
            return
        on_second = [
            m for m in pop.members.values() if m.last_metrics.get("node") not in (None, head_node)
        ]
        if on_second and pop.reports >= 16:
            raylet.send_signal(signal.SIGKILL)
            killed.append(raylet.pid)
            # the rest of the run happens after Ray knows the node is gone
            wait_for("Ray to declare the second node dead", lambda: dead(second_node))

    backend = RayBackend(2)
    population, steps = 4, 40
    cloudpickle.register_pickle_by_value(toy)  # NodeToy's base travels with it to the actors
    try:
        res = hp.run(
            NodeToy,
            toy.space,
            metric="Q",
            population=population,
            budget=hp.Steps(steps),
            ready=4,
            backend=backend,
            storage=tmp_path / "r.db",
            progress=kill_when_the_second_node_trained,
            seed=0,
        )
    finally:
        cloudpickle.unregister_pickle_by_value(toy)
    assert killed, "the second node never trained a member"
    # the lost node's agents and workers went with their raylet (no orphans of ours)
    wait_for("the lost node's processes to exit", lambda: not [p for p in agents if alive(p)])
    assert backend.replaced >= 1
    nodes = {r["node"] for r in res.records()}
    assert len(nodes) == 2 and head_node in nodes  # trained on both nodes
    failed = [e for e in res.events if e.kind == "failed"]
    assert failed and all(not e.data.get("fatal") for e in failed)
    assert all(m.status == "finished" and m.step == steps for m in res.members)
    # after the loss everything trained on the head
    lost_at = failed[0].seq
    after = [e for e in res.events if e.kind == "reported" and e.seq > lost_at]
    assert after and all(e.data["metrics"]["node"] == head_node for e in after)
    # the store on disk holds every (member, step) exactly once
    store = open_store(tmp_path / "r.db")
    try:
        reported = [(e.member, e.data["step"]) for e in store.read() if e.kind == "reported"]
    finally:
        store.close()
    assert len(reported) == len(set(reported))
    assert len(reported) == res.population.reports  # the store and the result agree
    for m in res.members:  # every member trained to the end of its budget
        assert max(s for (mm, s) in reported if mm == m.id) == steps
