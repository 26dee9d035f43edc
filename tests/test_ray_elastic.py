"""``RayBackend(workers="auto")`` follows a local Ray cluster (issue 22, item 4): a second node
joins mid-run and its new actor trains members, then the node leaves; its interval is retried
and no report is lost. The cluster helpers are those of tests/test_ray_multinode.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import cloudpickle
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("psutil")

from test_ray_multinode import (  # noqa: E402
    ENV,
    RAY,
    SYSTEM_CONFIG,
    NodeToy,
    _free_port,
    _raylet,
    _start,
    _stop,
    _wait_for,
    toy,
)

import hyperpop as hp  # noqa: E402
from hyperpop.backends.ray import RayBackend  # noqa: E402

pytestmark = pytest.mark.skipif(RAY is None, reason="the `ray` command is not installed")
CHILD = "HYPERPOP_RAY_ELASTIC_CHILD"


@pytest.mark.timeout(240)
def test_in_a_fresh_interpreter():
    """As in tests/test_ray_multinode.py: a cluster of its own, without the Ray variables an
    earlier ``ray.init`` left in this interpreter's environment."""
    if os.environ.get(CHILD) == "1":
        return
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_a_node_joins_trains_and_leaves",
        ],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, CHILD: "1"},
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.timeout(200)
@pytest.mark.skipif(os.environ.get(CHILD) != "1", reason="runs in a fresh interpreter")
def test_a_node_joins_trains_and_leaves(tmp_path):
    os.environ.update(ENV)
    tmp, logs = tempfile.mkdtemp(prefix="hpel"), Path(tempfile.mkdtemp(prefix="hpel-logs"))
    port = _free_port()
    config = f"--system-config={json.dumps(SYSTEM_CONFIG)}"
    head = _start(
        ["--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", config],
        tmp,
        logs / "head.log",
    )
    procs = [head]
    try:
        _wait_for("the head's raylet", lambda: _raylet(head), log=logs / "head.log")
        ray.init(address=f"127.0.0.1:{port}", logging_level="WARNING", log_to_driver=False)
        head_node = ray.get_runtime_context().get_node_id()
        backend = RayBackend("auto", follow_seconds=0.3)
        joined: list[str] = []

        def alive() -> list[str]:
            return [n["NodeID"] for n in ray.nodes() if n["Alive"]]

        def follow_the_cluster(pop):  # the driver loop calls this after each poll
            if not joined and pop.reports >= 8:  # a node joins: the run waits for its actor
                procs.append(
                    _start(
                        [f"--address=127.0.0.1:{port}", "--num-cpus=1"], tmp, logs / "second.log"
                    )
                )
                _wait_for("the second node", lambda: len(alive()) == 2, log=logs / "second.log")
                joined.extend(set(alive()) - {head_node})
                _wait_for("its actor", lambda: backend.capacity == 2)
            elif (
                joined
                and procs[-1].poll() is None
                and joined[0] in {m.last_metrics.get("node") for m in pop.members.values()}
            ):
                os.killpg(procs[1].pid, signal.SIGTERM)  # the node leaves (ray stop)
                procs[1].wait(30)
                _wait_for("Ray to see it gone", lambda: alive() == [head_node])

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
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(procs, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    assert joined and backend.resized[:2] == [(1, 2), (2, 1)], backend.resized
    assert {r["node"] for r in res.records()} == {head_node, joined[0]}  # both trained
    assert all(not e.data.get("fatal") for e in res.events if e.kind == "failed")
    reported = [(e.member, e.data["step"]) for e in res.events if e.kind == "reported"]
    assert len(reported) == len(set(reported)) == res.population.reports  # each once, none lost
    assert all(m.status == "finished" and m.step == steps for m in res.members)
