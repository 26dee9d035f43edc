"""Ray clusters of several nodes on this machine, for tests/test_ray_multinode.py and
tests/test_ray_elastic.py (Ray and psutil are imported only when called).

Each node is a ``ray start --block`` process in its own session, with its own raylet. Both
modules run in one fresh interpreter (:func:`passes_in_a_fresh_interpreter`): a local Ray
cluster earlier in the suite leaves Ray variables in the test process's environment
(``RAY_AUTH_MODE=token``, ...) under which the nodes' actors were cancelled before they ran.
There they share one head node (:func:`shared_head`), started once and stopped when the session
ends; each test adds and takes away the nodes it needs. Starting a node costs seconds of
several processes (the ``ray`` command, GCS, raylet, agents), so the head is started once, and
the nodes leave out what no test here uses: the autoscaler's monitor (nothing autoscales) and
the log monitor (the driver connects with ``log_to_driver=False``).
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
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import toy  # noqa: E402

RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")

#: the nodes and the driver agree on no token authentication, whatever ~/.ray holds
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
#: fast node-death detection, so a lost node is noticed in seconds, not half a minute
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
#: what every node leaves out (see the module's docstring)
LEAN = ["--include-log-monitor=false"]
#: and the head
LEAN_HEAD = [*LEAN, "--include-dashboard=false", "--no-monitor"]
#: set in the fresh interpreter the tests run in
CHILD = "HYPERPOP_RAY_NODES_CHILD"

in_child = pytest.mark.skipif(os.environ.get(CHILD) != "1", reason="runs in a fresh interpreter")


class NodeToy(toy.Toy):
    """The paper's toy, reporting which Ray node trained each step (and slowed down to 20 ms a
    step, so the run is still going when a node joins or is lost)."""

    def train(self):
        import ray

        time.sleep(0.02)
        out = super().train()
        out["node"] = ray.get_runtime_context().get_node_id()
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 60.0, log=None) -> Any:
    """Poll ``condition`` until it is true (its value is returned); fail after ``timeout``
    seconds, with the tail of ``log`` (a node's output) if given."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.1)


def alive(p) -> bool:
    """Whether psutil process ``p`` still runs."""
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def raylet_of(proc: subprocess.Popen):
    """The raylet (a psutil process) that ``ray start`` process ``proc`` started, or None."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    return next((c for c in children if c.name() == "raylet"), None)


def start_node(args: list[str], tmp: str, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own session: it stays the parent of its node's processes,
    so the node can be taken down by process group, whatever Ray leaves behind."""
    assert RAY is not None
    with open(log, "w") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", f"--temp-dir={tmp}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **ENV},
        )


def stop_nodes(procs: list[subprocess.Popen], tmp: str | None = None) -> None:
    """Take nodes down at once (SIGKILL: nothing of theirs is kept): their process groups,
    then, given the cluster's temporary folder ``tmp``, anything else of the cluster's (its
    processes name the folder), such as agents a killed raylet left behind."""
    import psutil

    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if tmp is not None:
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(tmp in arg for arg in p.info["cmdline"] or ()):
                    p.kill()
            except psutil.Error:
                pass
    for proc in procs:
        proc.wait(timeout=10)


class Head:
    """A head node with one CPU (``ray start --head``), this process connected to it as the
    driver, and the nodes the tests add (:meth:`add_node`)."""

    def __init__(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        os.environ.update(ENV)  # for this process's ray.init too
        self.tmp = tempfile.mkdtemp(prefix="hpnodes")  # short: socket paths must fit 107 bytes
        self.logs = Path(tempfile.mkdtemp(prefix="hpnodes-logs"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = f"--system-config={json.dumps(SYSTEM_CONFIG)}"
        args = ["--head", f"--port={self.port}", "--num-cpus=1", config, *LEAN_HEAD]
        self.proc = start_node(args, self.tmp, self.logs / "head.log")
        self.procs = [self.proc]
        try:
            wait_for("the head's raylet", lambda: raylet_of(self.proc), log=self.logs / "head.log")
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        except BaseException:
            self.stop()
            raise

    def add_node(self, name: str, wait: bool = True) -> subprocess.Popen:
        """Start a node of one CPU that joins the head (``ray start --address``); with
        ``wait``, return once its raylet runs (its log is ``logs/<name>.log``)."""
        log = self.logs / f"{name}.log"
        proc = start_node([f"--address={self.address}", "--num-cpus=1", *LEAN], self.tmp, log)
        self.procs.append(proc)
        if wait:
            wait_for(f"the raylet of node {name}", lambda: raylet_of(proc), log=log)
        return proc

    def remove(self, proc: subprocess.Popen) -> None:
        """Take node ``proc`` down now, whatever it is doing."""
        stop_nodes([proc])
        self.procs.remove(proc)

    def stop(self) -> None:
        """Disconnect this process, take every node down, delete the folders."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        stop_nodes(self.procs, self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.logs, ignore_errors=True)


_head: Head | None = None


def shared_head(request: pytest.FixtureRequest) -> Head:
    """The head node this process's tests share: started at the first call, stopped when the
    test session ends."""
    global _head
    if _head is None:
        _head = Head()

        def stop() -> None:
            global _head
            if _head is not None:
                _head, head = None, _head
                head.stop()

        request.session.addfinalizer(stop)
    return _head


# --- the fresh interpreter -----------------------------------------------------------------

#: each module's tests' outcomes in the fresh interpreter (module file -> test name -> outcome)
_outcomes: dict[str, dict[str, str]] = {}
_output: list[str] = []


def _is_outer(item: pytest.Item) -> bool:
    return item.name.endswith("fresh_interpreter") and item.path.parent == ROOT / "tests"


def passes_in_a_fresh_interpreter(request: pytest.FixtureRequest, timeout: float = 300) -> None:
    """Assert that the calling module's other tests all pass in a fresh interpreter (without
    the Ray variables an earlier ``ray.init`` left in this one's environment).

    One interpreter runs the tests of every module whose test that calls this is in the
    session, so they share one head node; the first such test to run starts it, each asserts
    its own module's outcomes."""
    if os.environ.get(CHILD) == "1":
        pytest.skip("this is the fresh interpreter")
    mine = str(request.path)
    # The other modules' outer tests run in this process too where pytest-xdist groups them
    # (their ids end in "@ray"; not with pytest 9.2 and pytest-xdist 3.8) or without xdist;
    # otherwise another test process runs them, and this one runs its own module only.
    together = "PYTEST_XDIST_WORKER" not in os.environ or "@" in request.node.nodeid
    if mine not in _outcomes:
        outer = {str(i.path) for i in request.session.items if _is_outer(i)} if together else set()
        files = sorted(outer - set(_outcomes) | {mine})
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "report.xml"
            out = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                + ["-k", "not fresh_interpreter", f"--junitxml={xml}", *files],
                # without what an earlier ray.init left in this process's environment
                # (RAY_AUTH_MODE=token, ...): the nodes' processes would inherit it
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
                    CHILD: "1",
                },
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=ROOT,
            )
            _output.append(out.stdout[-4000:] + out.stderr[-2000:])
            for f in files:
                _outcomes[f] = {}
            if xml.exists():
                for case in ET.parse(xml).getroot().iter("testcase"):
                    module = case.get("classname", "").rpartition(".")[2]
                    kinds = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
                    path = str(ROOT / "tests" / f"{module}.py")
                    if path in _outcomes:
                        _outcomes[path][case.get("name", "")] = kinds[-1] if kinds else "passed"
    expected = sorted(
        name
        for name, f in vars(request.module).items()
        if name.startswith("test_") and callable(f) and not name.endswith("fresh_interpreter")
    )
    got = _outcomes[mine]
    assert expected and got == dict.fromkeys(expected, "passed"), (got, "".join(_output))
