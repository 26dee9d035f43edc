"""The bounded worker cache: members held in memory within a byte budget of state size."""

from __future__ import annotations

import time

import numpy as np
import pytest

import hyperpop as hp
from hyperpop.backends import local as local_module
from hyperpop.backends.base import Task
from hyperpop.backends.cache import FALLBACK_COUNT, parse_bytes, state_nbytes
from hyperpop.backends.local import LocalBackend
from hyperpop.backends.worker import WorkerCore
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import make_factory

MB = 2**20


class Weights(hp.Trainable):
    """A state of ``config["mb"]`` MiB of float64 weights; counts its setups and loads."""

    def setup(self, config):
        self.w = np.zeros(config["mb"] * MB // 8)
        self.loads = 0

    def apply(self, config):
        pass

    def train(self):
        self.w += 1
        return {"w": float(self.w[0]), "loads": self.loads}

    def save(self):
        return {"w": self.w, "note": "weights"}

    def load(self, state):
        self.w = state["w"].copy()
        self.loads += 1


def _core(tmp_path, **kw) -> WorkerCore:
    return WorkerCore(make_factory(Weights), CheckpointStore(tmp_path), **kw)


def test_state_size_counts_tensors_and_arrays_by_nbytes():
    torch = pytest.importorskip("torch")
    state = {
        "model": {"w": torch.zeros(1000, dtype=torch.float32), "b": np.zeros(10)},
        "steps": 3,
        "name": "abc",
        "history": [np.ones(5, dtype=np.int16)],
    }
    size = state_nbytes(state)
    assert 4000 + 80 + 10 <= size < 4000 + 80 + 10 + 500  # keys, ints: a few bytes each

    class Opaque:
        def __init__(self):
            self.blob = b"x" * 10_000

    assert 10_000 < state_nbytes(Opaque()) < 11_000  # no nbytes: its pickled size


def test_sizes_are_read_from_strings_with_units():
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("2GiB") == 2 * 2**30
    assert parse_bytes("1.5 kib") == 1536
    assert parse_bytes(123) == 123 and parse_bytes(None) is None
    for bad in ("lots", "12 parsecs", -1, True):
        with pytest.raises(ValueError, match="cache_bytes"):
            parse_bytes(bad)
    with pytest.raises(ValueError, match="is not a size"):
        LocalBackend(1, cache_bytes="a lot")
    with pytest.raises(ValueError, match="cache_size must be a number of members"):
        LocalBackend(1, cache_size=-1)


def test_members_beyond_the_byte_budget_are_dropped_oldest_first(tmp_path):
    w = _core(tmp_path, cache_bytes=int(2.5 * MB))
    first = {m: w.run(Task(m, {"mb": 1}, None, 0, 1)) for m in range(3)}
    assert list(w.held) == [1, 2]  # three 1 MiB states do not fit in 2.5 MiB
    assert 2 * MB <= w.held_bytes <= int(2.5 * MB)
    assert w.take_evicted() == [0] and w.take_evicted() == []
    # member 1 goes on in memory; member 0 loads its checkpoint
    r1 = w.run(Task(1, {"mb": 1}, first[1].checkpoint, 1, 1))
    r0 = w.run(Task(0, {"mb": 1}, first[0].checkpoint, 1, 1))
    assert not r1.restored and r0.restored and r0.reports[0] == {"w": 2.0, "loads": 1}
    assert list(w.held) == [1, 0] and w.take_evicted() == [2]


def test_a_state_larger_than_the_budget_is_not_held(tmp_path):
    w = _core(tmp_path, cache_bytes=MB // 2)
    r = w.run(Task(0, {"mb": 1}, None, 0, 1))
    assert r.error is None and r.checkpoint is not None
    assert list(w.held) == [] and w.take_evicted() == [0]


def test_count_and_bytes_limits_both_apply(tmp_path):
    w = _core(tmp_path, cache_size=1, cache_bytes=100 * MB)
    for m in range(3):
        w.run(Task(m, {"mb": 1}, None, 0, 1))
    assert list(w.held) == [2]


def test_auto_budget_is_a_share_of_memory_and_a_count_where_none_can_be_read(tmp_path, monkeypatch):
    backend = LocalBackend(2)
    budgets = backend._budgets()
    assert budgets[0] is not None and budgets[0] == budgets[1] > 0
    assert LocalBackend(2, cache_bytes=None)._budgets() == [None, None]
    assert LocalBackend(2, cache_bytes="1MiB")._budgets() == [MB, MB]
    monkeypatch.setattr(local_module, "auto_budget", lambda *a: None)
    backend = LocalBackend(1)
    backend.start(make_factory(Weights), CheckpointStore(tmp_path))
    try:
        assert backend._slots[0].cache_bytes is None
        assert backend._slots[0].cache_size == FALLBACK_COUNT
    finally:
        backend.shutdown()


def _result(backend: LocalBackend):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = backend.poll(5.0)
        if out:
            assert len(out) == 1 and out[0].error is None, out
            return out[0]
    raise AssertionError("no result within 60 s")


def test_the_driver_learns_which_members_a_worker_dropped(tmp_path):
    """With real worker processes: the scheduler's affinity follows the worker's evictions."""
    backend = LocalBackend(1, cache_bytes=int(1.5 * MB))
    backend.start(make_factory(Weights), CheckpointStore(tmp_path))
    try:
        backend.submit(Task(0, {"mb": 1}, None, 0, 1))
        a = _result(backend)
        assert backend.affinity(0) == 0
        backend.submit(Task(1, {"mb": 1}, None, 0, 1))  # member 0 no longer fits
        _result(backend)
        assert backend.affinity(0) is None and backend.affinity(1) == 0
        backend.submit(Task(0, {"mb": 1}, a.checkpoint, 1, 1))
        assert _result(backend).restored
        backend.submit(Task(2, {"mb": 2}, None, 0, 1))  # larger than the budget on its own
        _result(backend)
        assert backend.affinity(2) is None and backend.affinity(0) is None
    finally:
        backend.shutdown()


def test_the_cache_benchmark_runs_at_a_smoke_size(capsys):
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    out = importlib.import_module("worker_cache").main(["--smoke"])
    no_cache, default, unlimited = out["speed"]
    assert no_cache["restored"] == no_cache["intervals"]  # every interval loaded
    assert default["restored"] < default["intervals"]  # the default cache still saves loads
    assert [len(r["peaks"]) for r in out["memory"]] == [1, 1, 1, 1]
    assert "peak RSS per worker MB" in capsys.readouterr().out
