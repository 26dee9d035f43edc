"""The Ray backend's view of the cluster: reaching it, how many actors its resources hold, and
following it as nodes join and leave (``workers="auto"``)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

import ray

from hyperpop.backends.base import check_workers

__all__ = [
    "ClusterFollower",
    "RayClusterError",
    "actors_that_fit",
    "cluster_actors",
    "connect",
    "job",
    "kill",
    "requested_workers",
]

log = logging.getLogger("hyperpop")


class RayClusterError(ConnectionError):
    """The Ray cluster cannot be reached, or cannot host the requested workers."""


def probe_address(address: str, timeout: float) -> None:
    """Fail fast (within ``timeout``) when nothing listens at a Ray address."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RayClusterError(
            f"cannot reach the Ray cluster at {address}: {e}. Start one with `ray start --head` "
            "(a client connects to ray://HEAD:10001, a process on a node uses address='auto'), "
            "or check the address and firewall"
        ) from None


def connect(address: str | None, timeout: float, init_options: Mapping[str, Any]) -> bool:
    """Connect to the cluster at ``address`` (``ray.init``) unless this process already is;
    returns whether this call started the session (its owner shuts it down)."""
    if address:
        probe_address(address, timeout)
    if ray.is_initialized():
        return False  # a session the caller started (e.g. ray.init in a notebook)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address:
        kwargs["address"] = address
    kwargs.update(init_options)
    try:
        ray.init(**kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises several kinds
        raise RayClusterError(
            f"cannot connect to the Ray cluster at {address or 'RAY_ADDRESS/local'}: {e}"
        ) from None
    return True


def cluster_actors(need: Mapping[str, float]) -> int:
    """How many actors that each need ``need`` the cluster holds.

    Raises:
        RayClusterError: not even one.
    """
    total = ray.cluster_resources()
    n = actors_that_fit(total, need)
    if n < 1:
        asked = ", ".join(f"{k}={v:g}" for k, v in need.items() if v)
        raise RayClusterError(f"the Ray cluster ({dict(total)}) cannot hold one actor with {asked}")
    return n


def requested_workers(workers: object) -> tuple[int | None, bool]:
    """A RayBackend's ``workers``: the number asked for (None: the cluster's slots at the
    start), and whether the actors follow the cluster (``"auto"``)."""
    if workers is None or workers == "auto":
        return None, workers == "auto"
    try:
        return check_workers(workers), False
    except ValueError:
        raise ValueError(
            f"workers must be an int of at least 1, 'auto' (follow the cluster as nodes join and "
            f"leave) or None (as many as the cluster holds at the start), got {workers!r}"
        ) from None


def actors_that_fit(resources: Mapping[str, float], need: Mapping[str, float]) -> int:
    """How many actors that each need ``need`` (``CPU``, ``GPU``, custom resources) the
    ``resources`` hold (one per CPU when an actor needs nothing)."""
    fits = [resources.get(k, 0.0) / v for k, v in need.items() if v > 0]
    return int(min(fits) + 1e-9) if fits else int(resources.get("CPU", 1))


class ClusterFollower:
    """``workers="auto"``: the number of actors follows the cluster's resources.

    Every ``interval`` seconds (:meth:`due`), :meth:`target` reads Ray's totals (the nodes
    alive now) and what is free: the cluster shrinks at once to the actors its nodes hold, and
    grows by the actors that fit in resources free now (not those another job holds), at most
    to ``limit``.

    Args:
        need: one actor's resources.
        interval: seconds between two looks at the cluster.
        limit: the most actors (None: no limit).
    """

    def __init__(self, need: Mapping[str, float], interval: float, limit: int | None):
        self.need, self.interval, self.limit = dict(need), interval, limit
        self._looked = time.monotonic()
        self._changes: list[tuple[int, int]] = []

    def due(self) -> bool:
        """Whether it is time to look at the cluster again."""
        now = time.monotonic()
        if now - self._looked < self.interval:
            return False
        self._looked = now
        return True

    def target(
        self,
        workers: int,
        total: Callable[[], Mapping[str, float]] = ray.cluster_resources,
        free: Callable[[], Mapping[str, float]] = ray.available_resources,
    ) -> int:
        """The number of actors to have, given ``workers`` now (at least one: a cluster with
        no room keeps one actor waiting to be placed)."""
        held = actors_that_fit(total(), self.need)
        if self.limit is not None:
            held = min(held, self.limit)
        if held > workers:
            held = workers + min(held - workers, actors_that_fit(free(), self.need))
        return max(1, held)

    def follow(self, workers: int, resize: Callable[[int], None]) -> None:
        """When it is time (:meth:`due`), ``resize`` a backend of ``workers`` actors to the
        :meth:`target`."""
        if not self.due():
            return
        target = self.target(workers)
        if target != workers:
            self.moved(workers, target)
            resize(target)
            self._changes.append((workers, target))

    def taken(self) -> list[tuple[int, int]]:
        """The changes made since the last call, each ``(from, to)`` (the driver records
        them as ``workers_changed`` events by the cluster)."""
        out, self._changes = self._changes, []
        return out

    @staticmethod
    def moved(old: int, new: int) -> None:
        """The backend went from ``old`` to ``new`` actors."""
        log.info("Ray cluster %s: %d -> %d workers", "grew" if new > old else "shrank", old, new)


def kill(actor: Any) -> None:
    """Stop an actor (no restart); one already gone is fine."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def job() -> str:
    """This driver's Ray session: its cluster and job (another after each ``ray.init``)."""
    if not ray.is_initialized():
        return ""
    context = ray.get_runtime_context()
    return f"{context.gcs_address}/{context.get_job_id()}"
