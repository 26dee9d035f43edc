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
