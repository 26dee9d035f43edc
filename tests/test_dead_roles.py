"""FIRE-PBT and reserve PBT whose evaluated members are gone for good (issue 23): with nothing
left to evaluate, the evaluators must not wait for the rest of the run. FIRE-PBT's evaluators
join the greedy members' selection once every parent is gone; reserve PBT's roles dissolve into
greedy PBT once its reserve is gone. Both are decided from the log, so a resume decides the
same."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.population import Population
from hyperpop.store import events as ev
from hyperpop.strategies import FIREPBT, ReservePBT
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: the evaluated members' training fails from this step on, every try
BREAKS_AT = 60


@dataclass(frozen=True)
class Case:
    """A strategy, the members it evaluates (all broken at :data:`BREAKS_AT`), its evaluators,
    whether its result comes from the greedy members only, and whether it has stopped
    evaluating."""

    name: str
    strategy: Any
    broken: tuple[int, ...]
    evaluators: tuple[int, ...]
    greedy_result: bool

    def gone(self, pop: Population) -> bool:
        s = self.strategy
        return bool(s.dissolved(pop) if isinstance(s, ReservePBT) else s.parents_gone(pop))


CASES = [
    # per 8 ids: 0-2 greedy, 3-5 parents, 6-7 evaluators
    Case("firepbt", FIREPBT(), broken=(3, 4, 5), evaluators=(6, 7), greedy_result=True),
    # per 8 ids: 0-5 greedy, 6 reserve, 7 evaluator
    Case("reserve", ReservePBT(), broken=(6,), evaluators=(7,), greedy_result=False),
]


def _break(results: list, broken: tuple[int, ...]) -> list:
    for r in results:
        if r.task.member in broken and r.task.step >= BREAKS_AT:
            r.reports, r.checkpoint, r.error = [], None, "RuntimeError: the member broke"
    return results


class Breaks(SimulatedBackend):
    """The members ``broken`` fail every interval from step :data:`BREAKS_AT` on."""

    def __init__(self, broken: tuple[int, ...], workers: int = 2):
        super().__init__(workers=workers)
        self.broken = broken

    def poll(self, timeout):
        return _break(super().poll(timeout), self.broken)


class BreaksInterrupted(Interrupted):
    """The same, and stopped as by Ctrl-C once ``after`` reports came back."""

    def __init__(self, broken: tuple[int, ...], after: int):
        super().__init__(after)
        self.broken = broken

    def poll(self, timeout):
        return _break(super().poll(timeout), self.broken)


def _run(case: Case, backend: SimulatedBackend, **kw) -> hp.Result:
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
        exploit=case.strategy,
        max_failures=2,
        deterministic=True,
        backend=backend,
        progress=False,
        **kw,
    )


def _after_the_failures(case: Case, res: hp.Result) -> list[tuple[str, str]]:
    """(member's role, donor's role) of the strategy's copies after the last evaluated member
    failed for good."""
    seq = max(e.seq for e in res.events if e.kind == ev.FAILED and e.data.get("fatal"))
    role = case.strategy.role
    return [
        (role(e.member, 8), role(e.donor, 8))
        for e in res.population.edges
        if e.kind == "exploit" and e.by == "pbt" and e.seq > seq
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_evaluators_with_nothing_left_to_evaluate_join_greedy_pbt(case: Case):
    """Every evaluated member fails for good at step 60: from then on the evaluators run
    truncation with the greedy members (they copy greedy members or are copied as one), where
    before they waited with nothing to evaluate; FIRE-PBT's result is still a greedy
    member's."""
    res = _run(case, Breaks(case.broken))
    pop = res.population
    assert all(
        (pop.members[p].status, pop.members[p].step) == ("failed", BREAKS_AT) for p in case.broken
    )
    assert case.gone(pop)
    pairs = _after_the_failures(case, res)
    assert ("evaluator", "parent") not in pairs  # nothing left to evaluate
    assert {("evaluator", "greedy"), ("greedy", "evaluator")} & set(pairs), pairs
    assert all("parent" not in pair for pair in pairs)
    assert all(
        (pop.members[e].status, pop.members[e].step) == ("finished", 200) for e in case.evaluators
    )
    if case.greedy_result:
        assert case.strategy.role(res.best.id, 8) == "greedy"
    # with the evaluated members alive, the roles hold all run (tests/test_firepbt.py,
    # tests/test_reserve.py)
    assert not case.gone(_run(case, SimulatedBackend(workers=2)).population)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_interrupted_before_the_failures_and_resumed_decides_as_uninterrupted(case: Case, tmp_path):
    """Interrupted before any evaluated member failed for good, the resumed run stops
    evaluating at the same point and takes every decision the uninterrupted run takes."""
    rf = load_file(EXAMPLES / "deceptive.py")
    whole = _run(case, Breaks(case.broken), storage=tmp_path / "whole.db")
    cut = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        _run(case, BreaksInterrupted(case.broken, 300), storage=cut)
    assert not any(e.data.get("fatal") for e in hp.load(cut).events if e.kind == ev.FAILED)
    resumed = hp.resume(cut, trainable=rf.trainable, backend=Breaks(case.broken), progress=False)

    def outcome(res: hp.Result) -> list[tuple]:
        return [(e.member, e.donor, e.step, e.at) for e in res.population.edges]

    assert outcome(resumed) == outcome(whole)
    assert _after_the_failures(case, resumed) == _after_the_failures(case, whole)
