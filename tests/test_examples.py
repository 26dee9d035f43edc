"""The examples: real training, tiny sizes (the full runs are in docs/examples.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("gymnasium")

import hyperpop as hp  # noqa: E402
from hyperpop.space import Space  # noqa: E402
from hyperpop.userfile import load_file  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Train in this process on one thread, as hyperpop's workers do: on a loaded 2-core
    machine PyTorch's default of one thread per core makes these small models several times
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _example(name: str):
    return load_file(EXAMPLES / f"{name}.py")


def _run(rf, tmp_path, **overrides):
    kw = {**rf.settings, "storage": tmp_path / "run.db", "workers": 1, **overrides}
    return hp.run(rf.trainable, rf.space, **kw)


@pytest.mark.parametrize("name", ["digits", "cartpole", "charlm", "nqm"])
def test_run_file_defines_what_hyperpop_run_needs(name):
    rf = _example(name)
    assert rf.settings["storage"] == f"runs/{name}.db"
    assert {"metric", "mode", "population", "budget"} <= set(rf.settings)
    assert callable(rf.module.evaluate)
    Space(rf.space)  # a valid space


def test_digits_learns_and_held_out_split_is_separate(tmp_path):
    rf = _example("digits")
    d = rf.module.data()
    assert len(d["x_train"]) == 1000 and len(d["x_val"]) == 400 and len(d["x_test"]) == 397
    good = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32}
    # in a worker process, on the one thread tests/conftest.py's OMP_NUM_THREADS gives it
    res = _run(rf, tmp_path, population=2, budget=hp.Steps(3), ready=1, configs=[good, good])
    assert res.best.score > 0.85
    assert rf.module.evaluate(res.load_checkpoint()) > 0.85
    assert all("test" not in k for r in res.records() for k in r)  # selection never sees test


def test_digits_batch_size_changes_between_intervals():
    rf = _example("digits")
    t = rf.trainable()
    t.setup({"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 1000})
    t.train()
    state = t.save()
    t.load(state)
    t.apply({**t.config, "batch_size": 250, "lr": 0.01})
    calls = []
    original = t.model.forward
    t.model.forward = lambda x: calls.append(len(x)) or original(x)
    t.train()
    assert calls[:4] == [250, 250, 250, 250]
    assert t.optimizer.param_groups[0]["lr"] == 0.01


def test_cartpole_runs_real_gymnasium_episodes(tmp_path):
    rf = _example("cartpole")
    # in this process (the digits test runs an example in a worker process)
    res = _run(rf, tmp_path, population=2, budget=hp.Steps(2), ready=1, backend="simulated")
    rows = res.records()
    assert len(rows) == 4
    assert all(r["env_steps"] > 900 and r["episodes"] > 0 and r["return"] > 5 for r in rows)
    assert rf.module.evaluate(res.load_checkpoint(), episodes=2) >= 8  # CartPole's minimum


def test_cartpole_learns_in_process():
    rf = _example("cartpole")
    t = rf.trainable()
    t.setup({"lr": 2e-3, "ent_coef": 0.01, "gamma": 0.99})
    first = t.train()["return"]
    for _ in range(11):
        last = t.train()["return"]
    assert last > max(2 * first, 60)
    t.cleanup()


def test_charlm_reads_stdlib_text_and_learns(tmp_path):
    rf = _example("charlm")
    d = rf.module.data()
    assert len(d["train"]) > 100_000 and len(d["test"]) > 5_000
    assert rf.module.decode(rf.module.encode("def f():\n")[:].tolist()) == "def f():\n"
    kw = {"population": 2, "budget": hp.Steps(2), "ready": 1, "backend": "simulated"}
    res = _run(rf, tmp_path, **kw)  # in this process, as the cartpole test
    rows = res.records()
    # the best member learned: below the uniform guess, log(96) = 4.56
    assert min(r["val_loss"] for r in rows if r["step"] == 2) < 4.0
    state = res.load_checkpoint()
    assert rf.module.evaluate(state) < 4.0
    assert rf.module.sample(state, length=20).startswith("def ")


def test_charlm_apply_sets_dropout_and_keeps_adam_moments():
    rf = _example("charlm")
    t = rf.trainable()
    t.setup({"lr": 3e-3, "dropout": 0.1, "clip": 1.0})
    t.train()
    state = t.save()
    other = rf.trainable()
    other.setup({"lr": 1e-3, "dropout": 0.4, "clip": 0.5})
    other.load(state)
    other.apply({"lr": 5e-4, "dropout": 0.3, "clip": 0.5})
    assert other.model.drop.p == 0.3
    assert other.optimizer.param_groups[0]["lr"] == 5e-4
    p = next(other.model.parameters())
    assert torch.equal(
        other.optimizer.state[p]["exp_avg"],
        t.optimizer.state[next(t.model.parameters())]["exp_avg"],
    )


def test_nqm_grid_optimum_is_the_brute_force_one_and_the_ceiling_beats_the_references():
    import itertools

    import numpy as np

    m = _example("nqm").module
    for intervals, grid in ((1, 6), (4, 4), (5, 4)):  # meeting in the middle, odd and even
        lrs = np.logspace(np.log10(m.LR_LOW), np.log10(m.LR_HIGH), grid)
        brute = min((m.expected_loss(s, 10), s) for s in itertools.product(lrs, repeat=intervals))
        value, schedule = m.grid_optimum(10 * intervals, 10, grid)
        assert value == pytest.approx(brute[0]) and np.allclose(schedule, brute[1])
        assert m.ceiling(10 * intervals, 10, grid)[0] <= value
    top, schedule = m.ceiling(40, 10)
    assert top < m.greedy(40, 10)[0] and top < m.best_constant(40, 10)[0]
    assert schedule[0] > schedule[-1]  # large early, small late


def test_nqm_expected_loss_matches_sampled_sgd():
    import numpy as np

    rf = _example("nqm")
    schedule = [1.0, 0.3]
    losses = []
    for seed in range(200):
        t = type("T", (rf.trainable,), {"seed": seed})()
        t.setup({"lr": schedule[0]})
        for lr in schedule:
            t.apply({"lr": lr})
            for _ in range(10):
                last = t.train()["loss"]
        losses.append(last)
    assert np.mean(losses) == pytest.approx(rf.module.expected_loss(schedule, 10), rel=0.05)
    state = t.save()
    other = rf.trainable()
    other.setup({"lr": 0.5})
    other.load(state)
    other.apply({"lr": schedule[-1]})
    assert other.train()["loss"] == t.train()["loss"]  # the noise stream travels with the state


def test_digits_vectorized_trains_the_population_as_one_stacked_model(tmp_path):
    rf = _example("digits_vectorized")
    assert rf.settings["backend"] == "vectorized"
    good = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    kw = {"population": 3, "budget": hp.Steps(4), "ready": 2, "configs": [good] * 3}
    res = _run(rf, tmp_path, workers=None, **kw)
    assert res.best.score > 0.85
    assert rf.module.evaluate(res.load_checkpoint()) > 0.85
    assert all("test" not in k for r in res.records() for k in r)


def test_cartpole_vectorized_learns_with_members_stepped_together(tmp_path):
    rf = _example("cartpole_vectorized")
    good = {"lr": 2e-2, "ent_coef": 1e-3, "gamma": 0.99}
    kw = {"population": 4, "budget": hp.Steps(12), "ready": 4, "configs": [good] * 4}
    # on one PyTorch thread: the backend's own choice, measured in a quiet moment, can be two
    # threads that spin once the machine is busy (this test took 4 to 21 s on the same code)
    res = _run(rf, tmp_path, workers=None, backend_options={"threads": 1}, **kw)
    first = [r["return"] for r in res.records() if r["step"] == 1]
    assert res.best.score > max(2 * max(first), 60)
    assert rf.module.evaluate(res.load_checkpoint(), episodes=4) > 60
