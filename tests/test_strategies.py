"""Exploit strategies on hand-made populations: a known population in, the expected decision out.

Truncation, binary tournament and Welch's t-test share one interface (``select``); a user's own
strategy plugs in the same way, by instance or by registered name.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

import hyperpop as hp
from hyperpop.controller import Controller, Ready, Steps
from hyperpop.population import Population
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.strategies import (
    EXPLOIT,
    Context,
    ExploitStrategy,
    NoExplore,
    Tournament,
    Truncation,
    WelchTTest,
    make_exploit,
    make_explore,
    register,
)
from hyperpop.strategies.ttest import welch_test

SPACE = Space({"lr": hp.uniform(0.0, 1.0)})


def decide(c, pop, member):
    """Asynchronous mode as the driver runs it: the ready point queues the member and the
    decision is taken when it gets a worker (here: at once)."""
    (queued,) = c.on_ready(pop, member, now=0.0)
    return queued if queued.kind != "queue" else c.decide(pop, member, now=0.0)[0]


class Pop:
    """A population built by feeding it events, as the driver does."""

    def __init__(self, n: int, mode: str = "max"):
        self.pop = Population()
        self.seq = 0
        self.feed(Event(ev.RUN_STARTED, None, {"settings": {"mode": mode, "metric": "s"}}))
        for i in range(n):
            self.feed(Event(ev.MEMBER_CREATED, i, {"config": {"lr": 0.1 * (i + 1)}}))

    def feed(self, e: Event) -> None:
        self.seq += 1
        e.seq, e.time = self.seq, 1000.0 + self.seq
        self.pop.apply(e)

    def ready(self, member: int, *scores: float) -> None:
        """One ready point per score (one step each)."""
        m = self.pop.members[member]
        for s in scores:
            self.feed(Event(ev.REPORTED, member, {"step": m.step + 1, "score": s, "metrics": {}}))
            self.feed(
                Event(
                    ev.CHECKPOINTED, member, {"step": m.step, "checkpoint": f"b{member}-{m.step}"}
                )
            )

    def ctx(self, seed: int = 0) -> Context:
        members = self.pop.members
        return Context(
            mode=self.pop.mode,
            rng=np.random.default_rng(seed),
            candidate_ids=np.array(list(members), dtype=np.int64),
            # None (no ready score yet) becomes NaN
            candidate_scores=np.array([m.ready_score for m in members.values()], dtype=float),
            population=self.pop,
            space=SPACE,
        )


# --- truncation and tournament -------------------------------------------------------------
def test_truncation_bottom_copies_top_and_others_stay():
    p = Pop(8)
    for i in range(8):
        p.ready(i, float(i))
    ctx = p.ctx()
    donors = {Truncation(0.25).select(p.pop.members[0], ctx).id for _ in range(30)}
    assert donors == {6, 7}
    assert Truncation(0.25).select(p.pop.members[1], ctx).id in {6, 7}
    for i in range(2, 8):
        assert Truncation(0.25).select(p.pop.members[i], ctx) is None


def test_truncation_min_mode_flips_the_order():
    p = Pop(4, mode="min")
    for i in range(4):
        p.ready(i, float(i))
    ctx = p.ctx()
    assert Truncation(0.25).select(p.pop.members[3], ctx).id == 0
    assert Truncation(0.25).select(p.pop.members[0], ctx) is None


def test_tournament_copies_only_a_better_opponent():
    p = Pop(2)
    p.ready(0, 1.0)
    p.ready(1, 2.0)
    ctx = p.ctx()
    assert Tournament().select(p.pop.members[0], ctx).id == 1
    assert Tournament().select(p.pop.members[1], ctx) is None


def test_tournament_alone_does_nothing():
    p = Pop(1)
    p.ready(0, 1.0)
    assert Tournament().select(p.pop.members[0], p.ctx()) is None


# --- Welch's t-test --------------------------------------------------------------------------
def test_welch_p_values_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.normal(rng.normal(), rng.uniform(0.1, 2), size=int(rng.integers(2, 15)))
        b = rng.normal(rng.normal(), rng.uniform(0.1, 2), size=int(rng.integers(2, 15)))
        t, p = welch_test(list(a), list(b))
        ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
        assert t == pytest.approx(ref.statistic, rel=1e-9)
        assert p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-12)


def test_ttest_without_scipy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # as if SciPy were missing
    with pytest.raises(ImportError, match=r"pip install 'hyperpop\[ttest\]'"):
        WelchTTest().bind(SPACE)
    with pytest.raises(ImportError, match="needs SciPy"):
        welch_test([1.0, 2.0], [0.0, 0.5])


def test_welch_edge_cases():
    assert welch_test([2.0, 2.0], [1.0, 1.0]) == (math.inf, 0.0)
    assert welch_test([1.0, 1.0], [2.0, 2.0])[1] == 1.0
    assert welch_test([1.0, 1.0], [1.0, 1.0])[1] == 1.0
    with pytest.raises(ValueError, match="at least 2 samples"):
        welch_test([1.0], [1.0, 2.0])


def test_ttest_copies_a_significantly_better_member():
    p = Pop(2)
    p.ready(0, 0.0, 0.1, -0.1, 0.05, 0.0)
    p.ready(1, 1.0, 1.1, 0.9, 1.05, 1.0)
    ctx = p.ctx()
    assert WelchTTest(window=5).select(p.pop.members[0], ctx).id == 1
    assert WelchTTest(window=5).select(p.pop.members[1], ctx) is None


def test_ttest_ignores_a_better_mean_within_noise():
    """Truncation would copy here (member 1's last score is higher); the t-test does not."""
    p = Pop(2)
    p.ready(0, 0.0, 1.0, -1.0, 0.5, -0.4)
    p.ready(1, 0.2, -0.9, 1.1, -0.3, 0.6)
    ctx = p.ctx()
    assert WelchTTest(window=5).select(p.pop.members[0], ctx) is None
    assert Tournament().select(p.pop.members[0], ctx).id == 1


def test_ttest_looks_only_at_the_last_window_scores():
    p = Pop(2)
    p.ready(0, 5.0, 5.0, 5.0, 0.0, 0.1, 0.0)  # used to be better, now worse
    p.ready(1, 0.0, 0.0, 0.0, 1.0, 1.1, 1.0)
    ctx = p.ctx()
    assert WelchTTest(window=3).select(p.pop.members[0], ctx).id == 1
    assert WelchTTest(window=6).select(p.pop.members[0], ctx) is None


def test_ttest_needs_enough_scores_on_both_sides():
    p = Pop(2)
    p.ready(0, 0.0, 0.01)
    p.ready(1, 1.0, 1.01)
    ctx = p.ctx()
    assert WelchTTest(min_samples=3).select(p.pop.members[0], ctx) is None
    assert WelchTTest(min_samples=2).select(p.pop.members[0], ctx).id == 1


def test_ttest_min_mode_and_nan():
    p = Pop(3, mode="min")
    p.ready(0, 1.0, 1.1, 0.9)
    p.ready(1, 0.0, 0.1, -0.1)
    p.ready(2, math.nan, math.nan, math.nan)
    ctx = p.ctx()
    assert WelchTTest().select(p.pop.members[1], ctx) is None
    # member 0 meets member 1 or 2: it copies 1 (lower is better), never the NaN member
    picks = [WelchTTest().select(p.pop.members[0], p.ctx(seed)) for seed in range(20)]
    assert {m.id if m else None for m in picks} == {1, None}
    # the NaN member copies anyone with real scores
    assert WelchTTest().select(p.pop.members[2], ctx).id in {0, 1}


def test_ttest_settings_are_checked_and_described():
    with pytest.raises(ValueError, match="window"):
        WelchTTest(window=1)
    with pytest.raises(ValueError, match="alpha"):
        WelchTTest(alpha=1.5)
    with pytest.raises(ValueError, match="min_samples"):
        WelchTTest(window=4, min_samples=5)
    d = WelchTTest(window=6, alpha=0.1).describe()
    assert d == {"name": "ttest", "window": 6, "alpha": 0.1, "min_samples": 3}
    rebuilt = type(make_exploit(d.pop("name")))(**d)
    assert rebuilt.describe() == WelchTTest(window=6, alpha=0.1).describe()


def test_ttest_through_the_controller_exploits():
    p = Pop(2)
    p.ready(0, 0.0, 0.1, -0.1, 0.0)
    p.ready(1, 1.0, 1.1, 0.9, 1.0)
    c = Controller(
        SPACE,
        mode="max",
        ready=Ready(steps=1),
        budget=[Steps(100)],
        exploit=WelchTTest(),
        explore=NoExplore(),
    )
    d = decide(c, p.pop, 0)
    assert (d.kind, d.donor, d.checkpoint) == ("exploit", 1, "b1-4")


# --- names and user strategies ---------------------------------------------------------------
def test_names_map_to_the_strategies():
    assert isinstance(make_exploit("ttest"), WelchTTest)
    assert make_explore("pb2").name == "pb2"
    with pytest.raises(ValueError, match="unknown exploit strategy 'nope'.*ttest"):
        make_exploit("nope")


class Oldest(ExploitStrategy):
    """A user's strategy: copy the member with the most ready points, if it is better."""

    name = "oldest"

    def select(self, member, ctx):
        oldest = max(ctx.candidates, key=lambda m: (m.ready_count, -m.id))
        return oldest if ctx.value(oldest) > ctx.value(member) else None


def test_a_user_strategy_plugs_in_by_instance_and_by_registered_name():
    p = Pop(3)
    p.ready(0, 1.0, 1.0, 1.0)
    p.ready(1, 0.0)
    p.ready(2, 2.0)
    ctx = p.ctx()
    assert Oldest().select(p.pop.members[1], ctx).id == 0
    assert Oldest().select(p.pop.members[2], ctx) is None
    try:
        assert register(Oldest) is Oldest
        assert isinstance(make_exploit("oldest"), Oldest)
        register(Oldest)  # registering the same class twice is fine
        with pytest.raises(ValueError, match="already registered"):
            register(type("Other", (Oldest,), {}))
    finally:
        EXPLOIT.pop("oldest", None)
    with pytest.raises(TypeError, match="ExploitStrategy or ExploreStrategy"):
        register(int)
    with pytest.raises(ValueError, match="its own class attribute name"):
        register(type("Nameless", (ExploitStrategy,), {"select": Oldest.select}))


def test_a_user_strategy_drives_a_real_run():
    from core_trainables import Counter

    res = hp.run(
        Counter,
        {"lr": hp.uniform(0.0, 1.0)},
        metric="score",
        population=4,
        workers=2,
        budget=hp.Steps(12),
        ready=3,
        exploit=Oldest(),
        explore="perturb",
        synchronous=True,
        seed=1,
    )
    assert res.settings["exploit"] == {"name": "oldest"}
    assert res.summary()["exploits"] > 0
    # with equal ages the oldest is member 0: every copy comes from it
    assert {e["donor"] for e in res.lineage() if e["kind"] == "exploit"} == {0}
