"""The slot pool the local and Ray backends share: free slots, affinity, and who retires."""

from __future__ import annotations

import pytest

from hyperpop.backends.base import Task
from hyperpop.backends.slots import Slot, SlotPool


def _task(member: int) -> Task:
    return Task(member=member, step=0, config={}, checkpoint=None, steps=1)


def _pool(n: int) -> SlotPool[Slot]:
    pool: SlotPool[Slot] = SlotPool(Slot, "worker")
    for _ in range(n):
        pool.add()
    return pool


def test_a_task_goes_to_the_named_slot_else_to_the_one_holding_its_member():
    pool = _pool(3)
    pool[2].held[7] = "blob-7"
    assert pool.choose(_task(7), None, pool.free()).index == 2
    assert pool.choose(_task(7), 1, pool.free()).index == 1  # the driver's choice wins
    assert pool.choose(_task(8), None, pool.free()).index == 0
    with pytest.raises(RuntimeError, match="no free worker"):
        pool.choose(_task(8), None, [])


def test_release_drops_a_member_from_every_other_slot_that_holds_it():
    pool = _pool(3)
    for s in pool:
        s.held[4] = f"b{s.index}"
    assert [s.index for s in pool.release(4, keep=pool[1])] == [0, 2]
    assert pool.affinity(4) == 1
    assert [s.index for s in pool.release(4)] == [1] and pool.affinity(4) is None


def test_shrinking_retires_idle_slots_first_then_the_busy_ones_made_last():
    pool = _pool(4)
    pool[0].task, pool[3].task = _task(0), _task(3)
    add, stop = pool.resize(1)
    # idle 2 and 1 stop now; of the busy ones, 3 (made last) retires when its task ends
    assert add == 0 and [s.index for s in stop] == [2, 1]
    assert [s.index for s in pool.free()] == [] and pool[1].retiring  # index 3's slot
    assert pool.capacity(lambda s: True) == 1
    pool[1].held[3] = "b"
    assert pool.affinity(3) is None  # a retiring slot is no scheduling hint
    pool[1].task = None
    assert [s.index for s in pool.retired()] == [3] and [s.index for s in pool] == [0]


def test_growing_brings_retiring_slots_back_before_adding_new_ones():
    pool = _pool(3)
    for s in pool:
        s.task = _task(s.index)
    assert pool.resize(1) == (0, [])
    assert [s.index for s in pool.active()] == [0]
    add, stop = pool.resize(4)
    assert (add, stop) == (1, []) and len(pool.active()) == 3
    assert pool.add().index == 3  # indices are never reused


def test_a_backend_order_retires_its_own_choice_first():
    pool = _pool(3)
    lost = {0}
    _, stop = pool.resize(2, lambda s: (s.index not in lost,))
    assert [s.index for s in stop] == [0]
