"""The live terminal view renders what a user needs to follow a run."""

from __future__ import annotations

import logging

from rich.console import Console
from test_population import build, interval

from hyperpop.live import LiveView, LogProgress
from hyperpop.store import events as ev
from hyperpop.store.events import Event


def population():
    return build(
        [
            Event(ev.RUN_STARTED, None, {"settings": {"mode": "max", "metric": "val_acc"}}),
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.5, "opt": {"mom": 0.9}}}),
            Event(ev.MEMBER_CREATED, 1, {"config": {"lr": 0.25, "opt": {"mom": 0.1}}}),
            *interval(0, 0, 4, 0.9, "a"),
            *interval(1, 0, 4, 0.3, "b"),
            Event(ev.EXPLOITED, 1, {"donor": 0, "step": 4, "checkpoint": "a"}),
            Event(ev.EXPLORED, 1, {"config": {"lr": 0.6, "opt": {"mom": 0.9}}}),
        ]
    )


def test_live_table_shows_step_score_hyperparameters_and_last_exploit():
    view = LiveView()
    console = Console(record=True, width=160)
    console.print(view._render(population()))
    text = console.export_text()
    for needle in ("val_acc", "lr", "opt/mom", "← 0 @ 4", "0.9", "0.6", "2 members"):
        assert needle in text, needle
    # best first
    assert text.index("│      0 │") < text.index("│      1 │")


def test_log_progress_summarises(caplog):
    with caplog.at_level(logging.INFO, logger="hyperpop"):
        LogProgress(every=0)(population())
    assert "best val_acc=0.9 (member 0)" in caplog.text


def test_progress_counts_exploits_not_rejuvenations():
    from hyperpop.live import PlainProgress, RunState

    pop = population()
    pop.apply(Event(ev.REJUVENATED, 0, {"config": {"lr": 0.5, "opt": {"mom": 0.9}}, "at": 4,
                                        "reset": "full"}))  # fmt: skip
    assert len(pop.edges) == 2
    assert "1 exploits" in PlainProgress().line(pop, RunState())


# --- issue 19: rough edges a new user met -------------------------------------------------


def _finished(pop):
    for m in (0, 1):
        pop.apply(Event(ev.FINISHED, m, {"step": 4, "reason": "budget"}))
    pop.apply(Event(ev.RUN_FINISHED, None, {"reason": "every member finished"}))
    return pop


def test_the_final_progress_line_is_logged_once(caplog):
    """The driver hands the finished population over more than once (the loop's last pass and
    the end); with trackers slowing the loop both reached the log."""
    progress = LogProgress(every=10)
    pop = _finished(population())
    with caplog.at_level(logging.INFO, logger="hyperpop"):
        progress(pop)
        progress(pop)
    lines = [r.getMessage() for r in caplog.records if "members alive" in r.getMessage()]
    assert lines == ["0/2 members alive, steps 4-4, 8 reports, 1 exploits, best val_acc=0.9 "
                     "(member 0)"]  # fmt: skip


def test_at_80_columns_the_live_view_wraps_no_header_or_count_line():
    from hyperpop.live import RunState

    view = LiveView()
    view.console = Console(record=True, width=80)
    state = RunState(running=frozenset({0}), queued=frozenset({1}), elapsed=3725.0, max_steps=96000)
    pop = population()
    for m in (0, 1):  # a big run's numbers
        pop.members[m].step = 47000
    view.console.print(view._render(pop, state))
    lines = view.console.export_text().splitlines()
    assert all(len(x.rstrip()) <= 80 for x in lines)
    timing = next(x for x in lines if "elapsed" in x)
    assert "elapsed 1:02:05 · steps 94000/192000 (49%) · ETA -" in timing  # on one line
    assert any(x.startswith("members: 1 training, 1 queued") for x in lines)
    assert "hyperpop · 2 members · 8 reports · 1 exploits · 0 failures · best val_acc=0.9" in lines
    view.console = Console(record=True, width=50)  # narrower: the counts break between parts
    view.console.print(view._render(pop, state))
    lines = view.console.export_text().splitlines()
    assert "hyperpop · 2 members · 8 reports · 1 exploits" in lines
    assert "0 failures · best val_acc=0.9" in lines


def test_an_interrupted_run_shows_its_members_as_interrupted():
    view = LiveView()
    console = Console(record=True, width=160)
    console.print(view._render(population(), interrupted=True))
    text = console.export_text()
    assert "interrupted" in text and "running" not in text
