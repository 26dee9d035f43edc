"""FIRE-PBT whose parents are gone for good (issue 23): with no parent left to evaluate, the
evaluators must not wait with nothing to do for the rest of the run; they join the greedy
sub-population, decided from the log."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.store import events as ev
from hyperpop.strategies import FIREPBT
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
F = FIREPBT()  # per 8 ids: 0-2 greedy, 3-5 parents, 6-7 evaluators
PARENTS = (3, 4, 5)
#: the parents' training fails from this step on, every try
BREAKS_AT = 60


def _break(results: list) -> list:
    for r in results:
        if r.task.member in PARENTS and r.task.step >= BREAKS_AT:
            r.reports, r.checkpoint, r.error = [], None, "RuntimeError: the parent broke"
    return results


class ParentsBreak(SimulatedBackend):
    """Every parent (ids 3-5) fails every interval from step :data:`BREAKS_AT` on."""

    def poll(self, timeout):
        return _break(super().poll(timeout))


class ParentsBreakInterrupted(Interrupted):
    """The same, and stopped as by Ctrl-C once ``after`` reports came back."""

    def poll(self, timeout):
        return _break(super().poll(timeout))


def _run(backend: SimulatedBackend, **kw) -> hp.Result:
    rf = load_file(EXAMPLES / "deceptive.py")
    return hp.run(
        rf.trainable,
        rf.space,
        metric=rf.settings["metric"],
        mode=rf.settings["mode"],
        population=8,
        budget=hp.Steps(200),
        ready=20,
        seed=0,
        exploit=FIREPBT(),
        max_failures=2,
        deterministic=True,
        backend=backend,
        progress=False,
        **kw,
    )


def _after_the_failures(res: hp.Result) -> list[tuple[str, str]]:
    """(member's role, donor's role) of the strategy's copies after the last parent failed for
    good."""
    seq = max(e.seq for e in res.events if e.kind == ev.FAILED and e.data.get("fatal"))
    return [
        (F.role(e.member, 8), F.role(e.donor, 8))
        for e in res.population.edges
        if e.kind == "exploit" and e.by == "pbt" and e.seq > seq
    ]


def test_evaluators_with_no_parent_left_join_the_greedy_sub_population():
    """Every parent fails for good at step 60: from then on the evaluators run truncation with
    the greedy members (they copy greedy members or are copied as one), where before they
    waited with nothing to evaluate; the result is still a greedy member's."""
    res = _run(ParentsBreak(workers=2))
    pop = res.population
    assert all(
        (pop.members[p].status, pop.members[p].step) == ("failed", BREAKS_AT) for p in PARENTS
    )
    assert F.parents_gone(pop)
    pairs = _after_the_failures(res)
    assert ("evaluator", "parent") not in pairs  # nothing left to evaluate
    assert {("evaluator", "greedy"), ("greedy", "evaluator")} & set(pairs), pairs
    assert all("parent" not in pair for pair in pairs)
    assert all((pop.members[e].status, pop.members[e].step) == ("finished", 200) for e in (6, 7))
    assert F.role(res.best.id, 8) == "greedy"
    # with the parents alive, the evaluators evaluate all run (tests/test_firepbt.py)
    assert not F.parents_gone(_run(SimulatedBackend(workers=2)).population)


def test_interrupted_before_the_failures_and_resumed_decides_as_uninterrupted(tmp_path):
    """Interrupted before any parent failed for good, the resumed run lets the evaluators join
    the greedy members at the same point and takes every decision the uninterrupted run
    takes."""
    rf = load_file(EXAMPLES / "deceptive.py")
    whole = _run(ParentsBreak(workers=2), storage=tmp_path / "whole.db")
    cut = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        _run(ParentsBreakInterrupted(300), storage=cut)
    assert not any(e.data.get("fatal") for e in hp.load(cut).events if e.kind == ev.FAILED)
    resumed = hp.resume(cut, trainable=rf.trainable, backend=ParentsBreak(2), progress=False)

    def outcome(res: hp.Result) -> list[tuple]:
        return [(e.member, e.donor, e.step, e.at) for e in res.population.edges]

    assert outcome(resumed) == outcome(whole)
    assert _after_the_failures(resumed) == _after_the_failures(whole)
