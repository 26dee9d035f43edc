"""What the whole suite shares: which tests are slow, and which must not run side by side.

``pytest -m "not slow"`` runs the fast part: the decision logic, the stores, the command line in
process, the simulated backend, and real worker processes where a test needs only a few. The slow
tests are real Ray clusters, the examples and benchmarks at smoke size, browsers, GPU placement
and fault campaigns on real processes; CI runs everything (``scripts/test.sh``).
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

# One thread per process for the numerical libraries, here and in every worker process the tests
# start (they inherit the environment; a worker keeps a value that is set). The suite runs the
# driver, worker processes and in-process training side by side on two cores: with a thread pool
# per process sized to the machine, PyTorch's threads wait on each other, and one digits epoch
# took 4.6 s instead of 0.19 s on a loaded machine. A value set by whoever runs the tests wins.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if "torch" in sys.modules:  # imported by a plugin before this file: set its pool directly
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# A shell without job control starts a background command (`cmd &`) with SIGINT ignored, and
# Python then leaves it ignored, as would every driver the tests start: the fault campaigns'
# Ctrl-C strikes would do nothing. Restore Ctrl-C here, and so in every process started from here.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: tests that took more than about 5 s in ``--durations`` of the whole suite on this project's
#: 2-core machine (tests/test_x.py::name[param], as pytest names them); every test of a module
#: in :data:`SLOW_MODULES` is slow too
SLOW = frozenset(
    {
        "tests/test_benchmarks_smoke.py::test_deterministic_smoke",
        "tests/test_benchmarks_smoke.py::test_overhead_smoke",
        "tests/test_benchmarks_smoke.py::test_quality_smoke",
        "tests/test_benchmarks_smoke.py::test_vectorized_smoke",
        "tests/test_benchmarks_smoke.py::test_vs_ray_tune_smoke",
        "tests/test_dashboard_browser.py::test_a_thousand_members_render_within_five_seconds",
        "tests/test_dashboard_browser.py::test_benchmark_smoke",
        "tests/test_example_tracked.py::test_the_tracked_digits_example_shows_every_member_in_both_trackers",
        "tests/test_examples.py::test_digits_learns_and_held_out_split_is_separate",
        "tests/test_faults.py::test_random_kills_and_resumes_lose_nothing[1]",
        "tests/test_faults.py::test_random_kills_and_resumes_lose_nothing[3]",
        "tests/test_faults.py::test_random_kills_and_resumes_lose_nothing[4]",
        "tests/test_gpu_placement.py::test_the_gpu_benchmark_runs_its_cpu_side",
        "tests/test_lightning.py::test_the_digits_example_runs_under_hp_run",
        "tests/test_member_processes.py::test_the_ddp_example_gives_every_rank_the_explored_config_and_exports_a_plain_model",
        "tests/test_schedule_export.py::test_digits_retrained_along_the_exported_schedule",
        "tests/test_strategies_backends.py::test_a_ray_cluster_decides_as_the_simulated_backend",
        "tests/test_trackers.py::test_wandb_offline_runs_grouped_by_population_across_a_resume",
        "tests/test_transformers.py::test_the_text_example_runs_under_hp_run",
    }
)

SLOW_MODULES = frozenset(
    {
        "test_ray_backend",
        "test_ray_multinode",
        "test_ray_elastic",
    }
)

#: modules that start a Ray cluster: under pytest-xdist they run on one worker (not with pytest
#: 9.2 and pytest-xdist 3.8, whose loadgroup no longer groups, pytest-xdist#1386: each test process
#: then starts the shared cluster for its own Ray tests)
#: (``--dist loadgroup``), so two clusters never compete for the same cores and ports, and the
#: tests that use the shared one (tests/ray_local.py) start it once
RAY_MODULES = frozenset({"test_ray_backend", "test_ray_multinode", "test_ray_elastic"})
#: tests elsewhere that run Ray in the test process (marked ``xdist_group("ray")`` in their
#: modules, or listed here)
RAY_TESTS = frozenset({"tests/test_benchmarks_smoke.py::test_quality_smoke"})


def _in_ray_group(item: pytest.Item | None) -> bool:
    return item is not None and any(
        m.args[:1] == ("ray",) for m in item.iter_markers("xdist_group")
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups on each worker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tests, and group the Ray tests on one xdist worker."""
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in SLOW_MODULES or item.nodeid in SLOW:
            item.add_marker(pytest.mark.slow)
        if module in RAY_MODULES or item.nodeid in RAY_TESTS:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last of a run of Ray tests (and their fixtures' teardown), stop the shared
    cluster: an idle one still costs about 5% of a core, which the rest of the suite needs.
    The next Ray test starts it again."""
    if _in_ray_group(item) and not _in_ray_group(nextitem) and "ray" in sys.modules:
        ray = sys.modules["ray"]
        if ray.is_initialized():
            ray.shutdown()
