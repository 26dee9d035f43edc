"""Small reliability defects: each test failed before its fix."""

from __future__ import annotations

import pytest

import hyperpop as hp
from hyperpop.space import Space, SpaceError

# --- a bool is not a number in the search space ------------------------------------------


@pytest.mark.parametrize(
    "param",
    [
        lambda: hp.uniform(True, 5.0),
        lambda: hp.uniform(0.0, True),
        lambda: hp.loguniform(1e-3, True),
        lambda: hp.randint(False, 5),
        lambda: hp.qloguniform(1, True),
    ],
)
def test_bool_bounds_are_refused_with_the_fix(param):
    with pytest.raises(SpaceError) as e:
        Space({"x": param()})
    msg = str(e.value)
    assert "'x'" in msg and "bool" in msg and "\n" not in msg
    assert "write a number" in msg


def test_a_bool_value_for_a_float_or_int_is_refused():
    space = Space({"lr": hp.uniform(0.0, 2.0), "n": hp.randint(0, 3), "k": hp.choice([1, 2])})
    config = {"lr": 0.5, "n": 1, "k": 2}
    for key in ("lr", "n", "k"):
        with pytest.raises(SpaceError, match=rf"parameter '{key}': True is a bool"):
            space.merge(config, {key: True})
        with pytest.raises(SpaceError, match=rf"parameter '{key}': False is a bool"):
            space.validate_config({**config, key: False})
    # a number where a number is meant still passes (an int for a real number too)
    assert space.merge(config, {"lr": 1, "n": 2, "k": 1}) == {"lr": 1.0, "n": 2, "k": 1}


def test_a_choice_of_bools_still_takes_bools():
    space = Space({"nesterov": hp.choice([True, False]), "mixed": hp.choice([0, False])})
    config = {"nesterov": True, "mixed": 0}
    assert space.merge(config, {"nesterov": False, "mixed": False}) == {
        "nesterov": False,
        "mixed": False,
    }
    space.validate_config({"nesterov": False, "mixed": False})


def _never_trained(config, checkpoint):
    raise AssertionError("the run must be refused before any training")


def test_a_bool_initial_config_is_refused():
    with pytest.raises(SpaceError, match=r"'lr': True is a bool"):
        hp.run(
            _never_trained,
            {"lr": hp.uniform(0.0, 2.0)},
            metric="m",
            population=2,
            configs=[{"lr": True}],
            budget=hp.Steps(1),
            storage=None,
        )
