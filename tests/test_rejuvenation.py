"""Rejuvenation: a stalled member gets fresh weights and new hyperparameters, on record."""

from __future__ import annotations

import hyperpop as hp
from hyperpop.controller import Controller, Ready, Steps
from hyperpop.population import Population
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.strategies import NoExploit, NoExplore

SPACE = Space({"cap": hp.randint(1, 9)})

def decide(c, pop, member):
    """Asynchronous mode as the driver runs it: the ready point queues the member and the
    decision is taken when it gets a worker (here: at once)."""
    (queued,) = c.on_ready(pop, member, now=0.0)
    return queued if queued.kind != "queue" else c.decide(pop, member, now=0.0)[0]



class Plateau(hp.Trainable):
    """Score = steps trained, capped at ``cap``: a member stalls once it reaches its cap."""

    def setup(self, config):
        self.n, self.cap, self.fresh = 0, config["cap"], True

    def apply(self, config):
        self.cap = config["cap"]

    def train(self):
        self.n += 1
        return {"score": float(min(self.n, self.cap)), "n": self.n}

    def save(self):
        return self.n

    def load(self, state):
        self.n = state


def pop_with(scores: dict[int, list[float]]) -> Population:
    pop = Population()
    seq = 0

    def feed(e: Event) -> None:
        nonlocal seq
        seq += 1
        e.seq, e.time = seq, float(seq)
        pop.apply(e)

    feed(Event(ev.RUN_STARTED, None, {"settings": {"mode": "max", "metric": "score"}}))
    for i, ss in scores.items():
        feed(Event(ev.MEMBER_CREATED, i, {"config": {"cap": 1}}))
        for k, s in enumerate(ss, 1):
            feed(Event(ev.REPORTED, i, {"step": k, "score": s, "metrics": {}}))
            feed(Event(ev.CHECKPOINTED, i, {"step": k, "checkpoint": f"b{i}-{k}"}))
    return pop


def controller(patience: int) -> Controller:
    return Controller(
        SPACE,
        mode="max",
        ready=Ready(steps=1),
        budget=[Steps(100)],
        exploit=NoExploit(),
        explore=NoExplore(),
        rejuvenate=patience,
        seed=0,
    )


def test_a_member_stalled_for_patience_ready_points_is_rejuvenated():
    pop = pop_with({0: [1.0, 1.0, 1.0, 1.0], 1: [5.0]})
    assert pop.members[0].stall == 3
    d = decide(controller(3), pop, 0)
    assert d.kind == "rejuvenate" and d.how == "resample"
    SPACE.validate_config(d.config)


def test_a_member_that_still_improves_or_has_patience_left_is_not():
    pop = pop_with({0: [1.0, 1.0, 1.0], 1: [1.0, 2.0, 3.0], 2: [9.0]})
    assert decide(controller(3), pop, 0).kind == "continue"  # stall 2 < 3
    assert decide(controller(1), pop, 1).kind == "continue"  # improving


def test_the_leader_is_never_rejuvenated():
    pop = pop_with({0: [3.0, 3.0, 3.0, 3.0], 1: [1.0, 2.0]})
    assert decide(controller(2), pop, 0).kind == "continue"
    pop = pop_with({0: [3.0, 3.0, 3.0, 3.0], 1: [1.0, 4.0]})  # now member 1 leads
    assert decide(controller(2), pop, 0).kind == "rejuvenate"


def test_rejuvenation_end_to_end_resets_weights_and_records_the_reset():
    res = hp.run(
        Plateau,
        {"cap": hp.randint(1, 9)},
        metric="score",
        population=4,
        workers=2,
        budget=hp.Steps(16),
        ready=2,
        exploit=None,
        explore=None,
        rejuvenate=2,
        configs=[{"cap": 2}, {"cap": 3}, {"cap": 4}, {"cap": 9}],
        synchronous=True,
        seed=0,
    )
    resets = [e for e in res.lineage() if e["kind"] == "rejuvenate"]
    assert resets and res.summary()["rejuvenations"] == len(resets)
    assert all(e["donor"] is None and e["step"] == 0 for e in resets)
    assert 3 not in {e["member"] for e in resets}  # the leader (cap 9) is kept
    # after a reset the member trains a fresh model: its steps start again from 1
    rows = res.records()
    m = resets[0]["member"]
    steps = [r["step"] for r in rows if r["member"] == m]
    n_seen = [r["n"] for r in rows if r["member"] == m]
    assert steps == n_seen  # the trainable's own count restarted too: a fresh setup
    assert steps.count(1) == 1 + sum(1 for e in resets if e["member"] == m)
    # the member's schedule starts at the reset, with the new config
    mem = res.member(m)
    assert mem.schedule[0]["step"] == 0 and mem.schedule[0]["trained_by"] == m
    assert res.best.score == 9.0
    # a reset model starts its step budget again, but a member is reset only while it has
    # trained fewer than n steps in all: every member trains fewer than 2n
    for i in range(4):
        assert 16 <= sum(1 for r in rows if r["member"] == i) < 32


def test_a_member_that_always_stalls_cannot_keep_the_run_going():
    res = hp.run(
        Plateau,
        {"cap": hp.randint(1, 1 + 1)},
        metric="score",
        population=3,
        workers=2,
        budget=hp.Steps(12),
        ready=1,
        exploit=None,
        explore=None,
        rejuvenate=1,
        configs=[{"cap": 2}, {"cap": 1}, {"cap": 1}],
        synchronous=True,
        seed=0,
    )
    assert res.summary()["status"] == "finished"
    assert res.summary()["rejuvenations"] > 0
    assert all(m.step == 12 for m in res.members)
