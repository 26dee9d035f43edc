"""hyperpop.torch: hyperparameters applied in place after a restore (the ray#62173 lesson)."""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")

import hyperpop as hp  # noqa: E402
from hyperpop.torch import (  # noqa: E402
    TorchTrainable,
    apply_to_optimizer,
    load_state,
    minibatches,
    save_state,
)


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    return x, y


class Linear(TorchTrainable):
    """A linear regression trained by SGD with momentum (or Adam)."""

    optim = "sgd"

    def build(self, config):
        self.model = torch.nn.Linear(5, 1)
        if self.optim == "sgd":
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        else:
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config["lr"])
        self.x, self.y = _problem()

    def loss(self):
        return torch.nn.functional.mse_loss(self.model(self.x), self.y)

    def train(self):
        self.optimizer.zero_grad()
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        return {"loss": float(loss.detach())}


class AdamLinear(Linear):
    optim = "adam"


def _roundtrip(state):
    return pickle.loads(pickle.dumps(state))  # what the checkpoint store does


def test_load_then_apply_trains_with_new_lr_and_keeps_momentum():
    donor = Linear()
    donor.setup({"lr": 0.1, "momentum": 0.9})
    for _ in range(3):
        donor.train()
    state = _roundtrip(donor.save())
    buffers = [
        donor.optimizer.state[p]["momentum_buffer"].clone() for p in donor.model.parameters()
    ]

    receiver = Linear()
    receiver.setup({"lr": 0.5, "momentum": 0.0})
    receiver.load(state)  # restores the donor's param_groups: lr 0.1, momentum 0.9 ...
    assert receiver.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    receiver.apply({"lr": 0.001, "momentum": 0.5})  # ... and apply has the last word
    group = receiver.optimizer.param_groups[0]
    assert group["lr"] == 0.001 and group["momentum"] == 0.5
    assert receiver.steps == 3

    # the moments survived the load and the apply
    params = list(receiver.model.parameters())
    for p, buf in zip(params, buffers):
        assert torch.equal(receiver.optimizer.state[p]["momentum_buffer"], buf)

    # one step follows SGD's rule with the NEW values and the donor's buffer:
    # buf' = 0.5 * buf + grad;  p' = p - 0.001 * buf'
    before = [p.detach().clone() for p in params]
    receiver.optimizer.zero_grad()
    receiver.loss().backward()
    grads = [p.grad.detach().clone() for p in params]
    receiver.optimizer.step()
    for p, p0, g, buf in zip(params, before, grads, buffers):
        expected = p0 - 0.001 * (0.5 * buf + g)
        torch.testing.assert_close(p.detach(), expected)
        assert not torch.allclose(p.detach(), p0 - 0.1 * (0.9 * buf + g))


def test_adam_keeps_moments_and_step_count_after_apply():
    donor = AdamLinear()
    donor.setup({"lr": 0.05, "beta1": 0.8})
    for _ in range(4):
        donor.train()
    state = _roundtrip(donor.save())
    receiver = AdamLinear()
    receiver.setup({"lr": 0.05})
    receiver.load(state)
    applied = receiver.apply({"lr": 1e-3, "beta2": 0.95, "weight_decay": 0.01})
    assert applied is None  # TorchTrainable.apply returns nothing; the helper returns values
    group = receiver.optimizer.param_groups[0]
    assert group["lr"] == 1e-3 and group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.01
    for p_r, p_d in zip(receiver.model.parameters(), donor.model.parameters()):
        s_r, s_d = receiver.optimizer.state[p_r], donor.optimizer.state[p_d]
        assert float(s_r["step"]) == 4.0
        assert torch.equal(s_r["exp_avg"], s_d["exp_avg"])
        assert torch.equal(s_r["exp_avg_sq"], s_d["exp_avg_sq"])


def test_apply_to_optimizer_every_group_and_return_value():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(
        [{"params": a.parameters()}, {"params": b.parameters(), "lr": 1.0}], lr=0.1
    )
    out = apply_to_optimizer(opt, {"lr": 0.3, "momentum": 0.7, "unrelated": 3})
    assert out == {"lr": 0.3, "momentum": 0.7}
    assert [g["lr"] for g in opt.param_groups] == [0.3, 0.3]
    assert isinstance(opt.param_groups[0]["momentum"], float)  # not truncated to SGD's int 0
    # the default mapping skips what the optimiser does not have (SGD has no betas)
    assert apply_to_optimizer(opt, {"beta1": 0.5}) == {}


def test_apply_to_optimizer_explicit_mapping():
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    out = apply_to_optimizer(
        opt, {"learning": 0.02, "b2": 0.9}, {"learning": "lr", "b2": ("betas", 1)}
    )
    assert out == {"lr": 0.02, "betas": (0.9, 0.9)}
    with pytest.raises(KeyError, match="momentum"):
        apply_to_optimizer(opt, {"m": 0.9}, {"m": "momentum"})


def test_apply_to_optimizer_tensor_lr_and_scheduler():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.1))
    apply_to_optimizer(opt, {"lr": 0.01})
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.01)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    apply_to_optimizer(opt, {"lr": 0.04}, scheduler=sched)
    assert sched.base_lrs == [0.04] and opt.param_groups[0]["initial_lr"] == 0.04
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)


def test_save_and_load_state_roundtrip():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    state = save_state(copy_tensors=True, model=model, optimizer=opt, step=7)
    with torch.no_grad():
        model.weight.add_(1.0)
    other = torch.nn.Linear(3, 1)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.5)
    rest = load_state(state, model=other, optimizer=other_opt)
    assert rest == {"step": 7}
    torch.testing.assert_close(other.weight, model.weight - 1.0)
    assert other_opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(KeyError, match="scheduler"):
        load_state(state, scheduler=other_opt)


def test_minibatches_cover_everything_once():
    x = torch.arange(10)
    g = torch.Generator().manual_seed(0)
    batches = [b for (b,) in minibatches(x, batch_size=4, generator=g)]
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    # a seeded generator gives the same order on every run: torch's permutation for that seed
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat(batches), order)
    pairs = list(minibatches(x, x * 2, batch_size=3, shuffle=False))
    assert all(type(b) is tuple and torch.equal(b[1], b[0] * 2) for b in pairs)
    assert torch.equal(pairs[0][0], torch.tensor([0, 1, 2]))
    assert [len(b) for (b,) in minibatches(x, batch_size=4, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="same first dimension"):
        next(minibatches(x, torch.arange(3), batch_size=2))


class Probe(Linear):
    """Reports the lr its optimiser actually uses, to show exploits never bring old ones back."""

    def train(self):
        out = super().train()
        out["used_lr"] = self.optimizer.param_groups[0]["lr"]
        out["score"] = -out["loss"]
        return out


def test_pbt_run_members_train_with_their_configs_lr(tmp_path):
    space = {"lr": hp.loguniform(1e-3, 0.1), "momentum": hp.uniform(0.0, 0.9)}
    res = hp.run(
        Probe,
        space,
        metric="score",
        mode="max",
        population=4,
        workers=2,
        budget=hp.Steps(12),
        ready=2,
        synchronous=True,  # generations: exploits do not depend on timing
        seed=3,
        storage=tmp_path / "r.db",
        backend="simulated",  # in-process: torch in worker processes is the examples' tests'
        progress=False,
    )
    rows = res.records()
    assert any(e.kind == "exploited" for e in res.events)
    # every report was trained with the lr of the config the member held at that step
    for r in rows:
        assert r["used_lr"] == pytest.approx(r["config/lr"])


def test_core_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, hyperpop, hyperpop.run, hyperpop.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class Shuffled(Linear):
    """Minibatches from a generator made in build(), plus dropout-like global randomness."""

    def build(self, config):
        super().build(config)
        self.generator = torch.Generator().manual_seed(7)

    def train(self):
        idx = torch.randperm(64, generator=self.generator)[:16]
        noise = torch.rand(1).item()  # torch's global generator
        self.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(self.model(self.x[idx]), self.y[idx]) * (1 + noise)
        loss.backward()
        self.optimizer.step()
        return {"loss": float(loss.detach())}


def test_a_restored_member_trains_on_exactly_as_in_memory():
    """save() carries the random state: setup + load (a worker restoring a checkpoint, or a
    replay at a copy) continues the same random stream as the model kept in memory."""
    config = {"lr": 0.05}
    kept = Shuffled()
    kept.setup(config)
    for _ in range(3):
        kept.train()
    state = _roundtrip(kept.save())
    expected = [kept.train()["loss"] for _ in range(3)]
    restored = Shuffled()
    restored.setup(config)  # re-seeds torch and remakes the generator
    restored.load(state)
    restored.apply(config)
    assert [restored.train()["loss"] for _ in range(3)] == expected


def test_partial_resets_shrink_and_perturb_or_reinitialise_chosen_layers():
    from hyperpop.torch import reinitialize, shrink_perturb

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    reinitialize(model, ["1"])  # the head only
    after = list(model.parameters())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert not torch.equal(after[2], before[2])
    with pytest.raises(KeyError, match="not a submodule"):
        reinitialize(model, ["head"])
    kept = [p.detach().clone() for p in model.parameters()]
    shrink_perturb(model, shrink=0.5, noise=0.0)
    assert all(torch.allclose(p, 0.5 * q) for p, q in zip(model.parameters(), kept))
    t = Linear()
    t.setup({"lr": 0.1, "momentum": 0.9})
    t.train()
    assert t.optimizer.state  # momentum buffers
    t.reset("shrink_perturb")
    assert not t.optimizer.state  # moments of the old weights are dropped
    with pytest.raises(ValueError, match="shrink_perturb"):
        t.reset("everything")


class Threads(hp.Trainable):
    """Reports the size of PyTorch's thread pool in its worker process."""

    def setup(self, config):
        pass

    def apply(self, config):
        pass

    def train(self):
        return {"score": 0.0, "threads": torch.get_num_threads()}

    def save(self):
        return None

    def load(self, state):
        pass


@pytest.mark.parametrize(
    ("env", "expected"), [("1", 1), (None, 3)], ids=["environment-wins", "threads_per_worker"]
)
def test_pytorch_in_a_worker_uses_the_threads_omp_num_threads_says(
    tmp_path, monkeypatch, env, expected
):
    """A worker's OMP_NUM_THREADS is the environment's where set, else threads_per_worker;
    PyTorch, imported as the trainable is unpickled, sizes its pool the same way (it took
    threads_per_worker even where the environment said otherwise)."""
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    res = hp.run(
        Threads,
        {"x": hp.uniform(0, 1)},
        metric="score",
        population=1,
        budget=hp.Steps(1),
        backend_options={"threads_per_worker": 3},
        workers=1,
        storage=None,
        seed=0,
    )
    assert res.table()["threads"].tolist() == [expected]
