"""Property-based tests (hypothesis) of the search space and of the fold.

* The space: whatever the parameters (bounds up to the largest finite floats, log scales,
  integers, choices of numbers, strings, tuples and None, constants, nesting), sample, perturb
  and resample stay inside the bounds; the unit-cube mapping goes there and back; a space and a
  config survive the run's log (JSON) unchanged, tuples included.
* The fold: any sequence of valid events (reports with NaN and infinite scores, checkpoints,
  exploits, explores, rejuvenations, failures, finishes, resumes) folds to the same population
  in memory as after a trip through the SQLite store, the memory store, or read in pieces as
  the live view and the dashboard read it.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperpop as hp
from hyperpop.population import Population
from hyperpop.space import Choice, Float, Int, Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event, decode_data, encode_data
from hyperpop.store.sqlite import MemoryStore, SQLiteStore

FAST = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# --- the search space --------------------------------------------------------------------

BIG = 1e308
finite = st.floats(min_value=-BIG, max_value=BIG, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


@st.composite
def float_params(draw) -> Float:
    log = draw(st.booleans())
    a, b = draw(positive if log else finite), draw(positive if log else finite)
    if a == b:
        b = a * 2 if log else (a + 1.0 if abs(a) < 1e300 else -a)
    lo, hi = sorted((a, b))
    if lo == hi:  # e.g. a and -a both zero
        lo, hi = -1.0, 1.0
    return hp.loguniform(lo, hi) if log else hp.uniform(lo, hi)


@st.composite
def int_params(draw) -> Int:
    # Ranges up to 2**40 values: the unit-cube buckets of wider ranges are finer than a float's
    # precision (a documented limit of mapping integers through [0, 1]).
    log = draw(st.booleans())
    if log:
        lo = draw(st.integers(1, 2**40 - 1))
        hi = draw(st.integers(lo + 1, 2**40))
        return hp.qloguniform(lo, hi)
    lo = draw(st.integers(-(2**40), 2**40 - 1))
    hi = draw(st.integers(lo + 1, min(lo + 2**40, 2**40)))
    return hp.randint(lo, hi)


scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False),
    st.text(max_size=5),
)
option = st.one_of(scalar, st.tuples(scalar, scalar), st.lists(scalar, max_size=2))


def _same_option(o: object) -> object:
    """What choice() compares options by: the same type and equal values (lists as tuples)."""
    return (type(o), tuple(o) if isinstance(o, list) else o)


# choice() refuses an option given twice, so the options drawn are distinct
choice_params = st.lists(option, min_size=1, max_size=6, unique_by=_same_option).map(
    lambda xs: hp.choice(xs)
)
constants = st.one_of(scalar, st.lists(scalar, max_size=3))
parameters = st.one_of(float_params(), int_params(), choice_params, constants)
names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)


@st.composite
def spaces(draw) -> Space:
    d: dict[str, Any] = draw(st.dictionaries(names, parameters, min_size=1, max_size=5))
    if draw(st.booleans()):
        d["nest"] = draw(st.dictionaries(names, parameters, min_size=1, max_size=3))
    return Space(d)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types, recursively (a tuple is not a list, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@FAST
@given(
    space=spaces(),
    seed=st.integers(0, 2**32 - 1),
    factors=st.lists(st.floats(0.01, 100.0), min_size=1, max_size=3),
    p=st.floats(0.0, 1.0),
)
def test_sample_perturb_and_resample_stay_in_bounds(space, seed, factors, p):
    rng = np.random.default_rng(seed)
    config = space.sample(rng)
    space.validate_config(config)
    for _ in range(3):
        config = space.perturb(config, rng, factors=factors, resample_probability=p)
        space.validate_config(config)
        for path, value in space.flatten(config).items():
            if isinstance(space[path], Float):
                assert math.isfinite(value)


def _forward(param: Float, v: float) -> float:
    # the space's own scale: a log range too narrow for the logarithm to tell its ends apart
    # maps linearly
    log = param.log and math.log(param.low) < math.log(param.high)
    return math.log(v) if log else v


@FAST
@given(space=spaces(), seed=st.integers(0, 2**32 - 1))
def test_the_unit_cube_round_trip(space, seed):
    rng = np.random.default_rng(seed)
    config = space.sample(rng)
    u = space.to_unit(config)
    assert u.shape == (len(space.searchable),) and np.all((u >= 0) & (u <= 1))
    back = space.from_unit(u)
    space.validate_config(back)
    flat, flat_back = space.flatten(config), space.flatten(back)
    for path, param in space.parameters.items():
        if isinstance(param, Float):
            lo, hi = _forward(param, param.low), _forward(param, param.high)
            tol = 1e-9 * (abs(lo) + abs(hi)) + 1e-300
            assert abs(_forward(param, flat_back[path]) - _forward(param, flat[path])) <= tol
        else:  # integers, choices and constants come back exactly
            assert same(flat_back[path], flat[path]), path
    # and from the cube: a point maps into the space and back near itself (floats), into the
    # same bucket (integers, choices: the same value again)
    point = rng.random(len(space.searchable))
    there = space.from_unit(point)
    again = space.to_unit(there)
    assert same(space.from_unit(again), there) or any(
        isinstance(space[p], Float) for p in space.searchable
    )
    for x, y, path in zip(point, again, space.searchable):
        param = space[path]
        if isinstance(param, Float):  # up to the floats' own spacing inside the range
            lo, hi = _forward(param, param.low), _forward(param, param.high)
            spacing = 4 * max(math.ulp(lo), math.ulp(hi)) / (hi - lo)
            assert abs(x - y) <= spacing + 1e-9
        elif isinstance(param, Choice) and len(set(map(repr, param.options))) == len(
            param.options
        ):  # distinct options: the centre of the point's own bucket
            assert abs(x - y) <= 0.5 / len(param.options) + 1e-12
        elif isinstance(param, Int) and not param.log:
            assert abs(x - y) <= 0.5 / (param.high - param.low + 1) + 1e-9
    flat_there, flat_again = space.flatten(there), space.flatten(space.from_unit(again))
    for path, param in space.parameters.items():
        if not isinstance(param, Float):
            assert same(flat_again[path], flat_there[path]), path


@FAST
@given(space=spaces(), seed=st.integers(0, 2**32 - 1))
def test_a_space_and_its_configs_survive_the_log(space, seed):
    logged = decode_data(encode_data({"space": space.to_dict()}))["space"]
    again = Space.from_dict(logged)
    assert same(again.to_dict(), space.to_dict())
    a = space.sample(np.random.default_rng(seed))
    b = again.sample(np.random.default_rng(seed))
    assert same(a, b)
    assert same(decode_data(encode_data({"config": a}))["config"], a)
    again.validate_config(decode_data(encode_data({"config": a}))["config"])


# --- the fold ----------------------------------------------------------------------------

SPACE = Space(
    {
        "lr": hp.loguniform(1e-4, 1e-1),
        "kernel": hp.choice([(3, 3), (5, 5), None]),
        "opt": {"name": hp.choice(["sgd", "adam"]), "momentum": hp.uniform(0.0, 0.99)},
    }
)
scores = st.one_of(
    st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf]), st.none()
)
metrics = st.dictionaries(
    st.sampled_from(["loss", "acc", "shape", "note"]),
    st.one_of(scores, st.tuples(st.integers(0, 9), st.integers(0, 9)), st.text(max_size=3)),
    max_size=3,
)


@st.composite
def runs(draw) -> list[Event]:
    """A valid event log, drawn step by step against the fold it builds (as a driver would)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = [1000.0]

    def at() -> float:
        t[0] += draw(st.floats(0.0, 5.0))
        return t[0]

    settings_ = {
        "metric": "score",
        "mode": draw(st.sampled_from(["max", "min"])),
        "score_window": draw(st.integers(1, 3)),
    }
    n = draw(st.integers(1, 5))
    events = [Event(ev.RUN_STARTED, None, {"settings": settings_, "space": SPACE.to_dict()}, at())]
    events += [Event(ev.MEMBER_CREATED, i, {"config": SPACE.sample(rng)}, at()) for i in range(n)]
    pop = Population.from_events(events)
    blobs = 0
    for _ in range(draw(st.integers(0, 40))):
        alive = sorted(m.id for m in pop.alive())
        op = draw(
            st.sampled_from(
                ["train", "train", "train", "exploit", "explore", "rejuvenate", "fail", "finish"]
                + ["resume", "end"]
            )
        )
        new: list[Event] = []
        if op in ("resume", "end") or not alive:
            new = [
                Event(ev.RUN_FINISHED, None, {"reason": "budget"}, at())
                if op == "end"
                else Event(ev.RUN_RESUMED, None, {"pid": 1}, at())
            ]
        else:
            m = pop.members[draw(st.sampled_from(alive))]
            if op == "train":
                for k in range(draw(st.integers(1, 3))):
                    data = {"step": m.step + k + 1, "score": draw(scores), "metrics": draw(metrics)}
                    new.append(Event(ev.REPORTED, m.id, data, at()))
                blobs += 1
                data = {"step": m.step + len(new), "checkpoint": f"b{blobs}"}
                new.append(Event(ev.CHECKPOINTED, m.id, data, at()))
            elif op == "exploit":
                donors = [d for d in pop.members.values() if d.checkpoint and d.id != m.id]
                if not donors:
                    continue
                d = draw(st.sampled_from(sorted(donors, key=lambda x: x.id)))
                data = {"donor": d.id, "step": d.checkpoint_step, "checkpoint": d.checkpoint}
                new = [Event(ev.EXPLOITED, m.id, {**data, "at": m.step}, at())]
                cfg = SPACE.perturb(pop.blobs[d.checkpoint].config, rng)
                new.append(Event(ev.EXPLORED, m.id, {"config": cfg, "how": "perturb"}, at()))
            elif op == "explore":
                cfg = SPACE.perturb(m.config, rng)
                new = [Event(ev.EXPLORED, m.id, {"config": cfg, "old_config": m.config}, at())]
            elif op == "rejuvenate":
                cfg = SPACE.sample(rng)
                new = [Event(ev.REJUVENATED, m.id, {"config": cfg, "at": m.step}, at())]
            elif op == "fail":
                data = {"step": m.step, "error": "boom", "fatal": draw(st.booleans())}
                new = [Event(ev.FAILED, m.id, data, at())]
            else:
                new = [Event(ev.FINISHED, m.id, {"step": m.step, "reason": "budget"}, at())]
        pop.extend(new)
        pop.drain_dead()  # as the driver does after each write
        events += new
    return events


def snapshot(pop: Population) -> dict[str, Any]:
    """Everything the fold exposes, in comparable form."""
    return {
        "members": {i: asdict(m) for i, m in sorted(pop.members.items())},
        "edges": pop.edges,
        "counters": (pop.reports, pop.failures, pop.resumes, pop.finished, pop.finish_reason),
        "times": (pop.started, pop.ended, pop.last_seq, pop.active_seconds_before),
        "settings": (pop.settings, pop.space),
        "live": sorted(pop.live_checkpoints()),
        "blobs": {b: asdict(pop.blobs[b]) for b in sorted(pop.live_checkpoints())},
        "best": None if pop.best() is None else pop.best().id,
        "index": {  # every column the ready index exposes
            name: np.asarray(getattr(pop.index, name)).tolist()
            for name, attr in vars(type(pop.index)).items()
            if isinstance(attr, property)
        },
    }


@settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(events=runs(), cuts=st.lists(st.integers(1, 10), min_size=1, max_size=8))
def test_any_valid_log_folds_the_same_after_the_store(events, cuts):
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "r.db", write=True)
        memory = MemoryStore()
        i = 0
        for c in cuts * (len(events) // max(1, sum(cuts)) + 1):  # written in batches
            batch = events[i : i + c]
            if not batch:
                break
            store.append(batch)
            memory.append([Event(e.kind, e.member, e.data, e.time) for e in batch])
            i += c
        direct = snapshot(Population.from_events(events))  # the driver's in-memory fold
        from_disk = Population.from_events(store.read())
        assert same(snapshot(from_disk), direct)
        assert same(snapshot(Population.from_events(memory.read())), direct)
        live = Population()  # read in pieces, as the live view and the dashboard do
        seen = 0
        for c in cuts:
            new = store.read(after=seen)[:c]
            live.extend(new)
            seen = new[-1].seq if new else seen
        live.extend(store.read(after=seen))
        assert same(snapshot(live), direct)
        reader = SQLiteStore(Path(tmp) / "r.db")  # a second process's read-only view
        assert same(snapshot(Population.from_events(reader.read())), direct)
        reader.close()
        store.close()


def test_a_window_of_infinite_or_huge_scores_folds():
    """Found by the property above: +inf and -inf in one score window crashed the fold (and so
    resume, status and the dashboard) with fsum's ValueError; huge finite scores overflowed."""
    for reports, expect in (([math.inf, -math.inf], math.nan), ([1e308, 1e308], 1e308)):
        events = [
            Event(ev.RUN_STARTED, None, {"settings": {"score_window": 2}}, 1.0),
            Event(ev.MEMBER_CREATED, 0, {"config": {}}, 1.0),
        ]
        events += [
            Event(ev.REPORTED, 0, {"step": i + 1, "score": s}, 2.0) for i, s in enumerate(reports)
        ]
        events.append(Event(ev.CHECKPOINTED, 0, {"step": 2, "checkpoint": "b"}, 3.0))
        m = Population.from_events(events).members[0]
        assert same(m.ready_score, expect)
