"""What the read-only commands show a person (issue 19's rough edges): ``hyperpop status`` in
words, an interrupted run's members as interrupted, and ``hyperpop interventions`` listing what
people did. In process, on the simulated backend."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from cli_jobs import Counter
from click.testing import CliRunner

import hyperpop as hp
from hyperpop.cli import main


class PinThenStop(hp.callbacks.Callback):
    """Asks to pin member 1 (written to the store, not yet read), then Ctrl-C: the request
    waits for the next driver."""

    def __init__(self, db: Path):
        self.db = db

    def on_events(self, events, pop):
        if all(m.step >= 2 for m in pop.members.values()):
            hp.steer(self.db).pin(1, wait=False)
            raise KeyboardInterrupt


def _interrupted(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    with pytest.raises(KeyboardInterrupt):
        hp.run(
            Counter,
            {"lr": hp.uniform(0.1, 1.0)},
            metric="score",
            population=3,
            workers=2,
            budget=6,
            ready=2,
            storage=db,
            backend="simulated",
            progress=False,
            callbacks=[PinThenStop(db)],
        )
    return db


def cli(*args: object) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def test_status_speaks_words_and_shows_an_interrupted_runs_members_as_interrupted(tmp_path):
    db = _interrupted(tmp_path)
    out = cli("status", db)
    assert "MemberStatus" not in out and "None" not in out and "{" not in out
    assert f"status: interrupted (no driver is writing it; `hyperpop resume {db}` continues)" in out
    assert "members: 3 (3 interrupted)" in out
    assert " running " not in out and "│ interrupted" in out
    hp.resume(db, Counter, progress=False)
    out = cli("status", db)
    assert "status: finished (every member finished)" in out
    assert "members: 3 (3 finished)" in out and "best: member " in out


def test_interventions_lists_what_people_did(tmp_path):
    db = _interrupted(tmp_path)
    hp.resume(db, Counter, progress=False)  # the new driver acts on the waiting pin
    rows = list(csv.DictReader(io.StringIO(cli("interventions", db))))
    assert [(r["kind"], r["member"]) for r in rows] == [("pin", "1")]
    assert "interventions" in cli("lineage", "--help")
