"""Rejuvenation: a stalled member gets fresh weights and new hyperparameters, on record."""

from __future__ import annotations

import pytest

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
    assert d.kind == "rejuvenate" and d.how == "full"
    SPACE.validate_config(d.config)  # explored from its own config (the default), in bounds


def test_a_member_that_still_improves_or_has_patience_left_is_not():
    pop = pop_with({0: [1.0, 1.0, 1.0], 1: [1.0, 2.0, 3.0], 2: [9.0]})
    assert decide(controller(3), pop, 0).kind == "continue"  # stall 2 < 3
    assert decide(controller(1), pop, 1).kind == "continue"  # improving


def test_the_leader_is_never_rejuvenated():
    pop = pop_with({0: [3.0, 3.0, 3.0, 3.0], 1: [1.0, 2.0]})
    assert decide(controller(2), pop, 0).kind == "continue"
    pop = pop_with({0: [3.0, 3.0, 3.0, 3.0], 1: [1.0, 4.0]})  # now member 1 leads
    assert decide(controller(2), pop, 0).kind == "rejuvenate"


def test_rejuvenation_end_to_end_resets_weights_and_keeps_the_lineage():
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
        backend="simulated",
        progress=False,
    )
    resets = res.rejuvenations()
    assert resets and res.summary()["rejuvenations"] == len(resets)
    assert all(e["reset"] == "full" for e in resets) and not res.lineage()  # nobody copied
    assert all(e["step"] == e["at"] > 0 for e in resets)  # reset where it stood
    assert 3 not in {e["member"] for e in resets}  # the leader (cap 9) is kept
    rows = res.records()
    m = resets[0]["member"]
    # the member's steps go on (its lineage continues), its trainable restarted: fresh weights
    assert [r["step"] for r in rows if r["member"] == m] == list(range(1, 17))
    n_seen = [r["n"] for r in rows if r["member"] == m]
    assert n_seen[resets[0]["step"]] == 1 and n_seen[0] == 1
    # the schedule continues, with the reset marked where it happened
    mem = res.member(m)
    assert mem.schedule[0]["step"] == 0
    marked = [s for s in mem.schedule if s.get("reset")]
    assert [s["step"] for s in marked] == [e["step"] for e in resets if e["member"] == m]
    assert res.best.score == 9.0
    assert all(x.step == 16 for x in res.members)  # no reset extends the run


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
        backend="simulated",
        progress=False,
    )
    assert res.summary()["status"] == "finished"
    assert res.summary()["rejuvenations"] > 0
    assert all(m.step == 12 for m in res.members)


class Layered(hp.Trainable):
    """Records how it was reset: a partial reset keeps the step count in its state."""

    def setup(self, config):
        self.n, self.cap, self.resets = 0, config["cap"], []

    def apply(self, config):
        self.cap = config["cap"]

    def reset(self, how):
        self.resets.append((how, self.n))

    def train(self):
        self.n += 1
        return {"score": float(min(self.n, self.cap)), "resets": len(self.resets)}

    def save(self):
        return (self.n, list(self.resets))

    def load(self, state):
        self.n, self.resets = state[0], list(state[1])


def test_a_partial_reset_calls_the_trainables_reset_on_the_restored_state():
    res = hp.run(
        Layered,
        {"cap": hp.randint(1, 9)},
        metric="score",
        population=2,
        workers=1,
        budget=hp.Steps(12),
        ready=2,
        exploit=None,
        explore=None,
        rejuvenate=hp.Rejuvenate(2, config="keep", reset="head", grace=1),
        configs=[{"cap": 2}, {"cap": 9}],
        backend="simulated",
    )
    resets = res.rejuvenations()
    assert resets and {e["member"] for e in resets} == {0}
    assert all(e["reset"] == "head" for e in resets)
    # the weights were kept and reset in part: the trainable's own count went on
    rows = [r for r in res.records() if r["member"] == 0]
    assert rows[-1]["resets"] == len(resets) and rows[-1]["step"] == 12
    # the grace period: no reset at the ready point right after one
    steps = [e["step"] for e in resets]
    assert all(b - a >= 4 for a, b in zip(steps, steps[1:]))
    assert res.member(0).config == {"cap": 2}  # config="keep"


def test_a_rejuvenated_member_replays_exactly():
    res = hp.run(
        Plateau,
        {"cap": hp.randint(1, 9)},
        metric="score",
        population=2,
        workers=1,
        budget=hp.Steps(12),
        ready=2,
        exploit=None,
        explore=None,
        rejuvenate=2,
        configs=[{"cap": 2}, {"cap": 9}],
        backend="simulated",
    )
    assert any(s.get("reset") for s in res.member(0).schedule)
    r = hp.replay(res, 0, trainable=Plateau)
    assert r.max_trajectory_difference == 0.0 and r.steps == 12


def test_rejuvenate_settings_are_checked():
    with pytest.raises(ValueError, match="explore', 'keep' or 'resample'"):
        hp.Rejuvenate(3, config="random")
    with pytest.raises(ValueError, match="positive number"):
        hp.Rejuvenate(0)
