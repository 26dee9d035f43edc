"""The Ray backend on a real local Ray cluster: quality, state transfer, faults, resume."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys
import time
from collections import Counter as Count
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import hyperpop as hp  # noqa: E402
from hyperpop.backends.ray import RayBackend, RayClusterError  # noqa: E402
from hyperpop.checkpoints import checkpoint_dir_for  # noqa: E402
from hyperpop.store.sqlite import open_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import toy  # noqa: E402
from ray_local import local_ray  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    """The tests' local Ray cluster (2 CPUs), shared with the other modules that need one."""
    local_ray()


# --- trainables (sent to the actors by value: this module is not installed) ----------------


class Stepper(hp.Trainable):
    """Score = sum of lr; the state carries the model's own step count and the pids it saw."""

    def setup(self, config):
        self.total, self.step = 0.0, 0
        self.apply(config)

    def apply(self, config):
        self.config = config
        self.lr = config["lr"]

    def train(self):
        self.step += 1
        kill = self.config.get("kill")
        if kill and self.step == kill["step"]:
            _die_once(Path(kill["dir"]))
        boom = self.config.get("boom")
        if boom and self.step == boom["step"] and _first(Path(boom["dir"]) / "boom"):
            raise ValueError(f"boom at step {self.step}")
        self.total += self.lr
        return {"score": self.total, "model_step": self.step, "pid": os.getpid()}

    def save(self):
        return {"total": self.total, "step": self.step, "pad": b"x" * self.config.get("pad", 0)}

    def load(self, state):
        self.total, self.step = state["total"], state["step"]


class Tracked(Stepper):
    """A Stepper that leaves a file in ``config['marks']`` for each instance it builds and
    each one released (``cleanup``)."""

    def setup(self, config):
        self.tag = f"{os.getpid()}-{id(self)}-{time.monotonic_ns()}"
        (Path(config["marks"]) / f"built-{self.tag}").touch()
        super().setup(config)

    def cleanup(self):
        (Path(self.config["marks"]) / f"released-{self.tag}").touch()


def _first(marker: Path) -> bool:
    """True for the first caller only, across processes (an exclusive create)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _die_once(folder: Path) -> None:
    """The first member to get here announces its pid and waits to be killed by the test."""
    marker = folder / "kill-me"
    if not _first(folder / "claimed"):
        return
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the driver kills this process; never returns
        time.sleep(0.01)
    raise RuntimeError("nobody killed this actor")


class DigitsMLP(hp.Trainable):
    """A small MLP on scikit-learn's digits (one epoch per step), in plain PyTorch. The data
    comes split from ``config["data"]`` (:func:`_digits`), so no worker imports scikit-learn."""

    def setup(self, config):
        import numpy as np
        import torch

        torch.manual_seed(config["seed"])
        with np.load(config["data"]) as data:
            xt, xv, yt, yv = (data[k] for k in ("xt", "xv", "yt", "yv"))
        f = torch.float32
        self.xt, self.yt = torch.tensor(xt, dtype=f), torch.tensor(yt)
        self.xv, self.yv = torch.tensor(xv, dtype=f), torch.tensor(yv)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=config["lr"], momentum=0.9)
        self.gen = torch.Generator().manual_seed(config["seed"])

    def apply(self, config):
        for g in self.opt.param_groups:
            g["lr"] = config["lr"]

    def train(self):
        import torch

        self.model.train()
        perm = torch.randperm(len(self.xt), generator=self.gen)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            self.opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.model(self.xt[idx]), self.yt[idx])
            loss.backward()
            self.opt.step()
        self.model.eval()
        with torch.no_grad():
            acc = (self.model(self.xv).argmax(1) == self.yv).float().mean().item()
        return {"val_acc": acc, "loss": loss.item()}

    def save(self):  # the batches' order too: a member trains alike in any process
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
        }

    def load(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])


# --- helpers ------------------------------------------------------------------------------


def _digits(folder: Path) -> str:
    """scikit-learn's digits, scaled and split, in a file in ``folder`` (for DigitsMLP)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xt, xv, yt, yv = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
    np.savez(folder / "digits.npz", xt=xt, xv=xv, yt=yt, yv=yv)
    return str(folder / "digits.npz")


def _assert_complete(res: hp.Result, population: int, steps: int) -> None:
    """Every member reached the budget; each step reported exactly once; state matches."""
    assert all(m.status == "finished" and m.step == steps for m in res.members)
    per = Count((r["member"], r["step"]) for r in res.records())
    assert set(per.values()) == {1}
    for m in range(population):
        mine = sorted(s for (mm, s) in per if mm == m)
        assert mine == list(range(1, steps + 1))
    for r in res.records():
        assert r["model_step"] == r["step"]  # resumed from the right checkpoint


def _stepper_run(tmp_path, Stepper=Stepper, **kw):  # the class to run
    space = {"lr": hp.uniform(0.1, 1.0)}
    space.update(kw.pop("extra", {}))
    args = dict(
        metric="score",
        population=4,
        workers=2,
        budget=hp.Steps(12),
        ready=4,
        synchronous=True,
        storage=tmp_path / "r.db",
        seed=2,
        backend="ray",
    )
    args.update(kw)
    return hp.run(Stepper, space, **args)


# --- tests --------------------------------------------------------------------------------


def test_toy_reaches_the_same_result_as_the_local_backend():
    kw = {k: v for k, v in toy.settings.items() if k != "storage"}
    on_ray = hp.run(toy.Toy, toy.space, backend="ray", **kw)
    # a synchronous run computes the same on any number of workers: one local process is enough
    local = hp.run(toy.Toy, toy.space, backend="local", **{**kw, "workers": 1})
    assert on_ray.best.score > 1.18
    assert on_ray.best.score == pytest.approx(local.best.score, abs=1e-9)

    def trajectory(res):
        return [r["score"] for r in sorted(res.records(), key=lambda r: (r["member"], r["step"]))]

    assert trajectory(on_ray) == pytest.approx(trajectory(local))
    assert on_ray.events[0].data["settings"]["backend"] == "ray"


def test_pytorch_digits_matches_the_local_backend(tmp_path):
    """PyTorch models and optimizers move between two actors whole: a synchronous run on Ray
    trains every member exactly as the local backend does. A synchronous run's results do not
    depend on how many workers train it (the trainable saves all its state), so the local run
    has one worker process: one PyTorch import instead of two."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    space = {"lr": hp.loguniform(1e-3, 0.3), "seed": hp.randint(0, 1000), "data": _digits(tmp_path)}
    kw = dict(metric="val_acc", population=4, budget=hp.Steps(5), ready=2, synchronous=True, seed=0)
    on_ray = hp.run(DigitsMLP, space, backend="ray", workers=2, **kw)
    local = hp.run(DigitsMLP, space, backend="local", workers=1, **kw)
    assert on_ray.best.score >= 0.9
    assert all(m.step == 5 for m in on_ray.members)
    assert [e for e in on_ray.events if e.kind == "exploited"]  # states moved to other members

    def trajectory(res):
        return [
            (r["member"], r["step"], r["val_acc"], r["loss"])
            for r in sorted(res.records(), key=lambda r: (r["member"], r["step"]))
        ]

    assert trajectory(on_ray) == trajectory(local)


@pytest.mark.parametrize(
    "options, where",
    [
        ({"transfer": "object"}, "object"),
        ({"transfer": "shared"}, "shared"),
        ({"transfer": "auto"}, "object"),  # 20 kB blobs, below the default threshold
        ({"transfer": "auto", "threshold": 5000}, "shared"),  # the checkpoint folder
        ({"transfer": "auto", "url": True, "threshold": 5000}, "shared"),  # an fsspec URL
        ({"transfer": "object", "cache_size": 1}, "object"),  # members reload on every turn
    ],
    ids=["object", "shared", "auto-small", "auto-large", "url-large", "object-nocache"],
)
def test_state_moves_between_actors_by_reference(tmp_path, options, where):
    """Population 6 on 2 actors: members take turns and move; exploits share a donor's blob."""
    options = dict(options)
    remote = None
    if options.pop("url", False):  # an fsspec URL, as s3://... would be
        remote = tmp_path / "remote"
        options["shared_storage"] = f"local://{remote}"
    backend = RayBackend(2, **options)
    db = tmp_path / "r.db"
    folder = checkpoint_dir_for(db)

    def blobs(where_: Path) -> set[str]:
        return {p.name[: -len(".ckpt")] for p in where_.glob("*.ckpt")}

    held_ok: list[bool] = []

    def check(pop):  # every object the backend holds is a blob the driver has not collected
        held_ok.append(set(backend._refs) <= blobs(folder) | pop.live_checkpoints())

    res = _stepper_run(
        tmp_path,
        population=6,
        backend=backend,
        progress=check,
        extra={"pad": 20000},
    )
    _assert_complete(res, 6, 12)
    assert all(held_ok)
    # the state travelled the way the options say (exploits load the donor's blob)
    other = "object" if where == "shared" else "shared"
    assert backend.saved[where] > 0 and backend.saved[other] == 0
    assert backend.sent[where] > 0 and backend.sent[other] == 0
    assert [e for e in res.events if e.kind == "exploited"]
    # durable, collected, never copied: exactly the blobs members point at are kept
    live = {m.checkpoint for m in res.members}
    durable = blobs(remote) if remote is not None and where == "shared" else blobs(folder)
    assert durable == live
    if remote is None:
        for m in res.members:
            assert res.load_checkpoint(m.id)["step"] == 12


def test_a_killed_actor_loses_no_report(tmp_path):
    """SIGKILL an actor's process in the middle of an interval: the run finishes, nothing lost."""
    backend = RayBackend(2)
    killed: list[int] = []

    def killer(pop):  # runs in the driver loop; the victim waits for it, no timing guesses
        marker = tmp_path / "kill-me"
        if not killed and marker.exists() and marker.read_text():
            pid = int(marker.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    res = _stepper_run(
        tmp_path,
        backend=backend,
        progress=killer,
        extra={"kill": {"step": 6, "dir": str(tmp_path)}},
    )
    assert killed and backend.replaced == 1
    _assert_complete(res, 4, 12)
    failed = [e for e in res.events if e.kind == "failed"]
    assert len(failed) == 1 and "died" in failed[0].data["error"]
    victim = failed[0].member
    after = [r for r in res.records() if r["member"] == victim and r["step"] > 4]
    assert after and all(r["pid"] != killed[0] for r in after)  # on a new actor
    # the store on disk holds every report exactly once
    store = open_store(tmp_path / "r.db")
    try:
        reported = [e for e in store.read() if e.kind == "reported"]
    finally:
        store.close()
    assert len(reported) == 4 * 12
    assert len({(e.member, e.data["step"]) for e in reported}) == 4 * 12


def test_a_trainable_exception_is_retried_as_on_the_local_backend(tmp_path):
    res = _stepper_run(tmp_path, extra={"boom": {"step": 7, "dir": str(tmp_path)}})
    _assert_complete(res, 4, 12)
    failed = [e for e in res.events if e.kind == "failed"]
    assert len(failed) == 1
    assert "ValueError: boom at step 7" in failed[0].data["error"]
    assert not failed[0].data["fatal"]


def test_a_misdefined_trainable_fails_the_run_clearly():
    class NoDict(hp.Trainable):
        def setup(self, config):
            pass

        def apply(self, config):
            pass

        def train(self):
            return 1.0

        def save(self):
            return None

        def load(self, state):
            pass

    with pytest.raises(hp.RunError, match="must return a dict"):
        hp.run(NoDict, {"x": hp.uniform(0, 1)}, metric="x", population=2, budget=2, backend="ray")


def test_resume_on_ray_after_an_interrupted_run(tmp_path):
    """The driver stops mid-run (a member blocks at step 6 until it does); resume finishes."""

    class Interrupt(Exception):
        pass

    def stop_midway(pop):
        if (tmp_path / "kill-me").exists():
            raise Interrupt

    extra = {"kill": {"step": 6, "dir": str(tmp_path)}}
    with pytest.raises(Interrupt):
        _stepper_run(tmp_path, progress=stop_midway, extra=extra)
    res = hp.resume(tmp_path / "r.db", Stepper, backend="ray")
    assert any(e.kind == "run_resumed" for e in res.events)
    _assert_complete(res, 4, 12)


def test_warm_actors_serve_the_next_run_in_the_same_session_with_none_of_its_state(
    tmp_path, caplog
):
    """keep_actors: a second run (another store) starts on the first run's actor processes, in
    the Ray session already open, and nothing of the first run's members is left in them."""
    job = ray.get_runtime_context().get_job_id()
    marks = {run: tmp_path / f"marks-{run}" for run in "ab"}
    results = {}
    with RayBackend(2, keep_actors=True) as backend:
        for run, lr in (("a", hp.uniform(0.1, 1.0)), ("b", hp.uniform(5.0, 6.0))):
            marks[run].mkdir()
            (tmp_path / run).mkdir()
            results[run] = _stepper_run(
                tmp_path / run,
                Stepper=Tracked,
                backend=backend,
                extra={"lr": lr, "marks": str(marks[run])},
            )
            # every trainable the run built was released when it ended, the actors live on
            built = {p.name.split("-", 1)[1] for p in marks[run].glob("built-*")}
            released = {p.name.split("-", 1)[1] for p in marks[run].glob("released-*")}
            assert built and released == built
        assert backend.timings["reused"] == 2
        pids = {run: {r["pid"] for r in res.records()} for run, res in results.items()}
        assert len(pids["a"]) == 2 and pids["b"] == pids["a"]  # the same two processes
        # the kept actors hold both of the cluster's CPUs: another backend's actor cannot be
        # placed, and the run says so (and why) instead of waiting in silence
        (tmp_path / "c").mkdir()
        with caplog.at_level(logging.WARNING, logger="hyperpop"):
            with pytest.raises(RayClusterError) as refused:
                _stepper_run(tmp_path / "c", backend=RayBackend(1, start_timeout=2), workers=1)
        assert "CPU 0 free of 2" in str(refused.value) and "keep_actors" in str(refused.value)
        assert "still waiting to be placed after 1s" in caplog.text
    assert ray.get_runtime_context().get_job_id() == job  # one Ray session throughout
    _assert_complete(results["b"], 4, 12)  # every model from step 1: no state came along
    for res, lo in ((results["a"], 0.1), (results["b"], 5.0)):
        for r in res.records():  # the score sums this run's own learning rates only
            assert lo * r["step"] - 1e-9 <= r["score"] <= (lo + 1.0) * r["step"] + 1e-9
    deadline = time.monotonic() + 60  # close() stopped the warm actors
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids["a"]):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids["a"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_an_unreachable_cluster_fails_fast_with_a_clear_error():
    t0 = time.monotonic()
    with pytest.raises(RayClusterError, match="cannot reach the Ray cluster at ray://127.0.0.1:1"):
        hp.run(
            toy.Toy,
            toy.space,
            metric="Q",
            population=2,
            budget=4,
            backend="ray",
            backend_options={"address": "ray://127.0.0.1:1", "connect_timeout": 5},
        )
    assert time.monotonic() - t0 < 10


def test_workers_default_to_the_cluster_slots():
    assert RayBackend().capacity == 2
    assert RayBackend(num_cpus=0.5).capacity == 4
    lazy = RayBackend(num_gpus=1)  # building one connects to nothing: ray.init is in start
    with pytest.raises(RayClusterError, match="cannot hold one actor"):
        lazy.connect()


def test_benchmark_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_backends", ROOT / "benchmarks/backends.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_backends"] = bench
    spec.loader.exec_module(bench)
    bench.main(["--smoke"])
    out = capsys.readouterr().out
    assert "| toy" in out and "ray" in out and "local" in out
