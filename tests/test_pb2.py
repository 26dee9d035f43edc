"""PB2: what it learns from a hand-made population, its checks, and a real run."""

from __future__ import annotations

import numpy as np
import pytest

import hyperpop as hp
from hyperpop.population import Population
from hyperpop.space import Space, SpaceError
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.strategies import PB2, Context, make_explore

pytest.importorskip("scipy")


class Pop:
    """A population built from events; every member's score grows by ``rate(config)`` a step."""

    def __init__(self, configs, rate, *, ready=2, mode="max"):
        self.pop = Population()
        self.seq, self.rate, self.ready_steps = 0, rate, ready
        settings = {"mode": mode, "metric": "s", "ready": {"steps": ready}}
        self.feed(Event(ev.RUN_STARTED, None, {"settings": settings}))
        self.score = {}
        for i, c in enumerate(configs):
            self.feed(Event(ev.MEMBER_CREATED, i, {"config": c}))
            self.score[i] = 0.0

    def feed(self, e: Event) -> None:
        self.seq += 1
        e.seq, e.time = self.seq, 1000.0 + self.seq
        self.pop.apply(e)

    def train(self, member: int, intervals: int) -> None:
        m = self.pop.members[member]
        for _ in range(intervals):
            for _ in range(self.ready_steps):
                self.score[member] += self.rate(m.config)
                data = {"step": m.step + 1, "score": self.score[member], "metrics": {}}
                self.feed(Event(ev.REPORTED, member, data))
            blob = f"b{member}-{m.step}"
            self.feed(Event(ev.CHECKPOINTED, member, {"step": m.step, "checkpoint": blob}))

    def ctx(self, space: Space, seed: int = 0, batch=None) -> Context:
        members = self.pop.members
        return Context(
            mode=self.pop.mode,
            rng=np.random.default_rng(seed),
            candidate_ids=np.array(list(members), dtype=np.int64),
            # None (no ready score yet) becomes NaN
            candidate_scores=np.array([m.ready_score for m in members.values()], dtype=float),
            population=self.pop,
            space=space,
            batch=list(batch or []),
        )


X = Space({"x": hp.uniform(0.0, 1.0)})


def grid_pop(n=8, intervals=3, rate=lambda c: c["x"]):
    p = Pop([{"x": (i + 0.5) / n} for i in range(n)], rate)
    for i in range(n):
        p.train(i, intervals)
    return p


# --- observations ---------------------------------------------------------------------------
def collected(p: Pop) -> list:
    pb = PB2()
    pb.bind(X)
    pb._collect(p.ctx(X))
    return [o for o in pb._obs if o is not None]


def test_observations_are_every_interval_trained_from_a_known_score():
    p = Pop([{"x": 0.2}, {"x": 0.8}], lambda c: c["x"])
    p.train(0, 2)
    p.train(1, 2)
    # the first interval of each has no score before it; the second starts at step 2
    obs = collected(p)
    assert [(o[0][0], o[1], o[2], o[4]) for o in obs] == [
        (0, 2, pytest.approx(0.4), pytest.approx(0.2)),
        (1, 2, pytest.approx(1.6), pytest.approx(0.8)),
    ]
    # member 0 copies member 1 at step 4, explores, trains two intervals of its own: the
    # interval from step 4 starts from the donor's recorded score, and earlier ones stay
    p.feed(Event(ev.EXPLOITED, 0, {"donor": 1, "step": 4, "checkpoint": "b1-4"}))
    p.feed(Event(ev.EXPLORED, 0, {"config": {"x": 0.5}}))
    p.score[0] = p.score[1]
    p.train(0, 2)
    mine = [o for o in collected(p) if o[0][0] == 0]
    assert [(o[0], o[1], o[4]) for o in mine] == [
        ((0, 0, 0, 2), 2, pytest.approx(0.2)),
        ((0, 1, 0, 4), 4, pytest.approx(0.5)),
        ((0, 1, 0, 6), 6, pytest.approx(0.5)),
    ]


def test_observations_orient_scores_in_min_mode():
    p = Pop([{"x": 0.5}], lambda c: -c["x"], mode="min")
    p.train(0, 3)
    assert [o[4] for o in collected(p)] == [pytest.approx(0.5), pytest.approx(0.5)]


# --- decisions ------------------------------------------------------------------------------
def test_pb2_picks_where_the_score_grows_fastest():
    p = grid_pop()
    pb = PB2(kappa=0.5)
    pb.bind(X)
    best = p.pop.members[7]
    new = pb.explore(best.config, p.pop.members[0], best, p.ctx(X))
    assert new["x"] > 0.8
    assert pb.fits == 1


def test_pb2_prefers_the_interior_optimum():
    p = grid_pop(n=10, rate=lambda c: 1.0 - 4.0 * (c["x"] - 0.3) ** 2)
    pb = PB2(kappa=0.2)
    pb.bind(X)
    d = p.pop.members[9]
    assert abs(pb.explore(d.config, d, d, p.ctx(X))["x"] - 0.3) < 0.12


def test_pb2_handles_integers_and_unordered_choices():
    space = Space({"opt": hp.choice(["sgd", "adam", "rms"]), "n": hp.randint(1, 5), "k": "c"})
    configs = [{"opt": o, "n": n, "k": "c"} for o in ("sgd", "adam", "rms") for n in (1, 3, 5)]
    p = Pop(configs, lambda c: (1.0 if c["opt"] == "adam" else 0.0) + 0.1 * c["n"])
    for i in range(len(configs)):
        p.train(i, 3)
    pb = PB2(kappa=0.1)
    pb.bind(space)
    d = p.pop.members[0]
    new = pb.explore(d.config, d, d, p.ctx(space))
    space.validate_config(new)
    assert new["opt"] == "adam" and new["n"] >= 4 and new["k"] == "c"


def test_batch_ucb_spreads_picks_of_one_round():
    """With no signal in the data, UCB goes where the model is least sure; an earlier pick of
    the same round, hallucinated into the model, sends the next member elsewhere."""
    p = grid_pop(n=6, rate=lambda c: 0.5)
    pb = PB2(kappa=1.0)
    pb.bind(X)
    d = p.pop.members[0]
    first = pb.explore(d.config, d, d, p.ctx(X))
    again = pb.explore(d.config, d, d, p.ctx(X))
    second = pb.explore(d.config, d, d, p.ctx(X, batch=[first]))
    assert again == first  # same data, same round position: same pick
    assert abs(second["x"] - first["x"]) > 0.5
    assert pb.fits == 1  # the round's data did not change: one fit served all three


def test_batch_std_shrinks_at_pending_points():
    p = grid_pop(n=10, rate=lambda c: 1.0 - 4.0 * (c["x"] - 0.3) ** 2)
    pb = PB2(kappa=3.0)
    pb.bind(X)
    d = p.pop.members[0]
    first = pb.explore(d.config, d, d, p.ctx(X))
    q = pb._inputs(np.array([0.0]), np.array([0.0]), pb._encoder.encode(first)[None, :])
    _, before = pb._gp.predict(q)
    _, after = pb._gp.predict(q, pending=q)  # the first pick hallucinated at its own point
    assert after[0] < 0.5 * before[0]
    second = pb.explore(d.config, d, d, p.ctx(X, batch=[first]))
    assert second != first


def test_pb2_respects_narrower_bounds():
    p = grid_pop()
    pb = PB2(bounds={"x": (0.2, 0.4)}, kappa=0.5)
    pb.bind(X)
    d = p.pop.members[7]
    for seed in range(3):
        assert 0.2 <= pb.explore(d.config, d, d, p.ctx(X, seed=seed))["x"] <= 0.4


def test_pb2_perturbs_until_it_has_data():
    p = grid_pop(n=2, intervals=2)
    pb = PB2(min_data=8)
    pb.bind(X)
    d = p.pop.members[1]
    new = pb.explore(d.config, d, d, p.ctx(X))
    assert new != d.config and 0.0 <= new["x"] <= 1.0
    assert pb.fits == 0 and len(pb.decision_seconds) == 1


def test_pb2_fits_a_bounded_recent_history():
    p = grid_pop(n=40, intervals=6)  # 40 members x 5 observations
    pb = PB2(max_history=50)
    pb.bind(X)
    d = p.pop.members[0]
    pb.explore(d.config, d, d, p.ctx(X))
    assert pb._valid == 200  # every interval with a known start score is an observation
    X_train = pb._gp.x
    assert X_train.shape[0] == 50
    # the most recent observations: times 10 (step 10 of 12) and 8, in units of the newest
    assert set(np.round(X_train[:, 0] * 10).astype(int)) == {8, 10}


def test_pb2_keeps_learning_from_intervals_trained_before_a_copy():
    """PB2's data comes from every interval in the log, not from members' current lineages:
    a member that copies another keeps its earlier intervals as observations (they were lost
    on resume before, 21 observations before a kill -9 and 14 after)."""
    p = grid_pop(n=4, intervals=3)  # 4 members x 2 observations
    pb = PB2()
    pb.bind(X)
    pb._collect(p.ctx(X))
    before = pb._valid
    p.feed(Event(ev.EXPLOITED, 0, {"donor": 3, "step": 6, "checkpoint": "b3-6", "at": 6}))
    fresh = PB2()
    fresh.bind(X)
    fresh._collect(p.ctx(X))  # a resumed run's PB2 sees the same observations
    assert before == fresh._valid == 8


# --- the GP --------------------------------------------------------------------------------
def _kernel(theta, a, b):
    """PB2's kernel written out directly: s * exp(-|dt|/l_t) * exp(-sum (dz/l)^2 / 2)."""
    s, lt, ls = np.exp(theta[0]), np.exp(theta[1]), np.exp(theta[2:-1])
    dt = np.abs(a[:, None, 0] - b[None, :, 0])
    dz = (a[:, None, 1:] - b[None, :, 1:]) / ls
    return s * np.exp(-dt / lt - 0.5 * (dz**2).sum(-1))


def _gp_data(n=30, dims=3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.sort(rng.random(n)), rng.random((n, dims))])
    y = np.sin(3 * x[:, 1]) + x[:, 0] + 0.1 * rng.standard_normal(n)
    theta = np.log([1.3, 0.7, 0.5, 1.2, 2.0, 0.05])
    return x, y, theta


def test_likelihood_is_the_gaussian_density_and_its_gradient():
    from scipy.stats import multivariate_normal

    from hyperpop.strategies.pb2 import _Likelihood

    x, y, theta = _gp_data()
    k = _kernel(theta, x, x) + (np.exp(theta[-1]) + 1e-10) * np.eye(len(y))
    value, grad = _Likelihood(x, y)(theta)
    assert value == pytest.approx(-multivariate_normal(np.zeros(len(y)), k).logpdf(y), rel=1e-9)
    eps = 1e-6
    for i in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[i] += eps
        down[i] -= eps
        numeric = (_Likelihood(x, y)(up)[0] - _Likelihood(x, y)(down)[0]) / (2 * eps)
        assert grad[i] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def test_posterior_is_the_closed_form_with_and_without_pending_points():
    from hyperpop.strategies.pb2 import _Posterior

    x, dy, theta = _gp_data()
    q = np.random.default_rng(1).random((7, x.shape[1]))
    noise = np.exp(theta[-1]) + 1e-10
    mu, sd = dy.mean(), dy.std()

    def closed_form(train):
        k = _kernel(theta, train, train) + noise * np.eye(len(train))
        ks = _kernel(theta, train, q)
        var = (
            np.exp(theta[0]) + np.exp(theta[-1]) - np.einsum("ij,ij->j", ks, np.linalg.solve(k, ks))
        )
        return np.sqrt(var) * sd, ks

    gp = _Posterior(theta, x, dy)
    mean, std = gp.predict(q)
    expected_std, ks = closed_form(x)
    k = _kernel(theta, x, x) + noise * np.eye(len(x))
    assert mean == pytest.approx(ks.T @ np.linalg.solve(k, (dy - mu) / sd) * sd + mu, rel=1e-8)
    assert std == pytest.approx(expected_std, rel=1e-8)
    # GP-BUCB: the pending points count as observed (their values do not enter the variance)
    pending = q[:2] + 0.01
    mean_p, std_p = gp.predict(q, pending)
    assert mean_p == pytest.approx(mean)
    assert std_p == pytest.approx(closed_form(np.vstack([x, pending]))[0], rel=1e-7, abs=1e-12)


# --- tuning ---------------------------------------------------------------------------------
def test_a_fresh_pb2_fits_what_the_running_one_fits_after_a_late_interval():
    """Asynchronous runs finish intervals out of step order. A late interval that starts
    before the newest ones changes the data the kernel was tuned on without changing how much
    data there is: the running PB2 must tune again, as a fresh one (a resumed run) does. It
    kept the stale tuning before, and a resumed run then fitted another GP."""
    p = Pop([{"x": (i + 0.5) / 10} for i in range(10)], lambda c: c["x"])
    for i in range(1, 10):
        p.train(i, 6 if i < 9 else 2)  # 8 members x 5 observations + 1, at steps 2..10
    p.train(0, 1)  # member 0 is slow: no observation yet
    pb = PB2(refit=4, max_history=20, kappa=0.5)
    pb.bind(X)
    d = p.pop.members[9]
    pb.explore(d.config, d, d, p.ctx(X))
    assert pb._valid == 41 and pb._tune_point(41) == 40 == pb._tune_point(42)
    tunes = pb.tunes
    p.train(0, 1)  # its first observation starts at step 2, before 32 others
    running = pb.explore(d.config, d, d, p.ctx(X))
    assert pb.tunes == tunes + 1
    fresh = PB2(refit=4, max_history=20, kappa=0.5)
    fresh.bind(X)
    assert fresh.explore(d.config, d, d, p.ctx(X)) == running
    np.testing.assert_array_equal(fresh._gp.theta, pb._gp.theta)
    np.testing.assert_array_equal(fresh._gp.alpha, pb._gp.alpha)


def test_the_kernel_is_tuned_at_every_fit_then_every_refit_observations():
    p = Pop([{"x": (i + 0.5) / 5} for i in range(5)], lambda c: c["x"])
    for i in range(5):
        p.train(i, 1)  # no observation yet: a first interval has no start score
    pb = PB2(refit=5, max_history=20)
    pb.bind(X)
    d = p.pop.members[4]
    time_scales = []
    for j in range(40):  # one new observation per decision
        p.train(j % 5, 1)
        pb.explore(d.config, d, d, p.ctx(X))
        if pb._gp is not None:
            # the time length scale in steps: kept between tunings although the unit changes
            time_scales.append((pb.tunes, pb._gp.theta[1] + np.log(pb._norm[0])))
    assert pb._valid == 40 and pb.fits == 33
    # tuned at every fit up to 20 observations (the history), then at 25, 30, 35 and 40
    assert pb.tunes == 13 + 4
    kept = [(a, b) for (ta, a), (tb, b) in zip(time_scales, time_scales[1:]) if ta == tb]
    assert len(kept) == 33 - 17
    for a, b in kept:
        assert a == pytest.approx(b, rel=1e-12)


# --- checks ---------------------------------------------------------------------------------
def test_reversed_or_bad_bounds_are_errors_that_say_the_fix():
    with pytest.raises(ValueError, match=r"reversed.*write them as \(0.001, 0.1\)"):
        PB2(bounds={"lr": (0.1, 0.001)})
    with pytest.raises(ValueError, match="pair"):
        PB2(bounds={"lr": "low"})
    with pytest.raises(ValueError, match="kappa"):
        PB2(kappa=-1)
    with pytest.raises(ValueError, match="max_history"):
        PB2(max_history=2)
    space = Space({"lr": hp.loguniform(1e-4, 1e-1), "opt": hp.choice(["a", "b"])})
    with pytest.raises(SpaceError, match="'momentum', which is not a parameter"):
        PB2(bounds={"momentum": (0, 1)}).bind(space)
    with pytest.raises(SpaceError, match="only numeric parameters"):
        PB2(bounds={"opt": (0, 1)}).bind(space)
    with pytest.raises(SpaceError, match="outside the space"):
        PB2(bounds={"lr": (1e-5, 1e-2)}).bind(space)


def test_a_run_with_bad_pb2_bounds_fails_before_training(tmp_path):
    from core_trainables import Counter

    with pytest.raises(SpaceError, match="outside the space"):
        hp.run(
            Counter,
            {"lr": hp.uniform(0.0, 1.0)},
            metric="score",
            explore=PB2(bounds={"lr": (0.5, 2.0)}),
            storage=tmp_path / "r.db",
        )
    assert not (tmp_path / "r.db").exists()


def test_describe_rebuilds_the_same_strategy():
    pb = PB2(bounds={"x": (0.1, 0.9)}, kappa=2.0, max_history=64)
    d = pb.describe()
    rebuilt = type(make_explore(d.pop("name")))(**d)
    assert rebuilt.describe() == pb.describe()


# --- end to end -----------------------------------------------------------------------------
def test_pb2_end_to_end_on_the_local_backend():
    from core_trainables import Counter

    space = {
        "lr": hp.uniform(0.0, 1.0),
        "opt": hp.choice(["sgd", "adam"]),
        "layers": hp.randint(1, 4),
    }
    pb = PB2(min_data=4)
    res = hp.run(
        Counter,
        space,
        metric="score",
        population=4,
        workers=2,
        budget=hp.Steps(24),
        ready=2,
        exploit="truncation",
        explore=pb,
        synchronous=True,
        seed=0,
    )
    assert res.settings["explore"]["name"] == "pb2"
    assert pb.fits > 0
    explored = [e for e in res.events if e.kind == ev.EXPLORED]
    assert explored and all(e.data["how"] == "pb2" for e in explored)
    sp = Space(space)
    for e in explored:
        sp.validate_config(e.data["config"])
    # the score is the sum of the lr trained with: PB2 should push lr up
    assert res.best.config["lr"] > 0.5
    assert all(m.status == "finished" and m.step == 24 for m in res.members)
