"""PyTorch Lightning under hyperpop: real fits of a tiny module, state round trips, a real run."""

from __future__ import annotations

import math
from pathlib import Path

import cloudpickle
import pytest
from integration_docs import docs_diff, integrations_benchmark, run_script

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import hyperpop as hp  # noqa: E402
from hyperpop.integrations.lightning import LightningTrainable  # noqa: E402
from hyperpop.trainable import TrainableError  # noqa: E402
from hyperpop.userfile import load_file  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models only lose time to threads on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


class Tiny(L.LightningModule):
    """Logistic regression: SGD with momentum and a per-epoch StepLR (gamma 0.5 every
    ``step_every`` epochs)."""

    def __init__(self, lr=0.1, momentum=0.9, batch_size=16, step_every=1000):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(6, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=h.step_every, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": sched}

    def train_dataloader(self):
        return DataLoader(TensorDataset(*_data()), batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*_data()), batch_size=96)


Trainable = LightningTrainable.wrap(Tiny, trainer_kwargs={"accelerator": "cpu"})


def _weights(t: LightningTrainable) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.module.parameters()]


def test_an_interval_is_one_fit_of_an_epoch_with_validation_metrics():
    t = Trainable()
    t.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    first = t.train()
    second = t.train()
    assert (first["epoch"], first["global_step"]) == (1, 6)  # 96 rows / 16
    assert (second["epoch"], second["global_step"]) == (2, 12)  # resumed, not restarted
    assert {"train_loss", "val_acc"} <= set(second)
    assert second["train_loss"] < first["train_loss"]


def test_an_interval_can_be_steps_and_is_validated_at_its_end():
    t = LightningTrainable.wrap(Tiny, steps=4, trainer_kwargs={"accelerator": "cpu"})()
    t.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    for k in (1, 2, 3):
        metrics = t.train()
        assert metrics["global_step"] == 4 * k
        assert "val_acc" in metrics  # validated even where the fit stopped mid-epoch


def test_load_then_apply_continues_the_donor_exactly_with_the_new_hyperparameters():
    # a continues in memory; b takes a's pickled state (as an exploit does), then a's new config:
    # weights, momentum buffers, scheduler and random state must make b's interval a's, exactly
    a = Trainable()
    a.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    a.train()
    a.train()
    state = cloudpickle.dumps(a.save())
    new = {"lr": 0.05, "momentum": 0.5, "batch_size": 32}
    a.apply(new)
    a.train()
    b = Trainable()
    b.setup({"lr": 0.7, "momentum": 0.1, "batch_size": 8})
    b.load(cloudpickle.loads(state))
    b.apply(new)
    metrics = b.train()
    assert metrics["global_step"] == 12 + 3  # the donor's loops went on: 96 rows / 32
    for p, q in zip(_weights(a), _weights(b)):
        assert torch.equal(p, q)
    group = b.trainer.optimizers[0].param_groups[0]
    assert (group["lr"], group["momentum"]) == (0.05, 0.5)  # not the donor's 0.2 and 0.9
    assert b.trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.05]
    assert b.module.hparams.batch_size == 32


def test_a_new_learning_rate_keeps_the_schedule_position():
    config = {"lr": 0.4, "momentum": 0.0, "batch_size": 96, "step_every": 1}
    a = Trainable()
    a.setup(config)
    a.train()
    a.train()  # two epochs: the schedule is at 0.4 * 0.5**2
    assert a.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
    b = type(a)()
    b.setup(config)
    b.load(cloudpickle.loads(cloudpickle.dumps(a.save())))
    b.apply({**config, "lr": 0.8})
    b.train()  # trains its epoch at 0.8 * 0.25, then steps to 0.8 * 0.125
    assert b.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
    assert b.trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.8]
    assert b.trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3


def test_save_load_round_trips_weights_optimiser_scheduler_and_loops():
    a = Trainable()
    a.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    a.train()
    state = cloudpickle.loads(cloudpickle.dumps(a.save()))
    b = Trainable()
    b.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    b.load(state)
    for p, q in zip(_weights(a), _weights(b)):
        assert torch.equal(p, q)
    again = b.save()
    assert again["global_step"] == 6 and again["epoch"] == 1
    buf = again["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert torch.equal(buf, a.save()["optimizer_states"][0]["state"][0]["momentum_buffer"])
    assert again["lr_schedulers"] == a.save()["lr_schedulers"]


def test_a_key_that_reaches_nothing_is_a_clear_error():
    t = Trainable()
    t.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16, "dropout": 0.3})
    with pytest.raises(TrainableError, match="'dropout'.*save_hyperparameters"):
        t.train()


def test_hyperpop_owns_the_length_of_training():
    with pytest.raises(ValueError, match="max_epochs.*budget"):
        LightningTrainable.wrap(Tiny, trainer_kwargs={"max_epochs": 5})
    with pytest.raises(ValueError, match="not both"):
        LightningTrainable.wrap(Tiny, epochs=1, steps=10)
    with pytest.raises(TrainableError, match="not a LightningModule"):
        LightningTrainable.wrap(lambda config: nn.Linear(2, 2))().setup({})


def test_lightning_stays_quiet_and_writes_no_files(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    t = Trainable()
    t.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    t.train()
    t.train()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert list(tmp_path.iterdir()) == []  # no lightning_logs/, no checkpoints


def test_partial_rejuvenation_resets_weights_and_drops_the_moments():
    t = Trainable()
    t.setup({"lr": 0.2, "momentum": 0.9, "batch_size": 16})
    t.train()
    before = _weights(t)
    t.reset("shrink_perturb")
    assert not torch.equal(before[0], _weights(t)[0])
    assert t.save()["optimizer_states"][0]["state"] == {}
    assert math.isfinite(t.train()["train_loss"])


def test_a_pytorch_lightning_module_works_too():
    pl = pytest.importorskip("pytorch_lightning")

    class Old(pl.LightningModule):
        def __init__(self, lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Linear(6, 2)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

        def train_dataloader(self):
            return DataLoader(TensorDataset(*_data()), batch_size=32)

    t = LightningTrainable.wrap(Old)()
    t.setup({"lr": 0.3})
    assert t.train()["global_step"] == 3
    assert t.trainer.optimizers[0].param_groups[0]["lr"] == 0.3


def test_the_digits_example_runs_under_hp_run(tmp_path):
    pytest.importorskip("sklearn")
    rf = load_file(EXAMPLES / "digits_lightning.py")
    assert rf.settings["storage"] == "runs/digits_lightning.db"
    good = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32}
    # one worker process: it unpickles the example's trainable and imports Lightning as any
    # worker does (each one costs seconds of CPU for the import alone)
    kw = {**rf.settings, "storage": tmp_path / "run.db", "workers": 1, "population": 2}
    # exploits on, explore off: the batch size stays 32, so every epoch is 32 optimiser steps
    # whoever copies whom
    kw.update(budget=hp.Steps(3), ready=1, configs=[good] * 2, explore=None)
    res = hp.run(rf.trainable, rf.space, **kw)
    rows = res.records()
    assert {r["step"] for r in rows} == {1, 2, 3}
    assert all("val_acc" in r and r["global_step"] == 32 * r["step"] for r in rows)
    assert res.best.score > 0.8
    assert rf.module.evaluate(res.load_checkpoint()) > 0.8
    assert all("test" not in k for r in rows for k in r)  # selection never sees the test split


def test_the_docs_diff_turns_a_lightning_script_into_a_pbt_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    before, after, changed = docs_diff("train_digits_pbt.py")
    assert changed < 20
    compile(before, "train_digits.py", "exec")
    assert "trainer.fit(" in before and "trainer.fit(" not in after
    small = after.replace(
        "population=8, budget=hp.Steps(20)", "population=2, budget=hp.Steps(2), backend='simulated'"
    )
    assert small != after
    monkeypatch.chdir(tmp_path)
    run_script(tmp_path / "train_digits_pbt.py", small)
    score = float(capsys.readouterr().out.strip().splitlines()[-1].split()[0])
    assert score > 0.5  # val_acc after two epochs of the best member


def test_the_overhead_benchmark_runs_at_smoke_size(capsys):
    pytest.importorskip("sklearn")
    (row,) = integrations_benchmark().main(["--smoke", "--only", "lightning"])
    assert row["adapter"] == "lightning" and row["plain"] > 0 and row["hyperpop"] > 0
    assert "ratio" in capsys.readouterr().out
