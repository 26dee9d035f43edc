"""One ranking of scores (issue 20, item 4): ``Ranking(mode)`` says which score is better
wherever hyperpop compares scores."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

import hyperpop as hp
from hyperpop import population
from hyperpop.cli import main as cli
from hyperpop.dashboard.data import StoreSource
from hyperpop.live import LiveView, LogProgress, PlainProgress
from hyperpop.ranking import Ranking
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore
from hyperpop.summary import RunState

NAN = math.nan


@pytest.mark.parametrize("mode", ["max", "min"])
def test_a_number_beats_nothing_and_nan_and_the_better_side_wins(mode):
    r = Ranking(mode)
    good, bad = (2.0, 1.0) if mode == "max" else (1.0, 2.0)
    assert r.better(good, bad) and not r.better(bad, good) and not r.better(good, good)
    assert r.better(bad, None) and r.better(bad, NAN)
    assert not r.better(None, bad) and not r.better(NAN, bad) and not r.better(NAN, None)
    assert r.at_least(good, good) and r.at_least(good, bad) and not r.at_least(bad, good)
    assert r.at_least(NAN, None) and not r.at_least(NAN, bad)
    assert r.oriented(good) > r.oriented(bad) > r.oriented(NAN) == r.oriented(None) == -math.inf
    assert list(r.oriented_array(np.array([good, NAN, bad]))) == [
        r.oriented(good),
        -math.inf,
        r.oriented(bad),
    ]
    assert r.sign * good > r.sign * bad and r.better(bad, r.worst)
    assert r.better(r.toward_better(bad), bad) and r.better(bad, r.toward_worse(bad))
    assert r.reached(good, bad) and r.reached(bad, bad) and not r.reached(NAN, bad)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_best_first_order_and_best_of_put_nan_and_none_last(mode):
    r = Ranking(mode)
    scores = {"a": 1.0, "b": NAN, "c": 3.0, "d": None, "e": 3.0}
    order = sorted(scores, key=lambda k: (*r.key(scores[k]), k))
    top = ["c", "e", "a"] if mode == "max" else ["a", "c", "e"]
    assert order == [*top, "b", "d"]
    assert r.best_of(scores, scores.get) == top[0]  # the first among equals
    assert r.best_of(["b", "d"], scores.get) == "b"  # NaN only when nothing else scored
    assert r.best_of(["d"], scores.get) is None


def test_a_mode_other_than_max_or_min_is_refused_in_one_line():
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', got 'maximise'"):
        Ranking("maximise")
    assert Ranking.of("min") is Ranking.of("min") and Ranking.of("min") == Ranking("min")


# --- one best (issue 20, item 4) -------------------------------------------------------------
def _where_the_old_bests_differed() -> list[Event]:
    """Three members, ranked by the mean of their last two reports (``score_window=2``).
    Member 2 peaked at step 2 (ready score 7.0, kept as the run's best checkpoint) and fell
    to 1.0; member 1 leads now with a ready score of 6.45 after a last report of 7.9; member 0
    ended on the highest last report, 8.0, with a ready score of 5.5. Before one definition,
    ``Result.best`` named member 2 (7.0), ``hyperpop status`` and the log line member 1 (7.9)
    and the plain progress line member 1 (6.45)."""
    reports = {0: [6.0, 4.0, 3.0, 8.0], 1: [2.0, 6.5, 5.0, 7.9], 2: [5.0, 9.0, 1.0, 1.0]}
    settings = {"mode": "max", "metric": "acc", "score_window": 2, "population": 3}
    events = [Event(ev.RUN_STARTED, None, {"settings": settings})]
    events += [Event(ev.MEMBER_CREATED, m, {"config": {"lr": (0.1, 0.2, 0.3)[m]}}) for m in reports]
    for start in (0, 2):
        for m, scores in reports.items():
            for k in (1, 2):
                data = {"step": start + k, "score": scores[start + k - 1], "metrics": {}}
                events.append(Event(ev.REPORTED, m, data))
            blob = f"m{m}-s{start + 2}"
            events.append(Event(ev.CHECKPOINTED, m, {"step": start + 2, "checkpoint": blob}))
    for i, e in enumerate(events, 1):
        e.time = 100.0 + i
    return events


def test_result_status_the_live_lines_and_the_dashboard_name_one_best(tmp_path, caplog):
    db = tmp_path / "run.db"
    store = SQLiteStore(db, write=True)
    try:
        store.append(_where_the_old_bests_differed())
    finally:
        store.close()
    expected = (2, 7.0)  # the best weights seen: member 2's checkpoint of step 2

    result = hp.Result.load(db)
    best = result.best
    assert (best.id, best.score, best.step, best.seq) == (*expected, 2, 13)
    assert best.schedule == result.schedule("best") and "best member 2" in repr(result)

    status = CliRunner().invoke(cli, ["status", str(db), "--json"])
    assert status.exit_code == 0, status.output
    s = json.loads(status.output)
    assert (s["best_member"], s["best_score"]) == expected
    text = CliRunner().invoke(cli, ["status", str(db)]).output
    assert "best: member 2, acc=7\n" in text

    pop = result.population
    assert "best acc=7 (member 2)" in PlainProgress().line(pop, RunState())
    with caplog.at_level(logging.INFO, logger="hyperpop"):
        LogProgress(every=0)(pop)
    assert "best acc=7 (member 2)" in caplog.text
    console = Console(record=True, width=160)
    console.print(LiveView()._render(pop))
    assert "best acc=7" in console.export_text()

    source = StoreSource(db)
    try:
        view = source.refresh()
        assert view is not None
        d = view.summary()
        assert (d["best_member"], d["best_score"]) == expected
        # the lineage the dashboard draws is the best model's: member 2 up to its step 2
        assert view.best_lineage() == [{"step": 0, "member": 2, "config": {"lr": 0.3}}]
        assert [(r.member, r.step, r.score) for r in view.best_reports()] == [
            (2, 1, 5.0),
            (2, 2, 9.0),
        ]
    finally:
        source.close()


def test_the_best_is_the_member_now_when_it_is_as_good_and_follows_the_result_rules(
    monkeypatch,
):
    events = _where_the_old_bests_differed()
    # member 2 trains on to a ready score of 7.5 (7.0 and 8.0): the member now beats its past
    more = [
        Event(ev.REPORTED, 2, {"step": 5, "score": 7.0, "metrics": {}}),
        Event(ev.REPORTED, 2, {"step": 6, "score": 8.0, "metrics": {}}),
        Event(ev.CHECKPOINTED, 2, {"step": 6, "checkpoint": "m2-s6"}),
    ]
    result = hp.Result(events + more)
    assert (result.best.id, result.best.score, result.best.seq) == (2, 7.5, None)
    assert result.summary()["best_score"] == 7.5
    # before any ready point: the best last report
    early = hp.Result([e for e in events[:13] if e.kind != ev.CHECKPOINTED])
    assert (early.best.id, early.best.score) == (2, 9.0)
    assert early.summary()["best_member"] == 2
    # a strategy whose result excludes member 2 (as FIRE-PBT excludes its evaluators)
    monkeypatch.setitem(population.RESULT_RULES, "no-two", lambda settings, m: m != 2)
    events[0].data["settings"]["exploit"] = {"name": "no-two"}
    ruled = hp.Result(events)
    assert (ruled.best.id, ruled.best.score, ruled.best.seq) == (1, 6.45, None)
    assert PlainProgress().line(ruled.population, RunState()).endswith("best acc=6.45 (member 1)")
