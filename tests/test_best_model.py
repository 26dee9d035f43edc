"""The best model out (issue 12): the best checkpoint seen is kept to the end, ``result.best``
points at it, ``hyperpop export`` writes it, and ``storage=None`` keeps it in the result."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import hyperpop as hp
from hyperpop.cli import main as cli


class Peak(hp.Trainable):
    """Every member gets better until step 8, then worse (overfitting): the last checkpoints
    are not the best ones."""

    def setup(self, config):
        self.step, self.lr = 0, config["lr"]

    def train(self):
        self.step += 1
        return {"score": self.lr * (8 - abs(self.step - 8))}

    def save(self):
        return {"step": self.step}

    def load(self, state):
        self.step = state["step"]

    def apply(self, config):
        self.lr = config["lr"]


SETTINGS = dict(
    metric="score",
    population=3,
    workers=1,
    budget=hp.Steps(16),
    ready=4,
    exploit=None,
    explore=None,
    configs=[{"lr": 1.0}, {"lr": 2.0}, {"lr": 3.0}],
    backend="simulated",
)


def test_the_best_checkpoint_outlives_its_member_and_result_best_points_at_it(tmp_path):
    db = tmp_path / "run.db"
    res = hp.run(Peak, {"lr": hp.uniform(0.5, 4.0)}, storage=db, **SETTINGS)
    best = res.best
    assert (best.id, best.step, best.score) == (2, 8, 24.0)  # the peak, not the final 0.0
    assert res.population.members[2].step == 16 and best.checkpoint != res.members[2].checkpoint
    assert res.load_checkpoint("best") == {"step": 8}
    assert best.schedule_fn()(8) == {"lr": 3.0}
    again = hp.replay(db, "best", trainable=Peak)  # replays the best model, not the last one
    assert again.steps == 8 and again.original_score == again.score == 24.0


def test_storage_none_keeps_the_best_state_in_the_result():
    res = hp.run(Peak, {"lr": hp.uniform(0.5, 4.0)}, **SETTINGS)
    assert res.best_state == {"step": 8}
    assert res.load_checkpoint("best") == {"step": 8}


def test_export_writes_the_best_model(tmp_path):
    torch = pytest.importorskip("torch")
    from hyperpop.torch import TorchTrainable

    class Tiny(TorchTrainable):
        def build(self, config):
            self.model = torch.nn.Linear(3, 1)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])

        def train(self):
            self.steps += 1
            return {"score": float(self.steps)}

    db = tmp_path / "run.db"
    settings = {k: v for k, v in SETTINGS.items() if k != "configs"}
    hp.run(Tiny, {"lr": hp.uniform(0.01, 0.1)}, storage=db, **settings)
    out = tmp_path / "best.pt"
    r = CliRunner().invoke(cli, ["export", str(db), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "best checkpoint" in r.output and "(torch)" in r.output
    state = torch.load(out, weights_only=True)  # no pickled code needed to open it
    model = torch.nn.Linear(3, 1)
    model.load_state_dict(state["model"])
    r = CliRunner().invoke(cli, ["export", str(db), "-m", "9", "-o", str(out)])
    assert r.exit_code != 0 and "no member" in r.output
