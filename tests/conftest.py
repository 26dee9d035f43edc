"""What the whole suite shares: which tests are slow, and which must not run side by side.

``pytest -m "not slow"`` runs the fast part (under a minute on two cores): the decision
logic, the stores, the command line in process, the simulated backend. The slow tests are real
clusters, real examples and browsers, and runs whose point is real worker processes; CI runs
everything (``scripts/test.sh``).
"""

from __future__ import annotations

import pytest

#: tests that take more than about 5 s on a quiet 2-core machine (``--durations`` of
#: ``scripts/test.sh``), by node id; every test of a module named in :data:`SLOW_MODULES` too
SLOW: frozenset[str] = frozenset()

#: modules whose every test is slow (a real Ray cluster, a browser, real examples)
SLOW_MODULES = frozenset(
    {
        "test_ray_backend",
        "test_ray_multinode",
        "test_ray_elastic",
    }
)

#: modules that start a Ray cluster of their own: under pytest-xdist they run on one worker
#: (``--dist loadgroup``), so two clusters never compete for the same cores and ports
RAY_MODULES = frozenset({"test_ray_backend", "test_ray_multinode", "test_ray_elastic"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in SLOW_MODULES or item.nodeid in SLOW:
            item.add_marker(pytest.mark.slow)
        if module in RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))
