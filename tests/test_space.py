from __future__ import annotations

import numpy as np
import pytest

import hyperpop as hp
from hyperpop.space import Space, SpaceError


@pytest.fixture
def rng():
    return np.random.default_rng(0)


SPACE = {
    "lr": hp.loguniform(1e-4, 1e-1),
    "momentum": hp.uniform(0.0, 0.99),
    "layers": hp.randint(1, 4),
    "hidden": hp.qloguniform(16, 512),
    "batch_size": hp.choice([16, 32, 64, 128]),
    "act": hp.choice(["relu", "tanh", "gelu"]),
    "optim": {"name": "sgd", "nesterov": hp.choice([True, False])},
}


def test_sample_respects_types_and_bounds(rng):
    space = Space(SPACE)
    for _ in range(500):
        c = space.sample(rng)
        assert 1e-4 <= c["lr"] <= 1e-1
        assert 0.0 <= c["momentum"] <= 0.99
        assert isinstance(c["layers"], int) and 1 <= c["layers"] <= 4
        assert isinstance(c["hidden"], int) and 16 <= c["hidden"] <= 512
        assert c["batch_size"] in (16, 32, 64, 128)
        assert c["act"] in ("relu", "tanh", "gelu")
        assert c["optim"]["name"] == "sgd"
        assert c["optim"]["nesterov"] in (True, False)
        space.validate_config(c)


def test_log_sampling_covers_decades(rng):
    p = hp.loguniform(1e-4, 1e-1)
    xs = np.array([p.sample(rng) for _ in range(3000)])
    # each decade holds about a third of the mass on a log scale
    for lo in (1e-4, 1e-3, 1e-2):
        share = np.mean((xs >= lo) & (xs < lo * 10))
        assert 0.28 < share < 0.39


def test_perturb_stays_in_bounds_many_times(rng):
    space = Space(SPACE)
    c = space.sample(rng)
    for _ in range(2000):
        c = space.perturb(c, rng, resample_probability=0.1)
        space.validate_config(c)
        assert isinstance(c["layers"], int) and isinstance(c["hidden"], int)


def test_float_perturb_multiplies_and_clips(rng):
    p = hp.uniform(0.0, 1.0)
    assert p.perturb(0.5, 1.2, rng) == pytest.approx(0.6)
    assert p.perturb(0.5, 0.8, rng) == pytest.approx(0.4)
    assert p.perturb(0.95, 1.2, rng) == 1.0  # clipped, never outside (ray#5035)
    # a value at zero still moves (by the same share of the range)
    assert p.perturb(0.0, 1.2, rng) == pytest.approx(0.2)
    assert p.perturb(0.0, 0.8, rng) == 0.0
    q = hp.uniform(-1.0, 1.0)
    assert q.perturb(-0.5, 1.2, rng) == pytest.approx(-0.1)


def test_int_perturb_moves_by_at_least_one(rng):
    p = hp.randint(1, 4)
    assert p.perturb(2, 1.2, rng) == 3
    assert p.perturb(2, 0.8, rng) == 1
    assert p.perturb(4, 1.2, rng) == 4
    assert p.perturb(1, 0.8, rng) == 1


def test_ordered_choice_moves_to_a_neighbour(rng):
    p = hp.choice([16, 32, 64, 128])
    assert p.ordered
    assert p.perturb(32, 1.2, rng) == 64
    assert p.perturb(32, 0.8, rng) == 16
    assert p.perturb(128, 1.2, rng) == 64  # bounces at the end
    assert p.perturb(16, 0.8, rng) == 32


def test_unordered_choice_resamples(rng):
    p = hp.choice(["relu", "tanh", "gelu"])
    assert not p.ordered
    seen = {p.perturb("relu", 1.2, rng) for _ in range(100)}
    assert seen == {"relu", "tanh", "gelu"}


def test_resample_probability_one_draws_from_prior(rng):
    space = Space({"x": hp.uniform(0.0, 1.0)})
    xs = [space.perturb({"x": 0.5}, rng, resample_probability=1.0)["x"] for _ in range(200)]
    assert min(xs) < 0.2 and max(xs) > 0.8


def test_unit_cube_round_trip(rng):
    space = Space(SPACE)
    assert space.searchable == [
        "lr",
        "momentum",
        "layers",
        "hidden",
        "batch_size",
        "act",
        "optim/nesterov",
    ]
    for _ in range(300):
        c = space.sample(rng)
        u = space.to_unit(c)
        assert u.shape == (7,) and np.all((u >= 0) & (u <= 1))
        back = space.from_unit(u)
        assert back["layers"] == c["layers"] and back["hidden"] == c["hidden"]
        assert back["batch_size"] == c["batch_size"] and back["act"] == c["act"]
        assert back["lr"] == pytest.approx(c["lr"]) and back["optim"] == c["optim"]


def test_a_log_range_too_narrow_for_the_logarithm_maps_linearly(rng):
    low = 1e300
    high = float(np.nextafter(low, 2e300))  # log(low) == log(high) in floating point
    space = Space({"x": hp.loguniform(low, high)})
    assert space.to_unit({"x": low})[0] == 0.0 and space.to_unit({"x": high})[0] == 1.0
    for _ in range(20):
        c = space.sample(rng)
        assert low <= c["x"] <= high and space.from_unit(space.to_unit(c)) == c


def test_from_unit_covers_every_int_and_choice():
    space = Space({"k": hp.randint(0, 3), "c": hp.choice(["a", "b", "c"])})
    grid = np.linspace(0, 1, 101)
    assert {space.from_unit([u, 0.5])["k"] for u in grid} == {0, 1, 2, 3}
    assert {space.from_unit([0.5, u])["c"] for u in grid} == {"a", "b", "c"}


def test_serialisation_round_trip(rng):
    space = Space(SPACE)
    again = Space.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()
    c = space.sample(np.random.default_rng(1))
    assert again.sample(np.random.default_rng(1)) == c


@pytest.mark.parametrize(
    "definition, words",
    [
        ({"lr": hp.uniform(1.0, 0.1)}, ["'lr'", "low", "below high"]),
        ({"lr": hp.loguniform(0.0, 1.0)}, ["'lr'", "log", "low > 0"]),
        ({"n": hp.randint(5, 2)}, ["'n'", "below high"]),
        ({"n": hp.randint(1.5, 4)}, ["'n'", "int"]),
        ({"act": hp.choice([])}, ["'act'", "at least one option"]),
        ({"opt": {"fn": {1, 2}}}, ["'opt/fn'", "unknown type", "hp.uniform"]),
        ({"x": hp.uniform(0.0, float("nan"))}, ["'x'", "finite"]),
        ({}, ["empty"]),
    ],
)
def test_bad_definitions_name_the_parameter(definition, words):
    with pytest.raises(SpaceError) as e:
        Space(definition)
    for w in words:
        assert w in str(e.value)


def test_choice_rejects_a_string():
    with pytest.raises(SpaceError, match="list of options"):
        hp.choice("abc")


def test_validate_config_names_the_offender():
    space = Space({"lr": hp.uniform(0.1, 1.0)})
    with pytest.raises(SpaceError, match="'lr'.*outside"):
        space.validate_config({"lr": 2.0})
    with pytest.raises(SpaceError, match="no value for parameter 'lr'"):
        space.validate_config({})


# --- issue 19 ------------------------------------------------------------------------------


class _Shapes(hp.Trainable):
    """Records the type of the tuple constant that setup and apply receive."""

    seen: list = []

    def setup(self, config):
        _Shapes.seen.append(("setup", config["nest"]["t"], config["l"]))
        self.total = 0.0

    def apply(self, config):
        _Shapes.seen.append(("apply", config["nest"]["t"], config["l"]))

    def train(self):
        self.total += 1.0
        return {"score": self.total}

    def save(self):
        return self.total

    def load(self, state):
        self.total = state


def test_a_tuple_constant_reaches_the_trainable_as_a_tuple_on_run_and_resume(tmp_path):
    """Issue 19, item 6: the guide promises tuples; they came as lists."""
    space = {"nest": {"t": (7, 8)}, "l": [1, 2], "lr": hp.uniform(0.1, 1.0)}
    assert Space(space).sample(np.random.default_rng(0))["nest"]["t"] == (7, 8)
    db = tmp_path / "r.db"

    class Stop(hp.callbacks.Callback):
        def on_events(self, events, pop):
            if all(m.step >= 4 for m in pop.members.values()):
                raise KeyboardInterrupt

    kw = dict(metric="score", population=3, workers=2, ready=2, seed=0, backend="simulated")
    _Shapes.seen = []
    with pytest.raises(KeyboardInterrupt):
        hp.run(_Shapes, space, budget=8, storage=db, progress=False, callbacks=[Stop()], **kw)
    res = hp.resume(db, _Shapes, progress=False)
    assert [m.step for m in res.members] == [8, 8, 8]
    assert {k for k, _, _ in _Shapes.seen} == {"setup", "apply"}
    assert all(type(t) is tuple and t == (7, 8) for _, t, _ in _Shapes.seen)
    assert all(type(x) is list and x == [1, 2] for _, _, x in _Shapes.seen)
    assert all(m.config["nest"]["t"] == (7, 8) for m in hp.Result.load(db).members)
    assert isinstance(Space.from_dict(Space(space).to_dict())["nest/t"].value, tuple)


@pytest.mark.parametrize("options", [[1, 1], ["a", "b", "a"], [(1, 2), (1, 2)]])
def test_a_choice_with_a_repeated_option_is_refused(options):
    with pytest.raises(SpaceError, match=r"option .* is given twice .*give each option once"):
        hp.choice(options)


def test_options_equal_across_types_are_not_duplicates():
    assert hp.choice([1, 1.5, True]).options == (1, 1.5, True)


def test_a_choice_of_equal_options_of_other_types_keeps_each_option() -> None:
    # False == 0 in Python, yet choice([False, 0]) holds two options: the value of each type
    # maps to its own option and back
    space = Space({"a": hp.choice([False, 0])})
    for value in (False, 0):
        back = space.from_unit(space.to_unit({"a": value}))["a"]
        assert back == value and type(back) is type(value)
