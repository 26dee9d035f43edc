"""The Ray backend across two Ray nodes on this machine, one of which is lost mid-run.

A head node (`ray start --head`) and a second node (`ray start --address=...`), each with its
own raylet and one CPU: hyperpop's two actors land one on each. When the second node has
trained some members (a condition on the recorded reports, not a sleep), its raylet is killed
with SIGKILL. Every (member, step) is recorded exactly once, and the run finishes on the head.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # comes with ray

import hyperpop as hp  # noqa: E402
from hyperpop.backends.ray import RayBackend  # noqa: E402
from hyperpop.store.sqlite import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import toy  # noqa: E402

RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")

pytestmark = pytest.mark.skipif(RAY is None, reason="the `ray` command is not installed")

#: the nodes and the driver agree on no token authentication, whatever ~/.ray holds
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
#: fast node-death detection, so the lost node is noticed in seconds, not half a minute
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}


class NodeToy(toy.Toy):
    """The paper's toy, reporting which Ray node trained each step (and slowed down to 20 ms a
    step, so the run is still going when the node is lost)."""

    def train(self):
        time.sleep(0.02)
        out = super().train()
        out["node"] = ray.get_runtime_context().get_node_id()
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], tmp: str, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own session: it stays the parent of its node's processes,
    so the node can be taken down by process group, whatever Ray leaves behind."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={tmp}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **ENV},
        )


def _stop(procs: list[subprocess.Popen], tmp: str) -> None:
    """Take the nodes down: their process groups, then anything else of this cluster's (its
    processes name its temporary folder), such as agents a killed raylet left behind."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(tmp in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
        except psutil.Error:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def _wait_for(what: str, condition, timeout: float = 60.0, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _raylet(proc: subprocess.Popen) -> psutil.Process | None:
    """The raylet that ``ray start`` process ``proc`` started."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if c.name() == "raylet"), None)


#: set in the fresh interpreter the test reruns itself in
CHILD = "HYPERPOP_RAY_MULTINODE_CHILD"


@pytest.mark.timeout(240)
def test_runs_in_a_fresh_interpreter():
    """After a local Ray cluster earlier in the suite (``tests/test_ray_backend.py``) the actors
    on the two-node cluster were cancelled before they ran, so the multi-node test runs in its
    own interpreter, without the Ray variables ``ray.init`` left in this one's environment."""
    if os.environ.get(CHILD) == "1":
        return
    target = f"{__file__}::test_a_lost_node_loses_no_report_and_the_run_finishes_on_the_head"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
        # without what an earlier ray.init left in this process's environment
        # (RAY_AUTH_MODE=token, ...): the nodes' processes would inherit it
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
            CHILD: "1",
        },
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "1 passed" in out.stdout


@pytest.fixture(scope="module")
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    tmp = tempfile.mkdtemp(prefix="hpmn")  # short: Ray's socket paths must fit 107 bytes
    logs = Path(tempfile.mkdtemp(prefix="hpmn-logs"))
    port = _free_port()
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # for this process's ray.init too
    head = _start(
        [
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            f"--system-config={json.dumps(SYSTEM_CONFIG)}",
        ],
        tmp,
        logs / "head.log",
    )
    procs = [head]
    try:
        address = f"127.0.0.1:{port}"
        _wait_for("the head's raylet", lambda: _raylet(head), log=logs / "head.log")
        second = _start([f"--address={address}", "--num-cpus=1"], tmp, logs / "second.log")
        procs.append(second)
        _wait_for("the second raylet", lambda: _raylet(second), log=logs / "second.log")
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        _wait_for("two live nodes", lambda: sum(n["Alive"] for n in ray.nodes()) == 2)
        yield address, head, second
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(procs, tmp)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


@pytest.mark.timeout(180)
@pytest.mark.skipif(os.environ.get(CHILD) != "1", reason="runs in a fresh interpreter")
def test_a_lost_node_loses_no_report_and_the_run_finishes_on_the_head(tmp_path, two_nodes):
    address, head, second = two_nodes
    head_node = ray.get_runtime_context().get_node_id()  # the driver runs on the head
    raylet = _raylet(second)
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
            _wait_for("Ray to declare the second node dead", lambda: dead(second_node))

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
    _wait_for("the lost node's processes to exit", lambda: not [p for p in agents if _alive(p)])
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
