"""The strategies ablation benchmark runs end to end in a tiny size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cloudpickle
import pytest

pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "strategies.py"


def test_strategies_smoke(capsys):
    spec = importlib.util.spec_from_file_location("bench_strategies", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    cloudpickle.register_pickle_by_value(mod)  # worker processes cannot import it by name
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
    assert set(table) == {"toy", "delayed"}
    for rows in table.values():
        assert set(rows) == {"truncation+perturb", "ttest+perturb", "truncation+pb2", "grid search"}
        for row in rows.values():
            assert row["final"][0] == row["final"][0]  # a number, not NaN
    assert "| truncation+pb2" in out and "PB2 cost per decision" in out
