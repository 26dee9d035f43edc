"""Multiple-frequencies PBT (issue 23): sub-populations judged at different frequencies, with the
asymmetric migration of Doulazmi et al. 2025, on the controller's seams."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from sim_backends import Interrupted

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.controller import Controller, Ready, Steps
from hyperpop.population import Population
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.strategies import MFPBT, Perturb, make_exploit
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPACE = Space({"lr": hp.uniform(0.0, 1.0)})


class Pop:
    """A population of ``n`` fed events as the driver would; member i has lr 0.1 * (i + 1)."""

    def __init__(self, n: int):
        self.pop = Population()
        self.seq = 0
        settings = {"mode": "max", "metric": "s", "population": n}
        self.feed(Event(ev.RUN_STARTED, None, {"settings": settings}))
        for i in range(n):
            self.feed(Event(ev.MEMBER_CREATED, i, {"config": {"lr": round(0.1 * (i + 1), 2)}}))

    def feed(self, e: Event) -> None:
        self.seq += 1
        e.seq, e.time = self.seq, 1000.0 + self.seq
        self.pop.apply(e)

    def interval(self, member: int, score: float) -> None:
        m = self.pop.members[member]
        self.feed(Event(ev.REPORTED, member, {"step": m.step + 1, "score": score, "metrics": {}}))
        self.feed(
            Event(ev.CHECKPOINTED, member, {"step": m.step, "checkpoint": f"b{member}-{m.step}"})
        )


def decide(c: Controller, pop: Population, member: int):
    (queued,) = c.on_ready(pop, member, now=0)
    assert queued.kind == "queue"
    (d,) = c.decide(pop, member, now=0)
    return d


def controller(strategy: MFPBT) -> Controller:
    return Controller(
        SPACE,
        mode="max",
        ready=Ready(steps=1),
        budget=[Steps(100)],
        exploit=strategy,
        explore=Perturb(resample_probability=0.0),
        seed=0,
    )


def test_membership_is_a_function_of_the_id_and_the_settings():
    s = MFPBT((1, 2, 4, 8))
    assert s.used(16) == (1, 2, 4, 8) and s.used(8) == (1, 8) and s.used(12) == (1, 4, 8)
    assert s.used(3) == (1,)  # too few for two sub-populations of four: plain PBT
    assert [s.group(i, 8) for i in range(5)] == [0, 1, 0, 1, 0]
    assert s.frequency(9, 8) == 8  # a member added later joins by its id
    assert type(make_exploit("mfpbt")) is MFPBT
    assert MFPBT(**{k: v for k, v in s.describe().items() if k != "name"}).describe() == (
        s.describe()
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frequencies": ()}, "positive ints"),
        ({"frequencies": (1, 0)}, "positive ints"),
        ({"frequencies": (1.0, 4)}, "positive ints"),
        ({"quantile": 0.5}, "quantile"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MFPBT(**kwargs)


def test_internal_copy_migration_and_the_asymmetric_hyperparameters():
    """Population 8, frequencies (1, 4): even ids evolve every ready point, odd ids every 4th.
    Member i scores i."""
    p = Pop(8)
    for i in range(8):
        p.interval(i, float(i))
    c = controller(MFPBT((1, 4)))
    # fast sub-population {0, 2, 4, 6}: 0 is its bottom, it copies 6 and explores
    d = decide(c, p.pop, 0)
    assert (d.kind, d.donor, d.how) == ("exploit", 6, "perturb")
    assert d.config["lr"] in (pytest.approx(0.56), pytest.approx(0.84))
    # 2 is in the migration bracket: the best member of the other sub-population (7) is
    # better, so 2 takes its weights and, 7's sub-population having the longer horizon, its
    # hyperparameters too, unexplored
    d = decide(c, p.pop, 2)
    assert (d.kind, d.donor, d.config, d.how) == ("exploit", 7, {"lr": 0.8}, "mfpbt")
    assert decide(c, p.pop, 4).kind == "continue"  # above the bracket
    # the slow sub-population {1, 3, 5, 7} is not due at its first ready point
    assert [decide(c, p.pop, i).kind for i in (1, 3)] == ["continue", "continue"]
    for _ in range(3):
        for i in (1, 3, 5, 7):
            p.interval(i, float(i))
    # its 4th ready point: 1 copies inside it; 3 (bracket) takes the best external weights
    # (6) but keeps the hyperparameters of its own sub-population's best (7)
    d = decide(c, p.pop, 1)
    assert (d.kind, d.donor) == ("exploit", 7)
    d = decide(c, p.pop, 3)
    assert (d.kind, d.donor, d.config, d.how) == ("exploit", 6, {"lr": 0.8}, "mfpbt")


def test_equal_frequencies_keep_their_own_hyperparameters_when_migrating():
    p = Pop(8)
    for i in range(8):
        p.interval(i, float(i))
    d = decide(controller(MFPBT((1, 1))), p.pop, 2)
    assert (d.kind, d.donor, d.config) == ("exploit", 7, {"lr": 0.3})


def _run(synchronous: bool, **kw):
    rf = load_file(EXAMPLES / "deceptive.py")
    settings = dict(
        metric="Q",
        mode="max",
        population=8,
        budget=hp.Steps(80),
        ready=5,
        seed=3,
        exploit=MFPBT((1, 4)),
        synchronous=synchronous,
        progress=False,
    )
    settings.update(kw)
    if "backend" not in settings:
        settings["backend"] = SimulatedBackend(workers=2)
    return hp.run(rf.trainable, rf.space, **settings)


@pytest.mark.parametrize("synchronous", [False, True])
def test_runs_judge_the_slow_sub_population_at_every_fourth_ready_point(synchronous):
    res = _run(synchronous)
    edges = [e for e in res.population.edges if e.kind == "exploit"]
    members = res.population.members
    slow = [i for i in members if i % 2 == 1]
    assert any(e.member in slow for e in edges)  # the slow sub-population copies, too
    for i in slow:  # but at most once every 4 of its ready points
        assert sum(e.member == i for e in edges) <= members[i].ready_count // 4
    fast = sum(e.member % 2 == 0 for e in edges)
    assert fast > sum(e.member % 2 == 1 for e in edges)
    assert any(e.member % 2 != e.donor % 2 for e in edges)  # migrations happened
    assert res.population.settings["exploit"] == {
        "name": "mfpbt",
        "frequencies": [1, 4],
        "quantile": 0.25,
    }


def test_deterministic_asynchronous_runs_repeat():
    a = _run(False, deterministic=True)
    b = _run(False, deterministic=True)
    assert [(e.member, e.donor, e.step) for e in a.population.edges] == [
        (e.member, e.donor, e.step) for e in b.population.edges
    ]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """Synchronous, as the resume-determinism tests of the other strategies: every decision of
    the resumed run is the one the uninterrupted run made (membership and due ready points
    are functions of the ids, the settings and the fold)."""
    rf = load_file(EXAMPLES / "deceptive.py")
    whole, db = tmp_path / "whole.db", tmp_path / "cut.db"
    _run(True, storage=whole)
    with pytest.raises(KeyboardInterrupt):
        _run(True, storage=db, backend=Interrupted(333), exploit=copy.deepcopy(MFPBT((1, 4))))
    hp.resume(db, trainable=rf.trainable, progress=False)

    def outcome(path):
        res = hp.load(path)
        reports = sorted(
            (e.member, e.data["step"], e.data["score"]) for e in res.events if e.kind == "reported"
        )
        return reports, [(e.member, e.donor, e.step, e.at) for e in res.population.edges]

    assert outcome(db) == outcome(whole)
