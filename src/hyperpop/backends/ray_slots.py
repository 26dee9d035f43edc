"""The Ray backend's slots: one actor each, what it trains and holds, and which of them retire
when the backend shrinks (bookkeeping only: the backend starts and stops the actors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
from ray import exceptions as ray_errors

from hyperpop.backends.base import Task
from hyperpop.backends.ray_cluster import RayClusterError

__all__ = ["RaySlot", "SlotPool", "await_started", "end_sessions"]


class RaySlot:
    """One actor of the backend and what the driver knows of it."""

    def __init__(self, index: int):
        self.index = index
        self.generation = 0  # actors this slot had (a dead one is replaced)
        self.actor: Any = None
        self.name = ""
        self.info: dict[str, Any] | None = None  # what its session's start answered, once known
        self.ready_ref: Any = None
        self.task: Task | None = None
        self.refs: tuple[Any, Any] | None = None
        self.held: dict[int, str | None] = {}  # member -> blob it holds in memory
        #: the backend shrank: the slot goes once its interval ends (never a free slot)
        self.retiring = False


class SlotPool:
    """The backend's slots, in the order they were made (indices are never reused)."""

    def __init__(self) -> None:
        self.slots: list[RaySlot] = []
        self._made = 0

    def __iter__(self) -> Any:
        return iter(list(self.slots))

    def __bool__(self) -> bool:
        return bool(self.slots)

    def add(self) -> RaySlot:
        """A new slot (its actor is the caller's to start)."""
        slot = RaySlot(self._made)
        self._made += 1
        self.slots.append(slot)
        return slot

    def remove(self, slot: RaySlot) -> None:
        """The slot is gone (its actor is the caller's to stop)."""
        self.slots.remove(slot)

    def clear(self) -> None:
        self.slots = []

    def active(self) -> list[RaySlot]:
        """Slots that are not retiring."""
        return [s for s in self.slots if not s.retiring]

    def free(self, started: Callable[[RaySlot], bool]) -> list[RaySlot]:
        """Slots that may take a task now: not retiring, idle, their actor started."""
        return [s for s in self.slots if not s.retiring and s.task is None and started(s)]

    def holder(self, member: int) -> RaySlot | None:
        """The slot that holds ``member``'s state in memory, if any."""
        return next((s for s in self.slots if member in s.held), None)

    def resize(self, workers: int) -> tuple[int, list[RaySlot]]:
        """Make ``workers`` slots active: retiring slots come back first. Returns how many
        new slots to add, and the slots to stop now (idle ones retire at once; a busy one
        retires when its interval ends). Shrinking retires, in this order, slots whose actor
        has not started yet, those on a node that left the cluster, idle ones, and the busy
        ones made last."""
        active = self.active()
        if workers >= len(active):
            back = [s for s in self.slots if s.retiring][: workers - len(active)]
            for s in back:
                s.retiring = False
            return workers - len(active) - len(back), []
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        order = sorted(
            active,
            key=lambda s: (
                s.info is not None,
                s.info is not None and s.info.get("node") in alive,
                s.task is not None,
                -s.index,
            ),
        )
        now = []
        for s in order[: len(active) - workers]:
            s.retiring = True
            if s.task is None:
                now.append(s)
                self.slots.remove(s)
        return 0, now


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


def await_started(
    slots: list[RaySlot],
    timeout: float,
    attempts: int,
    replace: Callable[[RaySlot], None],
    need: str,
) -> list[RaySlot]:
    """Wait up to ``timeout`` seconds for every slot's actor to answer its session's start;
    returns the slots, each with its ``info``. An actor that dies before it ran (a worker
    process that could not register in time on a loaded node, a warm one that died between
    runs) is started again (``replace``), like a local worker killed while it starts.

    Raises:
        ConnectionError: the cluster could not place them in time (``need``: what each needs).
        RuntimeError: an actor failed to start ``attempts`` times.
    """
    refs = [slot.ready_ref for slot in slots]
    done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if pending:
        raise RayClusterError(
            f"only {len(done)} of {len(refs)} Ray actors started within {timeout:.0f}s; each "
            f"needs {need} and the cluster has {ray.cluster_resources()}. Lower workers= or "
            "the per-member resources"
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
    return slots
