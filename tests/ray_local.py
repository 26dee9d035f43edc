"""A local Ray cluster for the tests that need one (Ray is imported only when called)."""

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
