"""The Ray backend's slots: one actor each (the books are :mod:`hyperpop.backends.slots`), how
their actors start and end a session, and which of them retire first when the backend shrinks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import ray
from ray import exceptions as ray_errors

from hyperpop.backends.ray_cluster import RayClusterError
from hyperpop.backends.slots import Slot

log = logging.getLogger("hyperpop")

__all__ = ["RaySlot", "await_started", "end_sessions", "shrink_order"]


class RaySlot(Slot):
    """One actor of the backend and what the driver knows of it."""

    def __init__(self, index: int):
        super().__init__(index)
        self.generation = 0  # actors this slot had (a dead one is replaced)
        self.actor: Any = None
        self.name = ""
        self.info: dict[str, Any] | None = None  # what its session's start answered, once known
        self.ready_ref: Any = None
        self.refs: tuple[Any, Any] | None = None


def shrink_order() -> Callable[[RaySlot], tuple[bool, ...]]:
    """Which actors retire first when the backend shrinks: those not started yet, then
    those on a node that left the cluster (before :meth:`SlotPool.resize`'s own order)."""

    @functools.cache
    def alive() -> frozenset[str]:  # asked once, and only when the backend shrinks
        return frozenset(n["NodeID"] for n in ray.nodes() if n.get("Alive"))

    return lambda s: (s.info is not None, s.info is not None and s.info.get("node") in alive())


def end_sessions(slots: list[RaySlot], wait: float) -> list[RaySlot]:
    """End the run's session on every idle actor (each releases its members' trainables),
    waiting up to ``wait`` seconds; returns the slots whose actor ended cleanly (a busy actor
    is not asked: it is stopped)."""
    ends: list[tuple[RaySlot, Any]] = []
    for s in slots:
        if s.info is not None and s.task is None:
            try:
                ends.append((s, s.actor.end.remote()))
            except Exception:  # noqa: BLE001 - a dead actor
                pass
    if not ends:
        return []
    refs = [ref for _, ref in ends]
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=wait)
    out = []
    for s, ref in ends:
        try:
            if ref in done:
                ray.get(ref, timeout=0)
                out.append(s)
        except Exception:  # noqa: BLE001 - it died ending: not kept
            pass
    return out


#: seconds after which actors still waiting to be placed are reported (and why)
NOTICE_SECONDS = 10.0


def _what_is_free(need: str) -> str:
    """What each actor needs against what the cluster has, and has free now: resources held by
    other actors (another run's, or actors a backend keeps warm with ``keep_actors``) are the
    usual reason a cluster large enough places nothing."""
    total, free = ray.cluster_resources(), ray.available_resources()
    keys = sorted(k for k in total if not k.startswith(("node:", "memory", "object_store")))
    have = ", ".join(f"{k} {free.get(k, 0.0):g} free of {total[k]:g}" for k in keys)
    return (
        f"each needs {need}; the cluster has {have} (other actors hold the rest: another "
        "run's, or those a RayBackend(keep_actors=True) keeps until its close())"
    )


def await_started(
    slots: list[RaySlot],
    timeout: float,
    attempts: int,
    replace: Callable[[RaySlot], None],
    need: str,
    shared: str | None = None,
) -> list[RaySlot]:
    """Wait up to ``timeout`` seconds for every slot's actor to answer its session's start;
    returns the slots, each with its ``info``. An actor that dies before it ran (a worker
    process that could not register in time on a loaded node, a warm one that died between
    runs) is started again (``replace``), like a local worker killed while it starts.

    Raises:
        ConnectionError: the cluster could not place them in time (``need``: what each needs),
            or an actor cannot see the ``shared`` storage every actor must see.
        RuntimeError: an actor failed to start ``attempts`` times, or to load the trainable.
    """
    refs = [slot.ready_ref for slot in slots]
    notice = min(NOTICE_SECONDS, timeout / 2)
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=notice)
    if pending:
        log.warning(
            "%d of %d Ray actors are still waiting to be placed after %.0fs: %s",
            len(pending),
            len(refs),
            notice,
            _what_is_free(need),
        )
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout - notice)
    if pending:
        raise RayClusterError(
            f"only {len(done)} of {len(refs)} Ray actors started within {timeout:.0f}s: "
            f"{_what_is_free(need)}. Lower workers= or the per-member resources, or free "
            "the cluster"
        )
    for slot in slots:
        for attempt in range(attempts):
            try:
                slot.info = ray.get(slot.ready_ref, timeout=timeout)
                break
            except ray_errors.RayError as e:
                if attempt + 1 == attempts:
                    raise RuntimeError(
                        f"a Ray actor failed to start {attempts} times: {e}"
                    ) from None
                replace(slot)
    for slot in slots:
        _check_started(slot.info, shared)
    return slots


def _check_started(info: dict[str, Any] | None, shared: str | None) -> None:
    """Raise what an actor's start answered went wrong (``shared``: the storage it must see)."""
    assert info is not None  # await_started set it or raised
    if info["error"]:
        raise RuntimeError(info["error"])
    if shared is not None and not info["sees_shared"]:
        raise RayClusterError(
            f"transfer='shared' but the actor on node {info['node']} cannot see "
            f"the shared storage {shared}; "
            "pass shared_storage= a folder every node mounts or an fsspec URL"
        )
