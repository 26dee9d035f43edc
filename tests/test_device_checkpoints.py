"""Device-portable checkpoints: a state saved on any device loads anywhere.

Two mechanisms, each tested here:

* hyperpop's PyTorch helpers (``save_state``, ``TorchTrainable.save``, ``VectorizedTrainable``)
  save tensors on the CPU (:func:`hyperpop.torch.to_cpu`);
* :func:`hyperpop.checkpoints.decode` loads a checkpoint that still holds GPU tensors (a
  trainable's own ``save()``, an older checkpoint) on the CPU where there is no GPU, and on the
  current GPU where the saved index does not exist.

What runs without a GPU (this machine): the load path for real, on the exact bytes a
``cuda:0`` tensor pickles to (PyTorch's ``location_tag`` is made to name ``cuda:0`` while the
state is encoded, so the storages carry the tag a GPU tensor's do, and plain ``pickle.loads``
of them fails here as it would on any CPU-only machine); the save path's device test on a
tensor that reports ``cuda:0`` as its device (a subclass: no memory really moves). Where
PyTorch sees a GPU, the last tests train on ``cuda`` and load the checkpoints in a process
started with ``CUDA_VISIBLE_DEVICES=""`` (a real CPU-only process).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import OrderedDict, namedtuple
from contextlib import contextmanager
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hyperpop.backends.base import Task  # noqa: E402
from hyperpop.backends.worker import WorkerCore  # noqa: E402
from hyperpop.checkpoints import CheckpointStore, decode, encode  # noqa: E402
from hyperpop.torch import TorchTrainable, save_state, to_cpu  # noqa: E402
from hyperpop.trainable import make_factory  # noqa: E402
from hyperpop.vectorized import VectorizedTrainable  # noqa: E402

CUDA = torch.cuda.is_available()


class Line(TorchTrainable):
    """Fits y = 3x with a linear layer and Adam (it has optimiser state); ``config["device"]``
    picks where it trains."""

    def build(self, config):
        device = config.get("device", "cpu")
        self.model = torch.nn.Linear(1, 1).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"])
        self.x = torch.linspace(-1, 1, 32, device=device).unsqueeze(1)

    def train(self):
        loss = torch.nn.functional.mse_loss(self.model(self.x), 3 * self.x)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return {"loss": float(loss.detach()), "device": str(next(self.model.parameters()).device)}


class Stack(VectorizedTrainable):
    """A one-layer vectorized trainable (its plain, one-member path is what is tested)."""

    optimizer = "adam"
    hyperparameters = ("lr",)

    def build_model(self, config):
        return torch.nn.Linear(2, 1)

    def data(self, config):
        x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
        return x, x.sum(1, keepdim=True)

    def loss(self, model, batch, hp):
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)


class OnGpu(torch.Tensor):
    """A CPU tensor that reports ``cuda:0`` as its device (the save path's test without one)."""

    @property
    def device(self):
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).clone()


@contextmanager
def tagged_as(location: str):
    """While encoding, PyTorch writes ``location`` as every storage's device: the bytes are
    those a tensor on that device pickles to."""
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: location
    try:
        yield
    finally:
        torch.serialization.location_tag = original


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from _tensors(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _tensors(v)


def _trained(config, steps=3) -> Line:
    t = Line()
    t.config = dict(config)
    t.setup(t.config)
    for _ in range(steps):
        t.train()
    return t


# --- the save side ---------------------------------------------------------------------------
def test_to_cpu_moves_tensors_on_other_devices_and_keeps_the_structure():
    Pair = namedtuple("Pair", "a b")
    sd = torch.nn.BatchNorm1d(2).state_dict()
    sd["weight"] = torch.ones(2).as_subclass(OnGpu)
    tree = {"model": sd, "pair": Pair(torch.zeros(1).as_subclass(OnGpu), 3), "n": [1, "x"]}
    out = to_cpu(tree)
    moved = [t for t in _tensors(out)]
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in moved)
    assert isinstance(out["model"], OrderedDict) and out["model"]._metadata == sd._metadata
    assert isinstance(out["pair"], Pair) and out["pair"].b == 3
    assert out["n"] is tree["n"]  # nothing moved there: the same object
    assert type(tree["model"]["weight"]) is OnGpu  # the input is not changed in place
    torch.nn.BatchNorm1d(2).load_state_dict(out["model"])  # still a valid state dict


def test_a_state_already_on_the_cpu_is_not_copied():
    t = _trained({"lr": 0.1})
    sd = t.model.state_dict()
    assert to_cpu(sd) is sd
    state = t.save()
    assert state["model"]["weight"].data_ptr() == t.model.weight.data_ptr()  # no copy


def test_the_optimisers_own_state_is_never_replaced():
    t = _trained({"lr": 0.1})
    live = t.optimizer.state[t.model.weight]
    live["exp_avg"] = live["exp_avg"].as_subclass(OnGpu)  # as if it were on a GPU
    state = save_state(model=t.model, optimizer=t.optimizer)
    saved = state["optimizer"]["state"][0]["exp_avg"]
    assert type(saved) is torch.Tensor and type(live["exp_avg"]) is OnGpu


def test_vectorized_plain_save_copies_the_optimiser_entries():
    t = Stack()
    t.config = {"lr": 0.01}
    t.setup(t.config)
    t.train()
    state = t.save()
    live = next(iter(t.opt.state.values()))
    assert state["optimizer"]["state"][0] is not live  # saving never aliases the live dicts
    assert all(x.device.type == "cpu" for x in _tensors(state))
    again = Stack()
    again.config = {"lr": 0.01}
    again.setup(again.config)
    again.load(state)
    assert torch.equal(again.module.weight, t.module.weight)


# --- the load side -----------------------------------------------------------------------------
def test_a_gpu_tagged_checkpoint_fails_plain_unpickling_here():
    """The test's premise: these bytes are a GPU checkpoint as far as PyTorch can tell."""
    with tagged_as("cuda:0"):
        raw = encode({"w": torch.arange(4.0)})
    assert b"cuda:0" in raw
    if CUDA:
        pytest.skip("this machine has a GPU: the bytes load there without any mapping")
    with pytest.raises(RuntimeError, match="CUDA"):
        pickle.loads(raw[len(b"HYPERPOP-CKPT-1\n") :])


def test_a_gpu_checkpoint_decodes_on_the_cpu_or_the_current_gpu():
    state = {"w": torch.arange(4.0), "h": torch.ones(3, dtype=torch.float16), "steps": 7}
    with tagged_as("cuda:0"):
        raw = encode(state)
    out = decode(raw, "blob")
    assert out["steps"] == 7 and torch.equal(out["w"].cpu(), state["w"])
    assert out["h"].dtype == torch.float16
    expected = "cuda" if CUDA else "cpu"
    assert {t.device.type for t in _tensors(out)} == {expected}


def test_a_checkpoint_from_a_missing_device_index_loads_on_the_current_device():
    with tagged_as("cuda:9"):  # saved where a ninth GPU existed
        raw = encode({"w": torch.arange(3.0)})
    out = decode(raw, "blob")
    assert out["w"].device.type == ("cuda" if CUDA else "cpu")
    if CUDA:
        assert out["w"].device.index == torch.cuda.current_device()


def test_a_worker_trains_on_from_a_gpu_saved_trainable(tmp_path):
    """A member saved by a GPU worker (its own ``save()``: GPU tensors) goes on in a worker
    here: the checkpoint loads, ``apply`` follows, training continues from its step."""
    trained = _trained({"lr": 0.05}, steps=5)
    raw_state = {
        "model": trained.model.state_dict(),
        "optimizer": trained.optimizer.state_dict(),
        "extra": {"steps": trained.steps},
    }
    with tagged_as("cuda:0"):
        data = encode(raw_state, 0)
    store = CheckpointStore(tmp_path)
    store.write("m0-s5-fromgpu", data)
    core = WorkerCore(make_factory(Line), store)
    r = core.run(Task(0, {"lr": 0.01}, "m0-s5-fromgpu", 5, 2))
    assert r.error is None, r.error
    assert r.restored and r.end_step == 7
    assert [m["device"] for m in r.reports] == ["cpu", "cpu"]
    again = _trained({"lr": 0.05}, steps=5)  # the same member trained on in memory
    again.apply({"lr": 0.01})
    expected = [again.train()["loss"] for _ in range(2)]
    assert [m["loss"] for m in r.reports] == pytest.approx(expected)


# --- a real GPU ----------------------------------------------------------------------------------
_LOAD_ON_CPU = """
import sys, torch
from hyperpop.checkpoints import decode
assert not torch.cuda.is_available()
state = decode(open(sys.argv[1], "rb").read(), "blob")
model = torch.nn.Linear(1, 1)
model.load_state_dict(state["model"])
devices = sorted({t.device.type for t in state["model"].values()})
print(float(model.weight), ",".join(devices))
"""


def _load_in_cpu_only_process(path: Path) -> tuple[float, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_ON_CPU, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    weight, devices = done.stdout.split()
    return float(weight), devices


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_trained_on_cuda_saved_by_the_helpers_loads_in_a_cpu_only_process(tmp_path):
    t = _trained({"lr": 0.05, "device": "cuda"})
    state = t.save()
    assert all(x.device.type == "cpu" for x in _tensors(state))
    path = tmp_path / "blob"
    path.write_bytes(encode(state))
    weight, devices = _load_in_cpu_only_process(path)
    assert weight == pytest.approx(float(t.model.weight)) and devices == "cpu"


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_raw_cuda_tensors_in_a_checkpoint_load_in_a_cpu_only_process(tmp_path):
    t = _trained({"lr": 0.05, "device": "cuda"})
    state = {"model": t.model.state_dict()}  # a trainable's own save(): still on the GPU
    assert state["model"]["weight"].is_cuda
    path = tmp_path / "blob"
    path.write_bytes(encode(state))
    weight, devices = _load_in_cpu_only_process(path)
    assert weight == pytest.approx(float(t.model.weight)) and devices == "cpu"
