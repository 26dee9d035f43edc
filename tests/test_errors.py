"""Bad input and hostile conditions (issue 10, items 6-13): each refused or survived with one
clear line that names the problem and the fix, and nothing recorded lost."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hyperpop as hp
from hyperpop.space import Space, SpaceError
from hyperpop.store import events as ev
from hyperpop.store.events import Event, decode_data, encode_data
from hyperpop.store.sqlite import SQLiteStore, StoreError

ROOT = Path(__file__).resolve().parents[1]


def hyperpop(*args, cwd=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "hyperpop", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The CLI failed with exactly one line on stderr and no traceback; returns that line."""
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    lines = [x for x in lines if not x.startswith("hyperpop: running ")]  # the run's banner
    assert len(lines) == 1, out.stderr
    return lines[0]


class Shaped(hp.Trainable):
    """Fails unless its config holds the exact tuple it was given (as a model would)."""

    def setup(self, config):
        self.total = 0.0
        self.apply(config)

    def apply(self, config):
        if not isinstance(config["kernel"], tuple) or config["kernel"] not in ((3, 3), (5, 5)):
            raise TypeError(f"kernel must be a tuple, got {config['kernel']!r}")
        self.lr = config["lr"]

    def train(self):
        self.total += self.lr
        return {"score": self.total}

    def save(self):
        return self.total

    def load(self, state):
        self.total = state


# --- 6. choice values that JSON cannot round-trip -----------------------------------------


def test_tuple_choices_come_back_exact_after_resume(tmp_path):
    db = tmp_path / "r.db"
    space = {"kernel": hp.choice([(3, 3), (5, 5)]), "lr": hp.uniform(0.1, 1.0)}
    seen = []

    def stop_midway(pop):
        seen.append(1)
        if sum(m.step for m in pop.members.values()) >= 8:
            raise KeyboardInterrupt

    kw = dict(metric="score", population=4, workers=1, budget=hp.Steps(8), ready=2, seed=3)
    with pytest.raises(KeyboardInterrupt):
        hp.run(Shaped, space, storage=db, progress=stop_midway, **kw)
    res = hp.resume(db, Shaped)
    assert [e for e in res.events if e.kind == "failed"] == []
    assert all(m.step == 8 for m in res.members)
    for m in hp.Result.load(db).members:
        assert isinstance(m.config["kernel"], tuple)
    explored = [e for e in res.events if e.kind == "explored"]
    assert explored and all(isinstance(e.data["config"]["kernel"], tuple) for e in explored)


def test_a_tuple_survives_the_log_and_a_list_stays_a_list():
    data = {"config": {"k": (3, (1, 2)), "l": [1, 2], "d": {"t": ()}}, "x": math.inf}
    back = decode_data(encode_data(data))
    assert back == data and isinstance(back["config"]["k"], tuple)
    assert isinstance(back["config"]["k"][1], tuple) and isinstance(back["config"]["l"], list)
    assert isinstance(back["config"]["d"]["t"], tuple)
    space = Space({"k": hp.choice([(3, 3), (5, 5)]), "c": hp.choice([[1], {"a": (1,)}])})
    again = Space.from_dict(decode_data(encode_data({"s": space.to_dict()}))["s"])
    assert again["k"].options == ((3, 3), (5, 5)) and again["c"].options == ([1], {"a": (1,)})


@pytest.mark.parametrize(
    "options",
    [[int, float], [np.zeros(2), np.ones(2)], [object()], [lambda x: x], [{1, 2}], [math.nan]],
)
def test_choices_that_cannot_be_stored_are_refused_when_defined(options):
    with pytest.raises(SpaceError, match="cannot be stored in the run's log.*choice\\(\\['adam'"):
        hp.choice(options)
    from hyperpop.space import Choice

    with pytest.raises(SpaceError, match="parameter 'opt': option .* cannot be stored"):
        Space({"opt": Choice(tuple(options))})


def test_numpy_options_become_plain_values():
    p = hp.choice([np.int64(16), np.float32(0.5), np.str_("a")])
    assert p.options == (16, 0.5, "a") and type(p.options[0]) is int


# --- 11. unknown keys in initial configs --------------------------------------------------


def test_a_typo_in_an_initial_config_is_refused_naming_the_key(tmp_path):
    db = tmp_path / "r.db"
    space = {"lr": hp.uniform(0.1, 1.0), "opt": {"momentum": hp.uniform(0.0, 0.9)}}
    for bad, key in (({"lrr": 0.5}, "'lrr'"), ({"opt": {"momentun": 0.5}}, "'opt/momentun'")):
        with pytest.raises(SpaceError, match=f"{key} is not in the search space") as info:
            hp.run(Shaped, space, metric="score", configs=[bad], storage=db)
        assert "'lr', 'opt/momentum'" in str(info.value)
        assert not db.exists()


def test_initial_configs_may_be_partial_nested_or_whole_dict_options():
    from hyperpop.run import _initial_configs

    space = Space(
        {
            "lr": hp.uniform(0.1, 1.0),
            "opt": {"momentum": hp.uniform(0.0, 0.9), "name": "sgd"},
            "arch": hp.choice([{"depth": 2}, {"depth": 4}]),
        }
    )
    cfgs = _initial_configs(
        space, 3, [{"lr": 0.5}, {"opt": {"momentum": 0.25}}, {"arch": {"depth": 4}}], 0
    )
    assert cfgs[0]["lr"] == 0.5 and cfgs[1]["opt"] == {"momentum": 0.25, "name": "sgd"}
    assert cfgs[2]["arch"] == {"depth": 4}


# --- 12. ranges as wide as the floats allow -----------------------------------------------


def test_the_widest_uniform_range_samples_over_the_whole_range():
    p = hp.uniform(-1e308, 1e308)
    Space({"x": p})  # valid
    rng = np.random.default_rng(0)
    xs = np.array([p.sample(rng) for _ in range(2000)])
    assert np.all(np.isfinite(xs)) and np.all((xs >= -1e308) & (xs <= 1e308))
    assert (xs < 0).mean() == pytest.approx(0.5, abs=0.05)
    assert np.quantile(xs, 0.25) == pytest.approx(-5e307, rel=0.15)
    assert len(set(xs.tolist())) == len(xs)
    assert p.to_unit(0.0) == pytest.approx(0.5) and p.to_unit(5e307) == pytest.approx(0.75)
    assert p.from_unit(0.25) == pytest.approx(-5e307) and p.from_unit(0.5) == pytest.approx(0.0)
    moved = p.perturb(0.0, 1.2, rng)
    assert moved == pytest.approx(4e307) and p.perturb(0.0, 0.8, rng) == pytest.approx(-4e307)
    assert p.perturb(9e307, 1.2, rng) == 1e308  # clipped at the bound, never inf


# --- 9. resume on a mistyped path ---------------------------------------------------------


def test_resume_on_a_mistyped_path_refuses_without_writing(tmp_path):
    missing = tmp_path / "typo" / "toy.db"
    out = hyperpop("resume", missing)
    line = one_line_error(out)
    assert "no hyperpop store" in line and "check the path" in line
    assert not (tmp_path / "typo").exists()
    with pytest.raises(StoreError, match="no hyperpop store"):
        hp.resume(missing)
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="not a hyperpop store"):
        hp.resume(empty)
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


# --- 10. bad settings on the command line: one line each ----------------------------------

JOB = """
import hyperpop as hp


class Job(hp.Trainable):
    def setup(self, config):
        self.x = 0.0

    def apply(self, config):
        pass

    def train(self):
        self.x += 1.0
        return {{"score": self.x}}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


trainable = Job
space = {{"lr": hp.uniform(0.1, 1.0)}}
settings = dict(metric="score", population=2, workers=1, {extra})
"""


def job(tmp_path, extra=""):
    f = tmp_path / "job.py"
    f.write_text(JOB.format(extra=extra if "budget" in extra else f"budget=2, {extra}"))
    return f


@pytest.mark.parametrize(
    "extra, args, expect",
    [
        ("", ["-p", "0"], "population must be a positive int"),
        ("", ["-w", "0"], "workers must be a positive int"),
        ("mode='maximize'", [], "mode must be 'max' or 'min', got 'maximize'"),
        ("ready=-1", [], "must be a positive int, got -1"),
        ("exploit='truncate'", [], "unknown exploit strategy 'truncate'"),
        ("explore='perturbb'", [], "unknown explore strategy 'perturbb'"),
        ("backend='rey'", [], "unknown backend 'rey'"),
        ("ready='often'", [], "ready must be an int (steps) or hp.Ready"),
        ("budget=[10]", [], "budget entries must be hp.Steps"),
    ],
)
def test_bad_settings_are_one_line_on_the_command_line(tmp_path, extra, args, expect):
    db = tmp_path / "r.db"
    line = one_line_error(hyperpop("run", job(tmp_path, extra), "-s", db, "-q", *args))
    assert expect in line
    assert not db.exists() and not (tmp_path / "r.ckpt").exists()


def test_workers_zero_is_refused_in_python_too():
    with pytest.raises(ValueError, match="workers must be a positive int.*got 0"):
        hp.run(Shaped, {"lr": hp.uniform(0.1, 1.0)}, metric="score", workers=0)


def test_a_stored_run_tells_cli_users_about_overwrite(tmp_path):
    db = tmp_path / "r.db"
    f = job(tmp_path)
    assert hyperpop("run", f, "-s", db, "-q").returncode == 0
    line = one_line_error(hyperpop("run", f, "-s", db, "-q"))
    assert "already holds a run" in line and "--overwrite" in line
    assert "overwrite=True" not in line and f"hyperpop resume {db}" in line
    with pytest.raises(StoreError, match="overwrite=True"):
        hp.run(Shaped, {"lr": hp.uniform(0.1, 1.0)}, metric="score", storage=db)


def test_best_before_any_report_is_one_line(tmp_path):
    db = tmp_path / "r.db"
    store = SQLiteStore(db, write=True)
    store.append(
        [
            Event(ev.RUN_STARTED, None, {"settings": {"metric": "score", "mode": "max"}}),
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.5}}),
        ]
    )
    store.close()
    for cmd in (["best"], ["schedule"], ["best", "--format", "csv"]):
        line = one_line_error(hyperpop(*cmd, db))
        assert "no member has reported" in line and f"hyperpop status {db}" in line


# --- 13. a script without the main guard ---------------------------------------------------

NO_GUARD = """
import hyperpop as hp


class Job(hp.Trainable):
    def setup(self, config):
        self.x = 0.0

    def apply(self, config):
        pass

    def train(self):
        self.x += 1.0
        return {"score": self.x}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


hp.run(Job, {"lr": hp.uniform(0.1, 1.0)}, metric="score", population=2, workers=1,
       budget=2, storage="r.db", overwrite=True)
"""


def test_a_script_without_the_main_guard_is_explained(tmp_path):
    script = tmp_path / "noguard.py"
    script.write_text(NO_GUARD)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode != 0
    err = out.stderr
    assert "exit code None" not in err
    last = err.strip().splitlines()[-1]
    assert "worker process 0 exited at start (exit code 1)" in last
    assert 'if __name__ == "__main__":' in last and "hyperpop run" in last
    # the worker said why, in one line, without touching the parent's store
    assert "hp.run() was called while a worker process imported" in err
    assert err.count("Traceback") == 1  # the parent's only
    events = hp.Result.load(tmp_path / "r.db").events
    assert [e.kind for e in events] == ["run_started", "member_created", "member_created"]
