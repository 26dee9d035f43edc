"""The Python API's own errors reach the caller with a short traceback (issue 19's rough
edges): the frames inside hyperpop are cut, the type and the message stay, so the last line
a person reads says what to do. Also: more workers than members start one per member."""

from __future__ import annotations

import logging
import traceback

import pytest

import hyperpop as hp


class Counter(hp.Trainable):
    def setup(self, config):
        self.total = 0.0

    def apply(self, config):
        pass

    def train(self):
        self.total += 1.0
        return {"score": self.total}

    def save(self):
        return self.total

    def load(self, state):
        self.total = state


class ReturnsAFloat(Counter):
    def train(self):
        self.total += 1.0
        return self.total


KW = dict(population=2, workers=2, budget=4, ready=2, backend="simulated", progress=False)
SPACE = {"lr": hp.uniform(0.1, 1.0)}


def _frames(err: BaseException) -> list[str]:
    """The files of the traceback's frames, outermost first."""
    return [f.filename for f in traceback.extract_tb(err.__traceback__)]


def _short(err: pytest.ExceptionInfo) -> None:
    """The traceback goes from this test's call to hyperpop's entry point, and no deeper."""
    frames = _frames(err.value)
    assert frames[0] == __file__ and len(frames) == 2, frames
    assert frames[1].endswith("hyperpop/run.py")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_metric_typo_is_raised_from_the_callers_line(tmp_path):
    with pytest.raises(
        hp.MetricError, match="reported \\['score'\\] but not the metric 'scor'"
    ) as err:
        hp.run(Counter, SPACE, metric="scor", storage=tmp_path / "r.db", **KW)
    _short(err)


def test_train_returning_a_float_is_raised_from_the_callers_line(tmp_path):
    with pytest.raises(
        hp.RunError, match="train\\(\\) must return a dict of metrics, got float"
    ) as err:
        hp.run(ReturnsAFloat, SPACE, metric="score", storage=tmp_path / "r.db", **KW)
    _short(err)


def test_bad_settings_and_a_stored_run_are_raised_from_the_callers_line(tmp_path):
    with pytest.raises(hp.SettingsError, match="population") as err:
        hp.run(Counter, SPACE, metric="score", **{**KW, "population": 0})
    _short(err)
    db = tmp_path / "r.db"
    hp.run(Counter, SPACE, metric="score", storage=db, **KW)
    with pytest.raises(hp.RunExistsError) as exists:
        hp.run(Counter, SPACE, metric="score", storage=db, **KW)
    _short(exists)
    assert exists.value.path == db  # the same exception, attributes and all
    with pytest.raises(hp.StoreError, match="no hyperpop store") as missing:
        hp.resume(tmp_path / "missing.db")
    _short(missing)


def test_an_unexpected_error_keeps_its_whole_traceback(tmp_path):
    """Only hyperpop's own, worded errors are cut short: a bug elsewhere shows where it is."""

    def broken_progress(pop):
        raise ZeroDivisionError("a bug in the caller's progress callback")

    with pytest.raises(ZeroDivisionError) as err:
        hp.run(Counter, SPACE, metric="score", **{**KW, "progress": broken_progress})
    assert len(_frames(err.value)) > 3


def test_more_workers_than_members_start_one_per_member_and_say_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hyperpop"):
        result = hp.run(Counter, SPACE, metric="score", **{**KW, "workers": 8})
    assert result.settings["workers"] == 2
    assert "workers=8 but the population has 2 members: starting 2 workers" in caplog.text
    assert all(m.step == 4 for m in result.members)
