"""Hugging Face Transformers under hyperpop: a tiny GPT-2 built from a config, trained for real."""

from __future__ import annotations

import os
from pathlib import Path

import cloudpickle
import pytest
from integration_docs import docs_diff, integrations_benchmark, run_script

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may come from the hub
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import hyperpop as hp  # noqa: E402
from hyperpop.integrations.transformers import TransformersTrainable  # noqa: E402
from hyperpop.trainable import TrainableError  # noqa: E402
from hyperpop.userfile import load_file  # noqa: E402

EXAMPLE = load_file(Path(__file__).resolve().parents[1] / "examples" / "textlm_transformers.py")
M = EXAMPLE.module
Trainable = TransformersTrainable.wrap(M.make_trainer, steps=4)
CONFIG = {"learning_rate": 3e-3, "weight_decay": 0.01, "warmup_steps": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models only lose time to threads on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained(config=CONFIG, intervals=1):
    t = Trainable()
    t.setup(dict(config))
    for _ in range(intervals):
        last = t.train()
    return t, last


def _linear(step: int, warmup: int, total: int) -> float:
    """transformers' linear schedule with warmup, as a factor of the base rate."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def test_an_interval_is_n_steps_then_a_log_and_an_evaluation():
    t, first = _trained()
    second = t.train()
    t.cleanup()
    assert (first["global_step"], second["global_step"]) == (4, 8)
    assert {"loss", "grad_norm", "learning_rate", "eval_loss", "epoch"} <= set(second)
    assert not any(k.endswith(("_runtime", "_per_second")) for k in second)
    assert second["eval_loss"] < first["eval_loss"] < 4.6  # below a uniform guess, log(99)


def test_explored_hyperparameters_reach_optimiser_and_scheduler_after_a_load():
    donor, _ = _trained(intervals=2)
    state = cloudpickle.dumps(donor.save())
    donor.cleanup()
    b = Trainable()
    b.setup({"learning_rate": 1e-4, "weight_decay": 0.0, "warmup_steps": 30})
    b.load(cloudpickle.loads(state))  # before b has trained: applied when training starts
    new = {"learning_rate": 0.01, "weight_decay": 0.05, "warmup_steps": 12}
    b.apply(new)
    metrics = b.train()
    opt, sched = b.trainer.optimizer, b.trainer.lr_scheduler
    assert metrics["global_step"] == 12  # the donor's 8, and 4 more
    assert sched.last_epoch == 12 and sched.base_lrs == [0.01, 0.01]
    total = M.STEPS * M.BUDGET
    lr = 0.01 * _linear(12, 12, total)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, lr])
    # weight decay only where transformers puts it (not biases and norms)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert b.trainer.args.learning_rate == 0.01
    # and a change while paused (no load) takes effect at once
    b.apply({**new, "learning_rate": 0.02})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2 * lr, 2 * lr])
    b.cleanup()


def test_save_load_round_trips_weights_optimiser_scheduler_and_step():
    a, _ = _trained(intervals=2)
    state = cloudpickle.loads(cloudpickle.dumps(a.save()))
    b, _ = _trained({**CONFIG, "learning_rate": 1e-3})
    b.load(state)  # while b's training is paused: into its live optimiser and scheduler
    b.apply(CONFIG)
    again = b.save()
    for key, value in state["model"].items():
        assert torch.equal(value, again["model"][key]), key
    moments = state["optimizer"]["state"]
    assert moments and all(
        torch.equal(s["exp_avg"], again["optimizer"]["state"][i]["exp_avg"])
        for i, s in moments.items()
    )
    assert again["scheduler"]["last_epoch"] == state["scheduler"]["last_epoch"] == 8
    assert again["global_step"] == 8
    assert b.train()["global_step"] == 12
    a.cleanup()
    b.cleanup()


def test_a_key_that_cannot_be_applied_is_a_clear_error():
    t = Trainable()
    with pytest.raises(TrainableError, match="'dropout'.*build_keys"):
        t.setup({**CONFIG, "dropout": 0.1})


def test_a_schedule_shorter_than_the_run_is_a_clear_error():
    def short(config):
        trainer = M.make_trainer(config)
        trainer.args.max_steps = 6
        return trainer

    t = TransformersTrainable.wrap(short, steps=4)()
    t.setup(CONFIG)
    t.train()
    with pytest.raises(TrainableError, match="max_steps"):
        t.train()
    with pytest.raises(TrainableError, match="ended"):
        t.train()
    t.cleanup()


def test_partial_rejuvenation_resets_weights_and_drops_the_moments():
    t, _ = _trained()
    before = {k: v.clone() for k, v in t.trainer.model.state_dict().items()}
    t.reset("shrink_perturb")
    after = t.trainer.model.state_dict()
    assert not torch.equal(
        before["transformer.h.0.mlp.c_fc.weight"], after["transformer.h.0.mlp.c_fc.weight"]
    )
    assert t.save()["optimizer"]["state"] == {}
    assert t.train()["global_step"] == 8
    t.cleanup()


def test_training_prints_nothing_and_saves_no_trainer_checkpoints(tmp_path, capfd):
    def saving(config):
        trainer = M.make_trainer(config)
        trainer.args.output_dir = str(tmp_path / "out")
        trainer.args.save_strategy, trainer.args.save_steps = "steps", 2
        return trainer

    t = TransformersTrainable.wrap(saving, steps=4)()
    t.setup(CONFIG)
    t.train()
    t.train()
    t.cleanup()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_text_example_runs_under_hp_run(tmp_path):
    assert EXAMPLE.settings["storage"] == "runs/textlm_transformers.db"
    assert M.decode(M.encode("def f():\n").tolist()) == "def f():\n"
    # one worker process: it unpickles the example's trainable and imports transformers as any
    # worker does (each one costs seconds of CPU for the import alone)
    kw = {**EXAMPLE.settings, "storage": tmp_path / "run.db", "workers": 1, "population": 2}
    res = hp.run(Trainable, EXAMPLE.space, **{**kw, "budget": hp.Steps(2), "ready": 1})
    rows = res.records()
    assert {r["step"] for r in rows} == {1, 2}
    assert all(r["global_step"] == 4 * r["step"] for r in rows)
    assert res.best.score < 4.0
    state = res.load_checkpoint()
    assert M.evaluate(state) < 4.0
    assert M.sample(state, length=10).startswith("def ")


def test_the_docs_diff_turns_a_transformers_script_into_a_pbt_run(tmp_path, monkeypatch, capsys):
    before, after, changed = docs_diff("train_textlm_pbt.py")
    assert changed < 20
    compile(before, "train_textlm.py", "exec")
    assert "trainer.train()" in before and "trainer.train()" not in after
    small = after.replace(
        "population=8, budget=hp.Steps(16)", "population=2, budget=hp.Steps(1), backend='simulated'"
    )
    assert small != after
    monkeypatch.chdir(tmp_path)
    run_script(tmp_path / "train_textlm_pbt.py", small)
    score = float(capsys.readouterr().out.strip().splitlines()[-1].split()[0])
    assert score < 4.0  # eval_loss after 25 steps: below a uniform guess over the characters


def test_the_overhead_benchmark_runs_at_smoke_size(capsys):

    (row,) = integrations_benchmark().main(["--smoke", "--only", "transformers"])
    assert row["adapter"] == "transformers" and row["plain"] > 0 and row["hyperpop"] > 0
    assert "ratio" in capsys.readouterr().out
