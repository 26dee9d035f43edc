"""Asynchronous PBT with more members than workers (issue 9): selection at equal progress,
the furthest-behind member first, smoothed scores.

Most tests run the real driver and controller on the simulated backend (in-process, simulated
clock: deterministic, milliseconds); one runs real worker processes.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
from core_trainables import Grow

import hyperpop as hp
from hyperpop.driver import RunQueue
from hyperpop.population import Population
from hyperpop.store import events as ev
from hyperpop.store.events import Event

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: issue 9's population: member 0 has a 100x worse learning rate
CONFIGS = [{"lr": 0.001}] + [{"lr": 0.01 * (i + 1)} for i in range(7)]
SPACE = {"lr": hp.loguniform(1e-4, 1.0)}


def grow_run(*, synchronous: bool, seed: int, backend: str = "simulated", **kw) -> hp.Result:
    return hp.run(
        Grow,
        SPACE,
        metric="score",
        population=8,
        workers=2,
        budget=hp.Steps(40),
        ready=4,
        configs=CONFIGS,
        synchronous=synchronous,
        seed=seed,
        backend=backend,
        **kw,
    )


def exploits(res: hp.Result, member: int | None = None) -> list[dict]:
    return [
        e.to_dict()
        for e in res.population.edges
        if e.kind == "exploit" and (member is None or e.member == member)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_the_worst_member_copies_at_its_first_ready_point(seed):
    res = grow_run(synchronous=False, seed=seed)
    first = exploits(res, 0)[0]
    assert first["at"] == 4  # its first ready point, not a later one
    # every member takes part in selection, not only the last of each round
    assert {e["member"] for e in exploits(res)} == set(range(8))


def test_asynchronous_truncation_copies_as_often_as_its_quantile_says():
    """Issue 23: a member that copied was ranked with its donor's score at the step it copied,
    so members deciding later at that step ranked below duplicates of the top and copied too:
    asynchronous runs copied about twice as often as synchronous ones (33-42 exploits here
    against 18). Ranked by their own scores, both copy the bottom quarter."""
    ratios = []
    for seed in range(10):
        a, s = grow_run(synchronous=False, seed=seed), grow_run(synchronous=True, seed=seed)
        n_async, n_sync = len(exploits(a)), len(exploits(s))
        assert n_sync == 18 and 16 <= n_async <= 21, (seed, n_async, n_sync)
        ratios.append(a.best.score / s.best.score)
    # Grow rewards greed alone (the highest rate always wins), so the asynchronous run, whose
    # ranking is a little staler (members still training are compared at their last ready
    # point), trails the synchronous one at equal copying: median 0.92 over 40 seeds (1.28
    # with the double copying). Per seed the ratio swings both ways: judge the median.
    assert statistics.median(ratios) >= 0.85, ratios


def test_no_livelock_when_every_score_falls_after_a_peak():
    """Overfitting everywhere: every member gets worse after step 12, so a member at a later
    step always looks worse than one behind it. Members may go back to a better checkpoint at
    equal progress, but only a bounded number of times: the run ends."""
    res = hp.run(
        Peak,
        SPACE,
        metric="score",
        population=8,
        workers=3,
        budget=hp.Steps(40),
        ready=4,
        seed=1,
        backend="simulated",
    )
    assert res.population.finished
    trained = sum(len(m.history) for m in res.population.members.values())
    assert trained <= 3 * 8 * 40
    assert all(m.step == 40 for m in res.population.members.values())


def test_the_furthest_behind_member_trains_next_and_affinity_only_breaks_ties():
    steps = {0: 8, 1: 4, 2: 4, 3: 0}
    q = RunQueue(steps.__getitem__)
    for member in (0, 1, 2, 3):
        q.append(member)
    held = {2: 7}  # worker 7 holds member 2's state
    assert q.pick(7, held.get) == 3  # furthest behind, although worker 7 holds member 2
    assert q.pick(7, held.get) == 2  # tie at step 4: the member the worker holds
    assert q.pick(7, held.get) == 1
    q.append(3)  # queued again later, still behind member 0
    steps[3] = 4
    q.append(3)  # re-queued at a new step: the earlier entry is replaced
    assert len(q) == 2 and list(q) == [3, 0]
    assert q.pick(None, held.get) == 3 and q.pick(None, held.get) == 0
    assert not q


def feed(pop: Population, *events: Event) -> None:
    for e in events:
        e.seq = pop.last_seq + 1
        pop.apply(e)


def test_ranking_score_is_the_mean_of_the_lineages_last_reports():
    pop = Population()
    feed(pop, Event(ev.RUN_STARTED, None, {"settings": {"mode": "max", "score_window": 3}}))
    for i in (0, 1):
        feed(pop, Event(ev.MEMBER_CREATED, i, {"config": {"lr": 0.1}}))
    for step, score in enumerate([1.0, 2.0, 3.0, 10.0], start=1):  # member 0: lucky at the end
        feed(pop, Event(ev.REPORTED, 0, {"step": step, "score": score, "metrics": {}}))
    feed(pop, Event(ev.CHECKPOINTED, 0, {"step": 4, "checkpoint": "a"}))
    for step in range(1, 5):
        feed(pop, Event(ev.REPORTED, 1, {"step": step, "score": 6.0, "metrics": {}}))
    feed(pop, Event(ev.CHECKPOINTED, 1, {"step": 4, "checkpoint": "b"}))
    assert pop.members[0].ready_score == pytest.approx(5.0)  # (2 + 3 + 10) / 3
    assert pop.best().id == 1  # steady 6 beats a single lucky 10
    # an exploit inherits the donor's recent reports: the score continues along the lineage
    feed(pop, Event(ev.EXPLOITED, 1, {"donor": 0, "step": 4, "checkpoint": "a", "at": 4}))
    feed(pop, Event(ev.REPORTED, 1, {"step": 5, "score": 11.0, "metrics": {}}))
    feed(pop, Event(ev.CHECKPOINTED, 1, {"step": 5, "checkpoint": "c"}))
    assert pop.members[1].ready_score == pytest.approx(8.0)  # (3 + 10 + 11) / 3


def test_score_window_picks_a_steady_member_over_a_lucky_one():
    def run(window: int) -> int:
        res = hp.run(
            Lucky,
            {"lr": hp.uniform(0.0, 1.0)},
            metric="score",
            population=2,
            workers=2,
            budget=hp.Steps(8),
            ready=4,
            exploit=None,
            explore=None,
            configs=[{"lr": 0.0}, {"lr": 1.0}],
            score_window=window,
            backend="simulated",
        )
        return res.best.id

    assert run(1) == 0  # member 0's last report is a lucky spike
    assert run(4) == 1


def test_score_window_is_validated():
    with pytest.raises(ValueError, match="score_window"):
        hp.run(Grow, SPACE, metric="score", score_window=0, backend="simulated")


def test_real_processes_population_8_on_2_workers(tmp_path):
    res = grow_run(synchronous=False, seed=0, backend="local", storage=tmp_path / "run.db")
    assert exploits(res, 0)[0]["at"] == 4
    assert {e["member"] for e in exploits(res)} == set(range(8))
    assert res.population.finished and all(m.step == 40 for m in res.members)


class Peak(hp.Trainable):
    """Score rises until step 12 and falls after it, for every learning rate (overfitting)."""

    def setup(self, config):
        self.step, self.lr = 0, config["lr"]
        self.level = 0.0

    def train(self):
        self.step += 1
        self.level += self.lr
        return {"score": self.level * (1.0 - max(0, self.step - 12) / 10.0)}

    def save(self):
        return (self.step, self.level)

    def load(self, state):
        self.step, self.level = state

    def apply(self, config):
        self.lr = config["lr"]


class Lucky(hp.Trainable):
    """Member with lr 0 scores 1 every step but 9 on its last; lr 1 scores a steady 5."""

    def setup(self, config):
        self.step, self.lr = 0, config["lr"]

    def train(self):
        self.step += 1
        if self.lr == 1.0:
            return {"score": 5.0}
        return {"score": 9.0 if self.step == 8 else 1.0}

    def save(self):
        return self.step

    def load(self, state):
        self.step = state

    def apply(self, config):
        self.lr = config["lr"]


def test_simulated_backend_is_deterministic():
    a = grow_run(synchronous=False, seed=3)
    b = grow_run(synchronous=False, seed=3)
    assert [(e["member"], e["donor"], e["at"]) for e in exploits(a)] == [
        (e["member"], e["donor"], e["at"]) for e in exploits(b)
    ]
    assert math.isclose(a.best.score, b.best.score)


def test_paper_toy_two_members_asynchronous_reaches_the_optimum():
    """The paper's toy with 2 members on 2 workers, asynchronous: before issue 9 the best Q
    ranged from 0.49 to 1.198 over 7 runs (some runs never exploited)."""
    from hyperpop.userfile import load_file

    toy = load_file(EXAMPLES / "toy.py").module
    settings = {k: v for k, v in toy.settings.items() if k not in ("storage", "seed")}
    settings["synchronous"] = False
    best = []
    for seed in range(10):
        res = hp.run(toy.trainable, toy.space, backend="simulated", seed=seed, **settings)
        best.append(max(r["score"] for r in res.records()))
    assert sum(q > 1.19 for q in best) >= 9, best


def test_deterministic_runs_give_the_same_lineage_whatever_the_timing(tmp_path):
    """deterministic=True handles intervals in simulated-clock order: two runs on real worker
    processes, and the simulated backend, make the same decisions."""

    def lineage(res: hp.Result) -> list:
        reports = sorted(
            (e.member, e.data["step"], e.data["score"]) for e in res.events if e.kind == "reported"
        )
        return [(e["member"], e["donor"], e["step"], e["at"]) for e in exploits(res)], reports

    runs = [
        grow_run(synchronous=False, seed=4, backend="local", deterministic=True) for _ in range(2)
    ]
    simulated = grow_run(synchronous=False, seed=4, backend="simulated")
    assert lineage(runs[0]) == lineage(runs[1]) == lineage(simulated)
    assert exploits(runs[0])
