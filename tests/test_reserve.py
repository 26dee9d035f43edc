"""Reserve PBT (issue 23): greedy PBT beside a small FIRE-PBT reserve, whose roles dissolve into
greedy PBT once its evaluations keep coming to nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.population import Population
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.strategies import ReservePBT, make_exploit
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
R = ReservePBT()  # per 8 ids: 0-5 greedy, 6 reserve, 7 evaluator


def _run(task: str, steps: int, ready: int, **kw):
    rf = load_file(EXAMPLES / f"{task}.py")
    settings = dict(
        metric=rf.settings["metric"],
        mode=rf.settings["mode"],
        population=8,
        budget=hp.Steps(steps),
        ready=ready,
        seed=0,
        exploit=ReservePBT(),
        backend=SimulatedBackend(workers=2),
        progress=False,
    )
    settings.update(kw)
    return hp.run(rf.trainable, rf.space, **settings)


def _copies(res) -> list:
    return [e for e in res.population.edges if e.kind == "exploit" and e.by == "pbt"]


def test_roles_labels_and_settings():
    assert [R.group_label(i, 8) for i in range(10)] == ["greedy"] * 6 + [
        "reserve",
        "evaluator",
        "greedy",
        "greedy",
    ]
    assert {R.group_label(i, 7) for i in range(7)} == {"greedy"}  # less than a cycle
    assert isinstance(make_exploit("reserve"), ReservePBT)
    d = R.describe()
    assert d["name"] == "reserve"
    assert ReservePBT(**{k: v for k, v in d.items() if k != "name"}).describe() == d


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reserve": 0}, "reserve must be a positive int"),
        ({"patience": -1}, "patience must be an int >= 0"),
        ({"greedy": 1}, "at least 2 greedy"),
        ({"p_value": 1.5}, "p_value must be in (0, 1)"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ReservePBT(**kwargs)


def _population(edges: list[tuple[int, int]]) -> Population:
    """A population of 8 whose family tree holds these copies (member, donor), in order."""
    pop = Population()
    settings = {"mode": "max", "population": 8, "exploit": R.describe()}
    seq = 0

    def feed(e: Event) -> None:
        nonlocal seq
        seq += 1
        e.seq, e.time = seq, float(seq)
        pop.apply(e)

    feed(Event(ev.RUN_STARTED, None, {"settings": settings}))
    for i in range(8):
        feed(Event(ev.MEMBER_CREATED, i, {"config": {"h": 0.1 * (i + 1)}}))
    for step, (member, donor) in enumerate(edges, start=1):
        for i in range(8):
            feed(Event(ev.REPORTED, i, {"step": step, "score": float(i), "metrics": {}}))
            feed(Event(ev.CHECKPOINTED, i, {"step": step, "checkpoint": f"b{i}-{step}"}))
        feed(
            Event(
                ev.EXPLOITED,
                member,
                {"donor": donor, "checkpoint": f"b{donor}-{step}", "step": step, "at": step},
            )
        )
    return pop


def test_roles_dissolve_after_patience_evaluations_in_a_row_without_success():
    start, taken = (7, 6), (0, 7)  # the evaluator copies the reserve; a greedy member copies it
    three = ReservePBT(patience=3)
    # the 4th start ends the 3rd evaluation that came to nothing
    assert not three.dissolved(_population([start] * 3))
    assert three.dissolved(_population([start] * 4))
    # a success in between starts the count again
    assert not three.dissolved(_population([start, start, taken, start, start, start]))
    assert three.dissolved(_population([start, start, taken, start, start, start, start]))
    assert not ReservePBT(patience=0).dissolved(_population([start] * 10))


def test_on_the_deceptive_task_evaluations_hand_reserve_weights_to_greedy_members():
    """Where the leader's weights carry a debt (deceptive: a low h now, a penalty later), the
    evaluator's copies of the reserve beat their children and greedy members take them; the
    roles hold for the whole run."""
    res = _run("deceptive", 200, 20)
    pairs = [(R.role(e.member, 8), R.role(e.donor, 8)) for e in _copies(res)]
    assert ("evaluator", "parent") in pairs
    assert ("greedy", "evaluator") in pairs  # a successful evaluation
    assert {p for p in pairs if p[0] == "greedy"} <= {("greedy", "greedy"), ("greedy", "evaluator")}
    assert not any(m == "parent" for m, _ in pairs)  # a single reserve member never copies
    assert not ReservePBT().dissolved(res.population)


def test_on_the_noisy_task_the_roles_dissolve_into_greedy_pbt():
    """On pbt_function the leader's weights are simply better: evaluations come to nothing, the
    roles dissolve, and the reserve member and the evaluator then copy like greedy members."""
    res = _run("pbt_function", 150, 5)
    assert ReservePBT().dissolved(res.population)
    copies = _copies(res)
    starts = [
        e for e in copies if (R.role(e.member, 8), R.role(e.donor, 8)) == ("evaluator", "parent")
    ]
    assert len(starts) > R.patience  # evaluations ran, and came to nothing
    assert any(R.role(e.member, 8) == "parent" for e in copies)  # the reserve copies now
    assert any(
        R.role(e.donor, 8) == "greedy" and R.role(e.member, 8) == "evaluator" for e in copies
    )


def test_the_result_may_come_from_any_member():
    res = _run("deceptive", 200, 20)
    pop = res.population
    assert all(pop.in_result(i) for i in range(8))
    best = max(pop.members.values(), key=lambda m: m.ready_score)
    assert res.best.score == pytest.approx(best.ready_score)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """Synchronous: the resumed run decides as the uninterrupted one (evaluations and the
    moment the roles dissolve are read off the log)."""
    rf = load_file(EXAMPLES / "pbt_function.py")
    whole, cut = tmp_path / "whole.db", tmp_path / "cut.db"
    _run("pbt_function", 150, 5, synchronous=True, storage=whole)
    with pytest.raises(KeyboardInterrupt):
        _run("pbt_function", 150, 5, synchronous=True, storage=cut, backend=Interrupted(450))
    hp.resume(cut, trainable=rf.trainable, progress=False)

    def outcome(path):
        res = hp.load(path)
        return [(e.member, e.donor, e.step, e.at) for e in res.population.edges]

    assert outcome(cut) == outcome(whole)
    assert ReservePBT().dissolved(hp.load(whole).population)
