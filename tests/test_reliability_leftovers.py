"""Small reliability defects: each test failed before its fix."""

from __future__ import annotations

import pytest
from reliability_trainables import Walker

import hyperpop as hp
from hyperpop.space import Space, SpaceError
from hyperpop.store.requests import RequestLog

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


# --- the dashboard's steer endpoint: a member id is an int, not a bool or a float ----------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A small finished run's store (simulated backend: no processes)."""
    db = tmp_path_factory.mktemp("steer") / "run.db"
    hp.run(
        Walker,
        {"lr": 0.5},
        metric="score",
        population=2,
        budget=2,
        storage=db,
        backend="simulated",
    )
    return db


def _post(db, **kw):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from hyperpop.dashboard.app import create_app

    with TestClient(create_app(db, token="t"), base_url="http://localhost") as client:
        return client.post("/api/request", headers={"X-Hyperpop-Token": "t"}, **kw)


@pytest.mark.parametrize(
    ("member", "shown"), [(True, "True"), (False, "False"), (1.7, "1.7"), (1.0, "1.0")]
)
def test_the_dashboard_refuses_a_member_that_is_not_an_int(finished_run, member, shown):
    body = {"kind": "pin", "member": member, "data": {"pinned": True}}
    r = _post(finished_run, json=body)
    assert r.status_code == 400
    assert r.json() == {"error": f"a request's member must be an int, got {shown}"}
    assert RequestLog(finished_run).read() == []


@pytest.mark.parametrize(
    ("kind", "data", "error"),
    [
        ("add", {"count": True}, "count (members to add) must be an int, got True"),
        ("workers", {"workers": 2.0}, "workers (members training at once) must be an int, got 2.0"),
        (
            "budget",
            {"budget": [{"type": "steps", "n": True}]},
            "a steps budget's n must be an int, got True",
        ),
    ],
)
def test_the_dashboard_refuses_other_numbers_that_are_not_ints(finished_run, kind, data, error):
    r = _post(finished_run, json={"kind": kind, "data": data})
    assert r.status_code == 400 and r.json() == {"error": error}


def test_the_dashboard_refuses_a_bool_donor(finished_run):
    body = {"kind": "copy", "member": 0, "data": {"donor": True}}
    r = _post(finished_run, json=body)
    assert r.status_code == 400
    assert r.json() == {"error": "donor (the member to copy) must be an int, got True"}


def test_a_form_member_is_read_as_a_whole_number_only(finished_run):
    form = {"token": "t", "kind": "pin", "member": "1.7", "data": '{"pinned": true}'}
    r = _post(finished_run, data=form)
    assert r.status_code == 400
    assert r.json()["error"].startswith("a request's member must be an int, got '1.7'")
    # a whole number reaches the request's other checks (here: no driver writes the store)
    r = _post(finished_run, data={**form, "member": "1"})
    assert r.status_code == 400 and "no driver is writing" in r.json()["error"]
