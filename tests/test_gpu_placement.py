"""GPU placement on the local backend: which worker process sees which devices, how many
workers there are, and the errors.

No GPU is needed for most of these: a device list given by hand (``gpus=["0", "1"]``) is
still handed to real worker processes through ``CUDA_VISIBLE_DEVICES``, which a probe
trainable (tests/gpu_trainables.py) reads from its ``os.environ``. ``nvidia-smi`` is replaced
by a script on ``PATH`` that prints what the real one prints. The last test runs only where
PyTorch sees a GPU.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from gpu_trainables import CudaProbe, EnvProbe, GpuReporter

import hyperpop as hp
from hyperpop.backends.base import Task
from hyperpop.backends.gpus import assign_gpus, gpu_memory, placement, visible_gpus
from hyperpop.backends.local import LocalBackend
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import make_factory


def _each_slot(backend: LocalBackend, tmp_path: Path, config: dict | None = None) -> list:
    """Start ``backend``, run one interval on every worker (task ``i`` on slot ``i``) and
    return the results by slot; the caller shuts the backend down."""
    backend.start(make_factory(EnvProbe), CheckpointStore(tmp_path / "ckpt"))
    for i in range(backend.capacity):
        backend.submit(Task(i, dict(config or {}), None, 0, 1), slot=i)
    return _collect(backend, backend.capacity)


def _collect(backend: LocalBackend, n: int) -> list:
    out = {}
    deadline = time.monotonic() + 60
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} results came back"
        for r in backend.poll(5.0):
            out[int(r.worker.rsplit("-", 1)[1])] = r
    return [out[i] for i in sorted(out)]


# --- the assignment (pure) ---------------------------------------------------------------
def test_one_member_per_gpu_gives_one_worker_per_device():
    assert assign_gpus(["0", "1"], 1, None) == [("0",), ("1",)]


def test_half_a_gpu_puts_two_workers_on_each_dealt_round_robin():
    assert assign_gpus(["0", "1"], 0.5, None) == [("0",), ("1",), ("0",), ("1",)]
    # fewer workers than fit: they spread over the GPUs first
    assert assign_gpus(["0", "1"], 0.5, 2) == [("0",), ("1",)]
    assert assign_gpus(["0", "1", "2"], 1 / 3, None).count(("2",)) == 3


def test_whole_numbers_give_a_worker_several_devices():
    assert assign_gpus(["0", "1", "2", "3"], 2, None) == [("0", "1"), ("2", "3")]
    with pytest.warns(UserWarning, match="left idle"):
        assert assign_gpus(["0", "1", "2"], 2, None) == [("0", "1")]


def test_no_gpu_asked_for_means_no_placement_and_no_discovery():
    def boom():
        raise AssertionError("discovery must not run when no GPU is asked for")

    assert placement(None, None, None, boom) is None
    assert placement(0, None, 4, boom) is None
    backend = LocalBackend(3, gpu_discovery=boom)
    assert backend.devices is None and backend.capacity == 3


def test_the_default_is_every_visible_gpu():
    found = lambda: ["0", "1"]  # noqa: E731
    assert placement(None, 0.5, None, found) == [("0",), ("1",), ("0",), ("1",)]
    assert placement("all", None, None, found) == [("0",), ("1",)]
    assert placement(1, None, None, found) == [("0",)]  # a count: the first n
    assert placement("1", None, None, found) == [("1",)]  # a string: ids
    assert placement([1], None, None, found) == [("1",)]
    backend = LocalBackend(gpus_per_member=0.5, gpu_discovery=found)
    assert backend.capacity == 4 and backend.worker_devices[2] == ("0",)


def test_explicit_ids_need_no_visible_gpu():
    """A hand-written device list is trusted where nothing can be discovered (this test)."""
    assert placement(["0", "1"], None, None, lambda: []) == [("0",), ("1",)]
    assert placement("GPU-1a2b,GPU-3c4d", None, None, lambda: ["0"]) == [
        ("GPU-1a2b",),
        ("GPU-3c4d",),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus_per_member": 1}, "none is visible"),
        ({"gpus": "all"}, "none is visible"),
        (
            {"gpus": 2, "discovered": ["0"]},
            r"asks for 2 GPUs but 1 is visible \(0\); ask for at "
            r"most 1, or name the ones to use \(gpus=\[0\]\)",
        ),
        ({"gpus": 3, "discovered": ["0", "1"]}, r"2 are visible \(0, 1\).*\(gpus=\[0, 1\]\)"),
        # issue 19: with no GPU visible, no "1 GPUs" and no devices to name
        ({"gpus": 1}, r"^gpus=1 asks for a GPU but none is visible .*leave gpus out \(or gpus=0\)"),
        ({"gpus": ["0", "1"], "gpus_per_member": 0.5, "workers": 5}, "at most 4"),
        ({"gpus": ["0"], "workers": 2}, "workers=2 do not fit on 1 GPU"),
        ({"gpus": ["0"], "gpus_per_member": 0.3}, "does not split a GPU evenly"),
        ({"gpus": ["0", "1"], "gpus_per_member": 1.5}, "whole number"),
        ({"gpus": ["0"], "gpus_per_member": 2}, "needs 2 GPUs per worker"),
        ({"gpus": ["0"], "gpus_per_member": 0}, "must be > 0"),
        ({"gpus": ["0"], "gpus_per_member": "half"}, "must be a number"),
        ({"gpus": ["0", "0"]}, "names a device twice"),
        ({"gpus": ["cuda:0"]}, "is not a device id"),
        ({"gpus": []}, "names no device"),
        ({"gpus": True}, "must be a count"),
        ({"gpus": -1}, "must be >= 0"),
        ({"gpus": 0, "gpus_per_member": 1}, "gpus=0 means CPU workers"),
        ({"gpus": [5], "discovered": ["0", "1"]}, "GPU 5 is not visible"),
    ],
)
def test_bad_gpu_settings_are_clear_errors(kwargs, message):
    discovered = kwargs.pop("discovered", [])
    with pytest.raises(ValueError, match=message):
        LocalBackend(**kwargs, gpu_discovery=lambda: discovered)


def test_the_error_reaches_hp_run_before_any_worker_starts(tmp_path):
    with pytest.raises(ValueError, match="workers=3 do not fit on 1 GPU"):
        hp.run(
            GpuReporter,
            {"x": hp.uniform(0, 1)},
            metric="score",
            population=4,
            workers=3,
            budget=hp.Steps(1),
            backend_options={"gpus": ["0"]},
            progress=False,
        )


# --- discovery without PyTorch -----------------------------------------------------------
def test_cuda_visible_devices_is_read_as_cuda_reads_it():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": " 2 , 3 "}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # stops at an invalid id
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8f3a-11"}) == ["GPU-8f3a-11"]


def _fake_nvidia_smi(folder: Path) -> None:
    script = folder / "nvidia-smi"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "if sys.argv[1:] == ['-L']:\n"
        "    print('GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa-0000)')\n"
        "    print('GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb-1111)')\n"
        "elif sys.argv[1].startswith('--query-gpu=index,uuid,memory.total'):\n"
        "    print('0, GPU-aaaa-0000, 81559')\n"
        "    print('1, GPU-bbbb-1111, 40960')\n"
        "else:\n"
        "    sys.exit(6)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_nvidia_smi_lists_the_gpus_when_cuda_visible_devices_is_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus({}) == []  # no nvidia-smi: no GPU
    _fake_nvidia_smi(tmp_path)
    assert visible_gpus({}) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == ["1"]  # the variable wins
    memory = gpu_memory()
    assert memory["0"] == memory["GPU-aaaa-0000"] == 81559 * 2**20
    assert memory["1"] == 40960 * 2**20


def test_the_auto_cache_budget_is_a_quarter_of_the_workers_gpu_share(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_nvidia_smi(tmp_path)
    backend = LocalBackend(gpus_per_member=0.5)
    assert backend.worker_devices == [("0",), ("1",), ("0",), ("1",)]
    assert (
        backend._budgets()
        == [
            int(0.25 * 0.5 * 81559 * 2**20),
            int(0.25 * 0.5 * 40960 * 2**20),
        ]
        * 2
    )


# --- real worker processes ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("gpus", "per_member", "seen"),
    [
        (["0", "1"], 1, ["0", "1"]),
        (["0", "1"], 0.5, ["0", "1", "0", "1"]),
        ("0,1,2,3", 2, ["0,1", "2,3"]),
    ],
    ids=["one-per-gpu", "two-per-gpu", "two-gpus-each"],
)
def test_each_worker_process_sees_only_its_devices(tmp_path, gpus, per_member, seen):
    backend = LocalBackend(gpus=gpus, gpus_per_member=per_member, gpu_discovery=lambda: [])
    try:
        results = _each_slot(backend, tmp_path)
    finally:
        backend.shutdown()
    assert backend.capacity == len(seen)
    assert [r.error for r in results] == [None] * len(seen)
    assert [r.reports[0]["visible"] for r in results] == seen
    assert {r.reports[0]["order"] for r in results} == {"PCI_BUS_ID"}
    assert len({r.reports[0]["pid"] for r in results}) == len(seen)  # separate processes


def test_without_gpus_workers_inherit_the_drivers_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    backend = LocalBackend(2)
    try:
        results = _each_slot(backend, tmp_path)
    finally:
        backend.shutdown()
    assert [r.reports[0]["visible"] for r in results] == ["7", "7"]


def test_a_replacement_worker_gets_the_devices_of_the_one_it_replaces(tmp_path):
    backend = LocalBackend(gpus=["0", "1"], gpus_per_member=0.5)
    try:
        first = _each_slot(backend, tmp_path)
        # the worker in slot 2 (GPU 0) dies in the middle of a task
        backend.submit(Task(9, {"crash": True}, None, 0, 1), slot=2)
        died = _collect(backend, 1)[0]
        assert died.error is not None and "died while training member 9" in died.error
        backend.submit(Task(2, {}, first[2].checkpoint, 1, 1), slot=2)
        again = _collect(backend, 1)[0]
    finally:
        backend.shutdown()
    assert again.error is None and again.restored  # a fresh process: loaded its checkpoint
    assert again.reports[0]["pid"] != first[2].reports[0]["pid"]
    assert again.reports[0]["visible"] == first[2].reports[0]["visible"] == "0"


def test_hp_run_places_members_through_backend_options():
    result = hp.run(
        GpuReporter,
        {"x": hp.uniform(0, 1)},
        metric="score",
        population=4,
        budget=hp.Steps(2),
        ready=1,
        seed=0,
        backend_options={"gpus": ["0", "1"], "gpus_per_member": 0.5},
        progress=False,
    )
    gpu_of = defaultdict(set)
    for row in result.records():
        gpu_of[int(row["pid"])].add(int(row["gpu"]))
    assert all(len(g) == 1 for g in gpu_of.values())  # a process never changes device
    per_gpu = defaultdict(int)
    for g in gpu_of.values():
        per_gpu[next(iter(g))] += 1
    assert dict(per_gpu) == {0: 2, 1: 2}  # four workers, two on each GPU


# --- a real GPU ----------------------------------------------------------------------------
def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def test_training_on_real_gpus_two_members_per_gpu():
    if not _cuda():
        pytest.skip("needs a GPU")
    ids = visible_gpus()
    result = hp.run(
        CudaProbe,
        {"lr": hp.loguniform(1e-3, 1e-1)},
        metric="loss",
        mode="min",
        population=2 * len(ids),
        budget=hp.Steps(4),
        ready=2,
        seed=0,
        backend_options={"gpus_per_member": 0.5},
        progress=False,
    )
    rows = result.records()
    assert {r["count"] for r in rows} == {1.0}  # each worker sees exactly one device
    assert {r["on_cuda"] for r in rows} == {1.0}
    gpu_of = defaultdict(set)
    for r in rows:
        gpu_of[int(r["pid"])].add(str(int(r["gpu"])))
    assert all(len(g) == 1 for g in gpu_of.values())
    assert set().union(*gpu_of.values()) <= set(ids)
    assert [m.status for m in result.members] == ["finished"] * (2 * len(ids))


# --- benchmarks/gpu_digits.py ----------------------------------------------------------------
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_gpu_benchmark_runs_its_cpu_side(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import importlib

    rows = importlib.import_module("gpu_digits").main(["--cpu-check", "--smoke"])
    assert [r["per_member"] for r in rows] == [0.5]
    workers = rows[0]["workers"]
    assert len(workers) == 2 and {w["gpu"] for w in workers.values()} == {0}
    assert 0.0 <= rows[0]["test_acc"] <= 1.0 and rows[0]["failures"] == 0
    out = capsys.readouterr().out
    assert "made-up GPU ids" in out and "nvidia-smi MB" in out


def test_the_gpu_benchmark_stops_clearly_without_a_gpu():
    pytest.importorskip("torch")
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_digits.py")],
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "needs a GPU: none is visible" in done.stderr and "--cpu-check" in done.stderr
