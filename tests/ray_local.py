"""A local Ray cluster for the tests that need one (Ray is imported only when called).

The test modules share one cluster per test process (:func:`local_ray`): starting one costs
several seconds, and under pytest-xdist tests of two modules interleave on the worker that runs
the ``ray`` group, so a cluster per module would be started again at every switch.
tests/conftest.py stops it after the last of a run of Ray tests; the next one starts it again."""

from __future__ import annotations

import tempfile


def start_local_ray(num_cpus: int = 2) -> None:
    """Start a fresh local Ray cluster of ``num_cpus`` CPUs (shutting down one already
    running), in a short temporary folder: Ray's socket paths must fit 107 bytes."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="hpray"),
        logging_level="WARNING",
    )


def local_ray(num_cpus: int = 2) -> None:
    """The tests' shared local Ray cluster: started at the first call (or after a test shut it
    down), then reused."""
    import ray

    if not ray.is_initialized():
        start_local_ray(num_cpus)
