"""FIRE-PBT (issue 23): a greedy sub-population, parents judged by how fast their offspring
improve, and evaluators, on the controller's seams (Dalibard & Jaderberg 2021)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from sim_backends import Interrupted, SteersSimulated

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.controller import Controller, Ready, Steps
from hyperpop.population import Population
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.requests import Request
from hyperpop.strategies import FIREPBT, Perturb, make_exploit
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SPACE = Space({"lr": hp.uniform(0.0, 1.0)})
FIRE = FIREPBT()  # per 8 ids: 0-2 greedy, 3-5 parents, 6-7 evaluators


class Pop:
    """A population of 8 fed events as the driver would; member i has lr 0.1 * (i + 1)."""

    def __init__(self, synchronous: bool = False):
        self.pop = Population()
        self.pop_events: list[Event] = []
        self.seq = 0
        settings = {
            "mode": "max",
            "metric": "s",
            "population": 8,
            "exploit": FIRE.describe(),
            "synchronous": synchronous,
            "budget": [{"type": "steps", "n": 100}],
        }
        self.feed(Event(ev.RUN_STARTED, None, {"settings": settings}))
        for i in range(8):
            self.feed(Event(ev.MEMBER_CREATED, i, {"config": {"lr": round(0.1 * (i + 1), 2)}}))

    def feed(self, e: Event) -> None:
        self.seq += 1
        e.seq, e.time = self.seq, 1000.0 + self.seq
        self.pop.apply(e)
        self.pop_events.append(e)

    def train(self, member: int, scores: list[float]) -> None:
        """One interval: a report per step, then a checkpoint."""
        m = self.pop.members[member]
        for s in scores:
            self.feed(Event(ev.REPORTED, member, {"step": m.step + 1, "score": s, "metrics": {}}))
        self.feed(
            Event(ev.CHECKPOINTED, member, {"step": m.step, "checkpoint": f"b{member}-{m.step}"})
        )

    def apply(self, d) -> None:
        """Record a decision as the driver does."""
        from hyperpop.controller import decision_events

        for e in decision_events([d], self.pop, now=0.0):
            self.feed(e)


def controller() -> Controller:
    return Controller(
        SPACE,
        mode="max",
        ready=Ready(steps=10),
        budget=[Steps(100)],
        exploit=copy.deepcopy(FIRE),
        explore=Perturb(resample_probability=0.0),
        seed=0,
    )


def decide(c: Controller, pop: Population, member: int):
    (queued,) = c.on_ready(pop, member, now=0)
    assert queued.kind == "queue"
    (d,) = c.decide(pop, member, now=0)
    return d


def ramp(start: float, slope: float, n: int = 10) -> list[float]:
    return [round(start + slope * (k + 1), 6) for k in range(n)]


def test_roles_are_a_function_of_the_id_and_the_settings():
    assert [FIRE.role(i, 8) for i in range(10)] == (
        ["greedy"] * 3 + ["parent"] * 3 + ["evaluator"] * 2 + ["greedy"] * 2
    )  # a member added later (8, 9) joins by its id
    assert {FIRE.role(i, 7) for i in range(7)} == {"greedy"}  # less than a cycle: plain PBT
    assert type(make_exploit("firepbt")) is FIREPBT and hp.FIREPBT is FIREPBT
    again = FIREPBT(**{k: v for k, v in FIRE.describe().items() if k != "name"})
    assert again.describe() == FIRE.describe()
    settings = {"population": 8, "exploit": FIRE.describe()}
    assert [FIREPBT.in_result(settings, i) for i in (0, 2, 3, 6, 8)] == [
        True,
        True,
        False,
        False,
        True,
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"greedy": 1}, "at least 2 greedy"),
        ({"parents": 0}, "positive int"),
        ({"evaluators": 1.5}, "positive int"),
        ({"quantile": 0.6}, "quantile"),
        ({"p_value": 1.0}, "p_value"),
        ({"max_eval": True}, "positive int"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FIREPBT(**kwargs)


def _first_interval(p: Pop) -> None:
    """Everyone trains 10 steps; member i ends at 0.1 * i (greedy member 2 leads its
    sub-population, parent 5 the parents)."""
    for i in range(8):
        p.train(i, ramp(0.0, 0.01 * i))


def test_evaluators_copy_parents_with_the_best_greedy_members_hyperparameters():
    p = Pop()
    _first_interval(p)
    c = controller()
    # evaluators 6 and 7 start evaluations on two different parents (none has been
    # evaluated: the lowest ids first), training with greedy member 2's lr, unexplored
    d6, d7 = decide(c, p.pop, 6), decide(c, p.pop, 7)
    assert (d6.kind, d6.donor, d6.config, d6.how) == ("exploit", 3, {"lr": 0.3}, "firepbt")
    assert (d7.kind, d7.donor, d7.config, d7.how) == ("exploit", 4, {"lr": 0.3}, "firepbt")
    # greedy member 0 is the bottom of its sub-population: it copies its top (2) and explores
    d0 = decide(c, p.pop, 0)
    assert (d0.kind, d0.donor, d0.how) == ("exploit", 2, "perturb")
    # a parent with no evaluation has no fitness yet: it carries on
    assert decide(c, p.pop, 3).kind == "continue"


def test_a_successful_evaluation_hands_its_weights_to_the_child():
    p = Pop()
    _first_interval(p)
    c = controller()
    d6 = decide(c, p.pop, 6)
    p.apply(d6)  # 6 holds parent 3's weights at step 10 and trains with 2's lr
    p.train(2, ramp(0.2, 0.01))  # the child goes on slowly: 0.21 .. 0.30
    p.train(6, ramp(0.9, 0.05))  # the evaluator is above the child all along and climbs
    fire = c.exploit
    assert isinstance(fire, FIREPBT)
    (evaluation,) = [x for x in fire._evaluations(p.pop, 8)]
    assert (evaluation.parent, evaluation.child, evaluation.ready) == (3, 2, 1)
    assert fire.verdict(evaluation, p.pop) == "success"
    d2 = decide(c, p.pop, 2)
    # the child copies the evaluator and keeps its own hyperparameters: no explored event
    assert (d2.kind, d2.donor, d2.config, d2.how) == ("exploit", 6, {"lr": 0.3}, "firepbt")
    p.apply(d2)
    assert [e.kind for e in p.pop.edges[-1:]] == ["exploit"] and p.pop.members[2].config == {
        "lr": 0.3
    }
    # the evaluation is done; at its next ready point the evaluator starts another
    (evaluation,) = fire._evaluations(p.pop, 8)
    assert fire.verdict(evaluation, p.pop) == "done"
    p.train(6, ramp(1.4, 0.01))
    d6 = decide(c, p.pop, 6)
    assert d6.kind == "exploit" and d6.donor in (4, 5)


def test_the_best_model_comes_from_the_greedy_sub_population():
    """An evaluator or a parent that scores higher is never the run's best (the paper's
    result is the greedy sub-population's); its checkpoint is not kept for it."""
    p = Pop()
    _first_interval(p)  # evaluator 7 scores 0.7, parent 5 0.5, greedy 2 0.2
    pop = p.pop
    assert pop.best().id == 2 and pop.best_score == pytest.approx(0.2)
    assert pop.blobs[pop.best_checkpoint].member == 2
    res = hp.Result(p.pop_events)
    assert res.best.id == 2 and res.summary()["best_member"] == 2


def test_parents_are_ranked_by_how_fast_their_offspring_improve():
    """Two evaluations from the same level: 6 (parent 3's weights) climbs three times as fast
    as 7 (parent 4's). Parent 4 is the bottom of the evaluated parents and copies parent 3,
    although parent 4's own score is higher."""
    p = Pop()
    _first_interval(p)
    c = controller()
    for e in (6, 7):
        p.apply(decide(c, p.pop, e))
    p.train(6, ramp(0.05, 0.03))
    p.train(7, ramp(0.05, 0.01))
    for parent in (3, 4, 5):
        p.train(parent, ramp(0.1 * parent, 0.0))
    fire = c.exploit
    assert isinstance(fire, FIREPBT)
    fit = fire.fitness(p.pop)
    assert set(fit) == {3, 4} and fit[3] > 0 > fit[4]
    assert decide(c, p.pop, 3).kind == "continue"
    assert decide(c, p.pop, 5).kind == "continue"  # not evaluated: no fitness
    d4 = decide(c, p.pop, 4)
    assert (d4.kind, d4.donor, d4.how) == ("exploit", 3, "perturb")
    p.apply(d4)
    # the evaluation of parent 4 is lost with its weights; the evaluator moves on
    lost = [x for x in fire._evaluations(p.pop, 8) if x.parent == 4]
    assert lost and lost[0].lost and fire.verdict(lost[0], p.pop) == "stopped"


def _run(synchronous: bool, **kw):
    rf = load_file(EXAMPLES / "deceptive.py")
    settings = dict(
        metric="Q",
        mode="max",
        population=8,
        budget=hp.Steps(200),
        ready=20,
        seed=0,
        exploit=FIREPBT(),
        synchronous=synchronous,
        progress=False,
    )
    settings.update(kw)
    if "backend" not in settings:
        settings["backend"] = SimulatedBackend(workers=2)
    return hp.run(rf.trainable, rf.space, **settings)


def _check_roles(res) -> list:
    """Every copy keeps to the roles; returns the exploit edges made by the strategy."""
    edges = [e for e in res.population.edges if e.kind == "exploit" and e.by == "pbt"]
    for e in edges:
        mine, theirs = FIRE.role(e.member, 8), FIRE.role(e.donor, 8)
        allowed = {"greedy": {"greedy", "evaluator"}, "parent": {"parent"}}
        assert theirs in allowed.get(mine, {"parent"}), (e.member, e.donor)
    return edges


@pytest.mark.parametrize("synchronous", [False, True])
def test_runs_keep_the_roles_and_the_result_comes_from_the_greedy_members(synchronous):
    res = _run(synchronous)
    edges = _check_roles(res)
    pairs = {(FIRE.role(e.member, 8), FIRE.role(e.donor, 8)) for e in edges}
    assert {("evaluator", "parent"), ("parent", "parent"), ("greedy", "greedy")} <= pairs
    assert ("greedy", "evaluator") in pairs  # at least one evaluation succeeded
    assert FIRE.role(res.best.id, 8) == "greedy"
    pop = res.population
    assert pop.blobs[pop.best_checkpoint].member in (0, 1, 2)
    assert res.settings["exploit"]["name"] == "firepbt"


def test_deterministic_asynchronous_runs_repeat():
    a = _run(False, deterministic=True, budget=hp.Steps(120))
    b = _run(False, deterministic=True, budget=hp.Steps(120))
    assert [(e.member, e.donor, e.step) for e in a.population.edges] == [
        (e.member, e.donor, e.step) for e in b.population.edges
    ]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """Synchronous: every decision of the resumed run is the uninterrupted run's (roles,
    evaluations and fitness are read off the log)."""
    rf = load_file(EXAMPLES / "deceptive.py")
    whole, db = tmp_path / "whole.db", tmp_path / "cut.db"
    _run(True, storage=whole, budget=hp.Steps(120))
    with pytest.raises(KeyboardInterrupt):
        _run(True, storage=db, budget=hp.Steps(120), backend=Interrupted(555))
    hp.resume(db, trainable=rf.trainable, progress=False)

    def outcome(path):
        res = hp.load(path)
        reports = sorted(
            (e.member, e.data["step"], e.data["score"]) for e in res.events if e.kind == "reported"
        )
        return reports, [(e.member, e.donor, e.step, e.at) for e in res.population.edges]

    assert outcome(db) == outcome(whole)


def test_rejuvenation_goes_on_beside_the_evaluations():
    """On the noisy pbt_function task members stall: greedy members, parents and evaluators
    are reset; a reset evaluator's evaluation ends, and it starts a new one on a parent."""
    rf = load_file(EXAMPLES / "pbt_function.py")
    res = hp.run(
        rf.trainable,
        rf.space,
        metric="accuracy",
        mode="max",
        population=8,
        budget=hp.Steps(150),
        ready=5,
        seed=0,
        exploit=FIREPBT(),
        rejuvenate=hp.Rejuvenate(patience=2, config="resample"),
        backend=SimulatedBackend(workers=2),
        progress=False,
    )
    edges = res.population.edges
    reset = [e for e in edges if e.kind == "rejuvenate"]
    assert {FIRE.role(e.member, 8) for e in reset} == {"greedy", "parent", "evaluator"}
    _check_roles(res)
    after = []  # what each reset evaluator did next (nothing, for a reset near the end)
    for e in reset:
        if FIRE.role(e.member, 8) == "evaluator":
            after += [x for x in edges if x.member == e.member and x.seq > e.seq][:1]
    assert after and all(
        x.kind == "exploit" and FIRE.role(x.donor, 8) == "parent" for x in after
    ), after
    assert FIRE.role(res.best.id, 8) == "greedy"


def test_steering_pin_set_copy_and_add(tmp_path):
    """A pinned evaluator stops evaluating; a greedy member whose hyperparameters a person
    sets leaves the evaluation it was the child of; a person's copy is not an evaluation;
    added members take the roles of their ids."""
    db = tmp_path / "run.db"
    asks = [
        Request("pin", 7, {"pinned": True}),
        Request("set_config", 2, {"config": {"h": 0.5}}),
        Request("copy", 6, {"donor": 0}),
        Request("add", None, {"count": 2}),
    ]
    res = _run(False, storage=db, backend=SteersSimulated(db, 600, asks))
    answers = {e.data["id"]: e.data for e in res.events if e.kind == ev.REQUEST_HANDLED}
    assert [answers[i]["status"] for i in sorted(answers)] == ["done"] * 4, answers
    pop = res.population
    assert sorted(pop.members) == list(range(10))
    pinned_at = next(e.seq for e in res.events if e.kind == ev.PINNED)
    assert not [e for e in pop.edges if e.member == 7 and e.seq > pinned_at]
    edges = _check_roles(res)
    assert any(e.member in (8, 9) for e in edges)  # the added greedy members take part
    # after the person's copy, evaluator 6 starts a new evaluation of a parent
    copied = next(e for e in pop.edges if e.member == 6 and e.by == "user")
    later = [e for e in pop.edges if e.member == 6 and e.seq > copied.seq]
    assert later and FIRE.role(later[0].donor, 8) == "parent"
    assert FIRE.role(res.best.id, 8) == "greedy"
