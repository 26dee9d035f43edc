"""The public API: one sorted list of top-level names, each documented in the guide."""

from __future__ import annotations

import re
import subprocess
import sys
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


def test_a_worker_process_imports_only_the_trainables_side():
    """`import hyperpop` defers each public name to its first use: a worker process (and a
    trainable's module written with `hp.Trainable`, `hp.uniform` and `hp.Steps`) loads neither
    the driver nor the stores nor the strategies, which every worker would pay at its start."""
    code = (
        "import sys, hyperpop as hp, hyperpop.backends._worker, hyperpop.backends.worker\n"
        "class T(hp.Trainable):\n    pass\n"
        "space, budget = {'x': hp.uniform(0, 1)}, hp.Steps(3)\n"
        "heavy = ('hyperpop.controller', 'hyperpop.driver', 'hyperpop.store', "
        "'hyperpop.strategies', 'hyperpop.results')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_a_module_named_like_its_function_keeps_the_function():
    """`hyperpop.run`, `hyperpop.replay` and `hyperpop.steer` are modules and functions: an
    import of the module, before or after `hp.run` is first used, leaves `hp.run` the function."""
    code = (
        "import hyperpop as hp\n"
        "import hyperpop.replay, hyperpop.run\n"
        "print(callable(hp.run), callable(hp.replay), callable(hp.steer))\n"
        "import hyperpop.steer\n"
        "print(callable(hp.steer), hp.run.__module__)\n"
        # a script's function that refers to `hp` travels by value to a worker, `hp` by name
        "import cloudpickle, pickle\n"
        "def budget():\n    return hp.Steps(3)\n"
        "print(pickle.loads(cloudpickle.dumps(budget))() == hp.Steps(3))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True", "True", "hyperpop.run", "True"]
