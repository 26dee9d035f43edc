"""The public API: one sorted list of top-level names, each documented in the guide."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hyperpop as hp

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"


def test_all_is_sorted_and_every_name_resolves():
    assert hp.__all__ == sorted(hp.__all__)
    for name in hp.__all__:
        if name == "VectorizedTrainable":
            pytest.importorskip("torch")
        assert getattr(hp, name) is not None, name


def test_one_way_to_write_a_parameter():
    for name in ("Float", "Int", "Choice", "Constant", "Space"):
        assert name not in hp.__all__
        assert not hasattr(hp, name), f"hp.{name} is a second way to write a parameter"
    from hyperpop.space import Choice, Float, Int, Space

    space = Space({"lr": hp.loguniform(1e-4, 1e-1), "k": hp.randint(1, 3), "c": hp.choice([1, 2])})
    kinds = {path: type(p) for path, p in space.parameters.items()}
    assert kinds == {"lr": Float, "k": Int, "c": Choice}


def test_a_custom_strategy_needs_only_top_level_names():
    from hyperpop.strategies import EXPLOIT

    @hp.register
    class Never(hp.ExploitStrategy):
        name = "never-api-test"

        def select(self, member, ctx: hp.Context):
            return None

    try:
        assert EXPLOIT["never-api-test"] is Never
    finally:
        del EXPLOIT["never-api-test"]
    assert issubclass(hp.StoreLockedError, hp.StoreError)


def test_the_guide_documents_every_public_name():
    api = GUIDE.read_text().split("## 9. API", 1)[1]
    documented = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", api))
    assert sorted(set(hp.__all__) - documented) == []
