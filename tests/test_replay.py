"""Replay: a fresh model trained along a member's recorded schedule lands on its score."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import hyperpop as hp
from hyperpop.cli import main as cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import toy


@pytest.fixture(scope="module")
def toy_db(tmp_path_factory):
    """The paper's toy, PBT with exploits, recorded in a store."""
    db = tmp_path_factory.mktemp("replay") / "toy.db"
    kw = {k: v for k, v in toy.settings.items() if k not in ("storage", "budget")}
    hp.run(toy.Toy, toy.space, storage=db, budget=hp.Steps(60), **kw)
    return db


def test_replay_of_the_toy_reproduces_the_recorded_score(toy_db):
    res = hp.load(toy_db)
    best = res.best
    assert len(best.schedule) > 2 and set(res.ancestry()) == {0, 1}  # both members trained it
    r = hp.replay(toy_db)  # the trainable is found where the store says it came from
    assert r.member == best.id and r.steps == best.step == 60
    assert r.original_score == best.score
    assert r.close() and r.difference == pytest.approx(0.0, abs=1e-12)
    assert r.max_trajectory_difference == pytest.approx(0.0, abs=1e-12)
    assert len(r.scores) == 60 and r.scores[-1] == r.score
    assert sorted(r.original_scores) == list(range(1, 61))  # the whole lineage is on record


def test_replay_follows_the_schedule_not_the_final_config(toy_db):
    """Training the whole way with the final config alone lands elsewhere."""
    res = hp.load(toy_db)
    best = res.best
    m = toy.Toy()
    m.setup(best.config)
    for _ in range(best.step):
        last = m.train()["Q"]
    assert abs(last - best.score) > 1e-3
    assert hp.replay(res, "best", trainable=toy.Toy).close(rtol=1e-9)


def test_replay_of_another_member_and_a_prefix(toy_db):
    res = hp.load(toy_db)
    other = next(m for m in res.members if m.id != res.best.id)
    r = hp.replay(res, other.id, trainable=toy.Toy)
    assert r.member == other.id and r.close(rtol=1e-9)
    part = hp.replay(res, res.best.id, trainable=toy.Toy, steps=10)
    assert part.steps == 10 and len(part.scores) == 10 and part.close(rtol=1e-9)
    with pytest.raises(ValueError, match="steps must be in"):
        hp.replay(res, "best", trainable=toy.Toy, steps=61)
    with pytest.raises(KeyError, match="no member 7"):
        hp.replay(res, 7, trainable=toy.Toy)


class Other(hp.Trainable):
    def setup(self, config):
        self.n = 0

    def apply(self, config):
        pass

    def train(self):
        return {"loss": 1.0}

    def save(self):
        return None

    def load(self, state):
        pass


def test_replay_with_the_wrong_trainable_says_so(toy_db):
    with pytest.raises(hp.TrainableError, match="not the run's metric 'Q'"):
        hp.replay(toy_db, trainable=Other)


def test_replay_command(toy_db):
    out = CliRunner().invoke(cli, ["replay", str(toy_db), "--member", "best"])
    assert out.exit_code == 0, out.output
    assert "reproduced" in out.output and "schedule followed" in out.output
    out = CliRunner().invoke(cli, ["replay", str(toy_db), "--json", "--steps", "20"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["steps"] == 20 and data["close"] is True
    out = CliRunner().invoke(cli, ["replay", str(toy_db), "--member", "x"])
    assert out.exit_code != 0 and "not a member id" in out.output
    out = CliRunner().invoke(cli, ["replay", str(toy_db), "--member", "9"])
    assert out.exit_code != 0 and "no member 9" in out.output


def test_replay_command_with_an_explicit_trainable_file(toy_db):
    path = Path(toy.__file__)
    out = CliRunner().invoke(cli, ["replay", str(toy_db), "--trainable", f"{path}:Toy"])
    assert out.exit_code == 0, out.output
    assert "reproduced" in out.output


class Reseeds(hp.Trainable):
    """Like a PyTorch trainable whose minibatch generator is made in ``setup`` and not saved:
    a fresh ``setup`` + ``load`` (what a worker does at a copy) restarts its random stream."""

    def setup(self, config):
        import numpy as np

        self.x, self.lr = 0.0, config["lr"]
        self.rng = np.random.default_rng(0)

    def train(self):
        self.x += self.lr * float(self.rng.random())
        return {"score": self.x}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state

    def apply(self, config):
        self.lr = config["lr"]


def test_replay_rebuilds_the_model_at_every_copy_as_the_worker_did():
    res = hp.run(
        Reseeds,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=4,
        workers=1,
        budget=hp.Steps(16),
        ready=4,
        backend="simulated",  # one in-process worker: members are rebuilt only at copies
    )
    copied = [m for m in res.members if len({s["trained_by"] for s in m.schedule}) > 1]
    assert copied
    for m in copied:
        r = hp.replay(res, m.id, trainable=Reseeds)
        assert r.max_trajectory_difference == 0.0, m.schedule
        assert r.state == pytest.approx(r.score)  # the trained state comes back
