"""Every benchmark runs at a smoke size, so none can rot (full sizes: docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    # Imported by its own name from benchmarks/ (on sys.path, which spawned worker processes
    # inherit), so functions it sends to a process pool can be found there.
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_scale_smoke(capsys):
    rows = _load("scale").main(["--smoke"])
    assert [r["n"] for r in rows] == [10, 100]
    assert all(r["decisions_per_s"] > 0 and r["store_events_per_s"] > 0 for r in rows)
    assert "decisions/s" in capsys.readouterr().out


def test_quality_smoke(capsys, tmp_path):
    # toy and nqm need no PyTorch; Ray Tune's rows only where it imports
    pytest.importorskip("scipy")  # the Wilcoxon test and the nqm ceiling's refinement
    bench = _load("quality")
    out = tmp_path / "quality.json"
    rows = bench.main(["--smoke", "--out", str(out)])
    methods = {"async", "sync", "pb2", "resample", "mfpbt", "firepbt", "reserve", "random"}
    if _load("_raytune").have_ray_tune():
        methods.add("ray")
        # The suite's shared cluster (2 CPUs), which the benchmark's Ray runs reuse, and the Ray
        # tests after this one on this process too: not the 1-CPU one the smoke would start.
        from ray_local import local_ray

        local_ray()
    assert {(r["task"], r["method"]) for r in rows} == {
        (t, m) for t in ("toy", "nqm") for m in methods
    }
    assert all(r["seeds"] == 2 and r["q25"] <= r["median"] <= r["q75"] for r in rows)
    printed = capsys.readouterr().out
    assert "Wilcoxon" in printed and "nqm: ceiling" in printed and "score per seed" in printed
    # the saved runs print the same table without running anything
    again = bench.main(["--from", str(out)])
    assert [(r["task"], r["method"], r["median"]) for r in again] == [
        (r["task"], r["method"], r["median"]) for r in rows
    ]
    assert bench.wilcoxon_better([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1], "max") < 0.05
    assert bench.wilcoxon_better([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1], "min") > 0.95


def test_overhead_smoke(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    rows = _load("overhead").main(["--smoke"])
    assert [r["variant"] for r in rows] == ["plain loop", "hyperpop, no exploit", "hyperpop PBT"]
    assert all(0.5 < r["user_share"] <= 1.0 for r in rows[1:])
    assert "user share" in capsys.readouterr().out


def test_vs_ray_tune_smoke(capsys):
    bench = _load("vs_ray_tune")
    if not bench.have_ray_tune():  # the hyperpop side always runs
        h = bench.run_hyperpop("toy", 4, 8, workers=1)
        assert h["wall"] > 0 and -1.0 < h["score"] < 1.2
        pytest.skip("ray[tune] is not installed")
    rows = bench.main(["--smoke"])
    assert rows
    # the same run_hyperpop("toy", 4, 8, workers=1), in the child process the comparison measures
    h = rows[0]["hyperpop"]
    assert h["wall"] > 0 and -1.0 < h["score"] < 1.2
    assert rows[0]["ray"]["peak_mib"] > 0 and h["peak_mib"] > 0
    assert "wall ratio" in capsys.readouterr().out


def _old_truncation(member, ctx, quantile):
    ranked = sorted(ctx.candidates, key=lambda m: (ctx.value(m), -m.id))
    n = len(ranked)
    k = min(math.ceil(n * quantile), n // 2)
    if k == 0:
        return None
    bottom, top = ranked[:k], ranked[-k:]
    if member.id not in {m.id for m in bottom}:
        return None
    return top[int(ctx.rng.integers(len(top)))]


def test_vectorised_truncation_picks_exactly_what_sorting_picked():
    """The scale optimisation of Truncation.select keeps its choices (ties, NaN, None, min)."""
    from hyperpop.strategies.base import Context
    from hyperpop.strategies.exploit import Truncation

    r = random.Random(0)
    for trial in range(3000):
        n = r.randint(1, 25)
        cands = [
            SimpleNamespace(id=i, ready_score=r.choice([0.1, 0.2, math.nan, None, r.random()]))
            for i in r.sample(range(60), n)
        ]
        mode, q = r.choice(["max", "min"]), r.choice([0.1, 0.25, 0.5])
        member = r.choice(cands)

        def ctx(mode=mode, seed=trial, cands=cands):
            return Context(
                mode=mode,
                rng=np.random.default_rng(seed),
                population=SimpleNamespace(members={m.id: m for m in cands}),  # type: ignore[arg-type]
                space=None,  # type: ignore[arg-type]
                candidate_ids=np.array([m.id for m in cands], dtype=np.int64),
                candidate_scores=np.array([m.ready_score for m in cands], dtype=float),
            )

        old = _old_truncation(member, ctx(), q)
        new = Truncation(q).select(member, ctx())
        assert (old and old.id) == (new and new.id)


def test_vectorized_smoke(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    rows = _load("vectorized").main(["--smoke"])
    assert [(r["task"], r["population"]) for r in rows] == [("mlp", 4)]
    for backend in ("local", "vectorized"):
        assert rows[0][backend]["wall"] > 0 and rows[0][backend]["peak_mib"] > 0
        assert 0.5 < rows[0][backend]["score"] <= 1.0
    assert "speedup" in capsys.readouterr().out


def test_deterministic_smoke(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    rows = _load("deterministic").main(["--smoke"])
    assert {r["deterministic"] for r in rows} == {False, True}
    assert "deterministic / as they arrive" in capsys.readouterr().out
