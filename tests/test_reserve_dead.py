"""Reserve PBT whose reserve is gone for good (issue 23): with no reserve member left to
evaluate, the evaluator must not wait for the rest of the run, and the roles dissolve into
greedy PBT at once, decided from the log."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.store import events as ev
from hyperpop.strategies import ReservePBT
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
R = ReservePBT()  # per 8 ids: 0-5 greedy, 6 reserve, 7 evaluator
#: the reserve member's training fails from this step on, every try
BREAKS_AT = 60


def _break(results: list) -> list:
    for r in results:
        if r.task.member == 6 and r.task.step >= BREAKS_AT:
            r.reports, r.checkpoint, r.error = [], None, "RuntimeError: the reserve broke"
    return results


class ReserveBreaks(SimulatedBackend):
    """The reserve member (id 6) fails every interval from step :data:`BREAKS_AT` on."""

    def poll(self, timeout):
        return _break(super().poll(timeout))


class ReserveBreaksInterrupted(Interrupted):
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
        exploit=ReservePBT(),
        max_failures=2,
        deterministic=True,
        backend=backend,
        progress=False,
        **kw,
    )


def _after_the_failure(res: hp.Result) -> list[tuple[str, str]]:
    """(member's role, donor's role) of the strategy's copies after the reserve failed for
    good."""
    seq = next(e.seq for e in res.events if e.kind == ev.FAILED and e.data.get("fatal"))
    return [
        (R.role(e.member, 8), R.role(e.donor, 8))
        for e in res.population.edges
        if e.kind == "exploit" and e.by == "pbt" and e.seq > seq
    ]


def test_a_reserve_failed_for_good_dissolves_the_roles_into_greedy_pbt():
    """The only reserve member fails for good at step 60: from then on every member runs
    truncation over the whole population (the evaluator copies greedy members or is copied as
    one), where before the evaluator waited with nothing to evaluate and the roles held."""
    res = _run(ReserveBreaks(workers=2))
    reserve = res.population.members[6]
    assert (reserve.status, reserve.step) == ("failed", BREAKS_AT)
    pairs = _after_the_failure(res)
    assert ("evaluator", "parent") not in pairs  # nothing left to evaluate
    assert {("evaluator", "greedy"), ("greedy", "evaluator")} & set(pairs), pairs
    evaluator = res.population.members[7]
    assert evaluator.status == "finished" and evaluator.step == 200
    assert R.dissolved(res.population)
    # with the reserve alive, the roles hold all run (tests/test_reserve.py)
    assert not R.dissolved(_run(SimulatedBackend(workers=2)).population)


def test_interrupted_before_the_failure_and_resumed_decides_as_uninterrupted(tmp_path):
    """Interrupted before the reserve member failed for good, the resumed run dissolves the
    roles at the same point and takes every decision the uninterrupted run takes."""
    rf = load_file(EXAMPLES / "deceptive.py")
    whole = _run(ReserveBreaks(workers=2), storage=tmp_path / "whole.db")
    cut = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        _run(ReserveBreaksInterrupted(300), storage=cut)
    assert not any(e.data.get("fatal") for e in hp.load(cut).events if e.kind == ev.FAILED)
    resumed = hp.resume(cut, trainable=rf.trainable, backend=ReserveBreaks(2), progress=False)

    def outcome(res: hp.Result) -> list[tuple]:
        return [(e.member, e.donor, e.step, e.at) for e in res.population.edges]

    assert outcome(resumed) == outcome(whole)
    assert _after_the_failure(resumed) == _after_the_failure(whole)
