"""The quality benchmark's cheap tasks: their references, their noise, its compute accounting."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from hyperpop.userfile import load_file

ROOT = Path(__file__).resolve().parents[1]


def _example(name: str):
    return load_file(ROOT / "examples" / f"{name}.py").module


def _bench():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("quality")


def test_deceptive_linear_schedule_beats_every_constant_and_greedy_loses():
    d = _example("deceptive")
    linear = d.linear_score()
    constants = [d.score([h]) for h in (0.1, 0.3, 0.5, 0.7, 0.9, 1.1)]
    assert 1.12 < linear < 1.13
    assert max(constants) < 1.03 < linear
    assert d.greedy_score() < max(constants)  # greedy schedules end below the best constant
    m = d.Deceptive()
    m.setup({"h": 1.0})
    for step in range(d.HORIZON):  # the linear schedule is never charged
        m.apply({"h": d.target(step)})
        m.train()
    assert m.penalty == pytest.approx(0.0, abs=1e-12)


def test_pbt_function_noise_depends_on_state_not_config_and_goes_on_after_a_restore():
    p = _example("pbt_function")
    a, b = p.PBTFunction(), p.PBTFunction()
    a.setup({"lr": 0.001})
    b.setup({"lr": 0.015})
    assert a._draws() == b._draws()  # same state, other config: the same noise
    for _ in range(7):
        a.train()
    state = a.save()
    c = p.PBTFunction()
    c.setup({"lr": 0.015})  # a restart as Ray Tune makes one: fresh setup, then the checkpoint
    c.load(state)
    c.apply({"lr": 0.001})
    fresh = p.PBTFunction()
    fresh.setup({"lr": 0.001})
    assert c._draws() == a._draws() != fresh._draws()  # no replay of the stream's start
    assert [c.train() for _ in range(3)] == [a.train() for _ in range(3)]


def test_anytime_curve_counts_executed_steps_and_picks_the_best_latest_report():
    q = _bench()
    records = [
        {"member": 0, "score": 1.0},
        {"member": 1, "score": 3.0},
        {"member": 1, "score": 0.5},  # member 1's latest report is worse now
        {"member": 0, "score": 2.0},
    ]
    short = q.anytime(records, "max", nominal=4)
    k = q.CURVE_POINTS // 4  # nominal 4 steps: a quarter of the points per step executed
    assert short == [1.0] * k + [3.0] * k + [1.0] * k + [2.0] * k
    longer = q.anytime(records, "max", nominal=8)  # half the nominal compute executed
    assert longer[-1] == 2.0 and len(longer) == q.CURVE_POINTS
    run = {"curve": short, "nominal": 4, "executed": 4, "score": 2.0}
    assert q.matched(run, 2) == 3.0 and q._at_matched(run, 1) == 1.0
    assert q._at_matched(run, 8) == 2.0


def test_quality_runs_the_cheap_tasks_in_process_with_ceilings(capsys):
    pytest.importorskip("scipy")
    rows = _bench().main(
        ["--smoke", "--tasks", "deceptive,pbt_function,delayed", "--methods", "async,random",
         "--seeds", "2"]
    )  # fmt: skip
    assert {(r["task"], r["method"]) for r in rows} == {
        (t, m) for t in ("deceptive", "pbt_function", "delayed") for m in ("async", "random")
    }
    random = [r for r in rows if r["method"] == "random"]
    assert all(r["executed"] == r["nominal"] for r in random)  # nobody copies, nothing skipped
    out = capsys.readouterr().out
    assert "deceptive: ceiling (linear schedule)" in out and "delayed: ceiling" in out
    assert "at matched compute" in out
