"""The strategies ablation benchmark runs end to end in a tiny size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cloudpickle
import pytest

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "strategies.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_strategies", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    cloudpickle.register_pickle_by_value(mod)  # worker processes cannot import it by name
    return mod


def test_delayed_rewards_a_schedule_that_looks_worse_first():
    """The second problem is one where the greedy choice is wrong in the long run."""
    mod = _load()
    steps = mod.PROBLEMS["delayed"]["steps"]
    r = mod.delayed_reference(steps)
    # High-then-low e beats every fixed e by far, and fixed e beats the greedy schedule ...
    assert r["schedule"] > 1.5 * r["fixed"] > 1.5 * r["greedy"]
    # ... although it trails the best fixed e for a long stretch (it is 0 while e is high).
    assert r["at_switch"][0] < r["at_switch"][1]
    assert r["trails_until"] >= steps // 3
    # The target is out of reach of any fixed e (random and grid search) but not of a schedule.
    assert r["fixed"] < mod.PROBLEMS["delayed"]["target"] < r["schedule"]


def test_strategies_smoke(capsys):
    mod = _load()
    table = mod.main(
        [
            "--smoke",
            "--variants",
            "truncation+perturb",
            "ttest+perturb",
            "truncation+pb2",
            "grid search",
        ]
    )
    out = capsys.readouterr().out
    cost = table.pop("cost")
    assert set(table) == {"toy", "delayed"}
    for rows in table.values():
        assert set(rows) == {"truncation+perturb", "ttest+perturb", "truncation+pb2", "grid search"}
        for row in rows.values():
            assert row["final"][0] == row["final"][0]  # a number, not NaN
    assert "| truncation+pb2" in out and "PB2 cost per decision" in out
    assert "reference: schedule e = 1 for" in out and "reference: best fixed h" in out
    # PB2's cost at scale, beside truncation+perturb, in both modes
    assert set(cost) == {"async perturb", "async pb2", "sync perturb", "sync pb2"}
    for mode in ("async", "sync"):
        pb2 = cost[f"{mode} pb2"]
        assert pb2["ready_points"] == cost[f"{mode} perturb"]["ready_points"] == 20
        assert pb2["decisions"] and len(pb2["observations"]) == len(pb2["decisions"])
        assert 0 < pb2["tunes"] <= pb2["fits"]
        assert f"| {mode:<5} | pb2 " in out and f"| {mode:<5} | perturb " in out
    assert "## PB2's cost" in out and "by quarter of its observations" in out
