"""A backend's slots: each trains one task at a time and holds some members' state in memory.

The bookkeeping the local backend (a slot is a group of worker processes) and the Ray backend
(a slot is an actor) share: which slots are free, the task each runs, which holds a member's
state (affinity), and which retire when the backend shrinks. A backend subclasses :class:`Slot`
for its own handle and starts and stops what runs in a slot; the pool only keeps the books.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hyperpop.backends.base import Task

__all__ = ["Slot", "SlotPool"]


class Slot:
    """One place a member trains: the task it runs, the members it holds, whether it goes."""

    def __init__(self, index: int):
        self.index = index
        self.task: Task | None = None
        #: member -> the blob of the state this slot holds in memory for it
        self.held: dict[int, str | None] = {}
        #: the backend shrank: the slot goes once its interval ends (never a free slot)
        self.retiring = False


S = TypeVar("S", bound=Slot)


class SlotPool(Generic[S]):
    """The backend's slots, in the order they were made (indices are never reused).

    Args:
        make: builds the slot of an index (the backend's subclass of :class:`Slot`).
        noun: what a slot is, for the error of a task submitted beyond capacity.
    """

    def __init__(self, make: Callable[[int], S], noun: str = "slot"):
        self.slots: list[S] = []
        self._make = make
        self._made = 0
        self.noun = noun

    def __iter__(self) -> Iterator[S]:
        return iter(list(self.slots))

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, i: int) -> S:
        return self.slots[i]

    def add(self) -> S:
        """A new slot (what runs in it is the caller's to start)."""
        slot = self._make(self._made)
        self._made += 1
        self.slots.append(slot)
        return slot

    def remove(self, slot: S) -> None:
        """The slot is gone (what ran in it is the caller's to stop)."""
        if slot in self.slots:
            self.slots.remove(slot)

    def clear(self) -> None:
        self.slots = []

    def active(self) -> list[S]:
        """Slots that are not retiring."""
        return [s for s in self.slots if not s.retiring]

    def free(self, ready: Callable[[S], bool] | None = None) -> list[S]:
        """Slots that may take a task now: not retiring, idle and (if given) ``ready``."""
        return [
            s
            for s in self.slots
            if not s.retiring and s.task is None and (ready is None or ready(s))
        ]

    def busy(self) -> list[S]:
        """Slots with a task running."""
        return [s for s in self.slots if s.task is not None]

    def capacity(self, ready: Callable[[S], bool]) -> int:
        """Active slots that train a task now or may take one (``ready``)."""
        return sum(1 for s in self.active() if s.task is not None or ready(s))

    def affinity(self, member: int) -> int | None:
        """The index of the active slot that holds ``member``'s state in memory, if any."""
        return next((s.index for s in self.active() if member in s.held), None)

    def choose(self, task: Task, index: int | None, free: list[S]) -> S:
        """The free slot for ``task``: the one the driver named (``index``), else the one
        holding its member, else the first (the caller hands it the task).

        Raises:
            RuntimeError: no slot is free (the driver submitted beyond capacity).
        """
        if not free:
            raise RuntimeError(f"no free {self.noun}: the driver submitted beyond capacity")
        chosen = next((s for s in free if s.index == index), None)
        if chosen is None:
            chosen = next((s for s in free if task.member in s.held), free[0])
        return chosen

    def release(self, member: int, keep: S | None = None) -> list[S]:
        """Drop ``member`` from the books of every slot that holds it (but ``keep``); returns
        those slots (the caller tells what runs in them to forget it)."""
        out = [s for s in self.slots if s is not keep and member in s.held]
        for s in out:
            del s.held[member]
        return out

    def resize(
        self, workers: int, priority: Callable[[S], tuple[bool, ...]] | None = None
    ) -> tuple[int, list[S]]:
        """Make ``workers`` slots active: retiring slots come back first. Returns how many
        new slots to add, and the slots to stop now (idle ones retire at once, and leave the
        pool; a busy one retires when its interval ends). Shrinking retires first the slots
        lowest by ``priority`` (a backend's own order), then idle ones, then the busy ones
        made last."""
        active = self.active()
        if workers >= len(active):
            back = [s for s in self.slots if s.retiring][: workers - len(active)]
            for s in back:
                s.retiring = False
            return workers - len(active) - len(back), []
        order = sorted(
            active,
            key=lambda s: (
                () if priority is None else priority(s),
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

    def retired(self) -> list[S]:
        """The retiring slots whose interval has ended, taken out of the pool (the caller
        stops what ran in them)."""
        out = [s for s in self.slots if s.retiring and s.task is None]
        for s in out:
            self.slots.remove(s)
        return out
