"""Security (issue 10, item 15): the dashboard answers only requests addressed to it by a
loopback name (no DNS rebinding), and hyperpop never unpickles a PyTorch file itself."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

pytest.importorskip("starlette")

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hyperpop.dashboard.app import create_app
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore

SRC = Path(__file__).resolve().parents[1] / "src" / "hyperpop"


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "r.db"
    store = SQLiteStore(path, write=True)
    store.append(
        [
            Event(ev.RUN_STARTED, None, {"settings": {"metric": "score", "mode": "max"}}),
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.5}}),
        ]
    )
    store.close()
    return path


def status(client: TestClient, host: str, path: str = "/api/view") -> int:
    return client.get(path, headers={"host": host}).status_code


def test_the_dashboard_refuses_foreign_host_headers(db):
    """A page on evil.example whose name now resolves to 127.0.0.1 (DNS rebinding) makes the
    browser send `Host: evil.example:8000`: refused, on every route."""
    with TestClient(create_app(db, port=8000), base_url="http://localhost:8000") as client:
        for host in ("127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"):
            assert status(client, host) == 200, host
        for host in ("evil.example:8000", "evil.example", "127.0.0.1.evil.example:8000", ""):
            for path in ("/", "/api/view", "/healthz", "/static/dashboard.js"):
                assert status(client, host, path) == 400, (host, path)
        assert status(client, "127.0.0.1:8001") == 400  # another port: another server
        r = client.get("/", headers={"host": "evil.example:8000"})
        assert "not allowed" in r.text and "http://localhost:8000/" in r.text


def test_a_dashboard_shared_on_the_network_accepts_addresses_not_names(db):
    with TestClient(create_app(db, host="0.0.0.0", port=8000)) as client:
        assert status(client, "192.168.1.5:8000") == 200
        assert status(client, "[fe80::1]:8000") == 200
        assert status(client, "localhost:8000") == 200
        assert status(client, "evil.example:8000") == 400
    extra = create_app(db, host="0.0.0.0", port=8000, allowed_hosts=["runs.lab.example"])
    with TestClient(extra) as client:
        assert status(client, "runs.lab.example:8000") == 200


def test_hyperpop_never_unpickles_a_torch_file_itself():
    """Checkpoints are hyperpop's own pickles (trusted like code, see the guide); any
    torch.load in hyperpop's sources must say weights_only=True."""
    for path in SRC.rglob("*.py"):
        for call in re.findall(r"torch\.load\((.*?)\)", path.read_text(), flags=re.S):
            assert "weights_only=True" in call, f"{path}: torch.load({call})"


def test_the_served_dashboard_checks_the_host_with_its_port(db):
    """`hyperpop dashboard` itself (uvicorn on a free port) wires the check to its port."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyperpop", "dashboard", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                ok = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.05)
        assert ok.status_code == 200
        assert httpx.get(url, headers={"host": f"localhost:{port}"}).status_code == 200
        assert httpx.get(url, headers={"host": f"evil.example:{port}"}).status_code == 400
        assert httpx.get(url, headers={"host": f"localhost:{port + 1}"}).status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
