"""Callbacks see every event the driver writes, in log order; one that raises is switched off."""

from __future__ import annotations

import logging

import pytest

import hyperpop as hp
from hyperpop.callbacks import Callback
from hyperpop.store.sqlite import SQLiteStore


def climb(config, checkpoint):
    start = checkpoint or 0
    for i in range(start, 100):
        hp.report(score=config["x"] * (i + 1), checkpoint=i + 1)


class Recorder(Callback):
    def __init__(self):
        self.seqs: list[int] = []
        self.started: tuple[int, object] | None = None
        self.ended: str | None = None

    def on_start(self, pop, path):
        self.started = (len(pop.members), path)

    def on_events(self, events, pop):
        assert pop.last_seq >= events[-1].seq  # folded in before the callback sees them
        self.seqs += [e.seq for e in events]

    def on_end(self, pop, reason):
        self.ended = reason


class Boom(Callback):
    def on_events(self, events, pop):
        raise RuntimeError("tracker down")


def test_callbacks_see_what_the_log_holds_and_a_failing_one_does_not_stop_the_run(tmp_path, caplog):
    rec = Recorder()
    db = tmp_path / "run.db"
    with caplog.at_level(logging.ERROR, logger="hyperpop"):
        hp.run(
            climb,
            {"x": hp.uniform(0.0, 1.0)},
            metric="score",
            population=4,
            budget=8,
            backend="simulated",
            storage=db,
            progress=False,
            callbacks=[Boom(), rec],
        )
    assert rec.started == (4, db)
    assert rec.ended == "every member finished"
    store = SQLiteStore(db)
    logged = [e.seq for e in store.read()]
    store.close()
    created = 1 + 4  # run_started and member_created are written before the session starts
    assert rec.seqs == logged[created:]
    assert "tracker down" in caplog.text and "switched off" in caplog.text


def test_callbacks_must_be_callback_instances():
    with pytest.raises(hp.SettingsError, match="hyperpop.callbacks.Callback"):
        hp.run(
            climb,
            {"x": 0.5},
            metric="score",
            population=1,
            budget=1,
            backend="simulated",
            progress=False,
            callbacks=[print],
        )
