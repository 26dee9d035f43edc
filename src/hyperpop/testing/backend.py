"""The contract every backend keeps, as a pytest suite to subclass."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.checkpoints import CheckpointStore
from hyperpop.testing.trainables import Climber
from hyperpop.trainable import Trainable

__all__ = ["BackendContract"]

#: the longest a contract check waits for results before it fails (a hung backend)
WAIT_SECONDS = 120.0


class BackendContract:
    """What every :class:`~hyperpop.backends.base.Backend` does, driven as the driver drives it
    (start, submit at most :attr:`~hyperpop.backends.base.Backend.capacity` tasks, poll, shut
    down). Subclass it in a class whose name starts with ``Test`` and implement
    :meth:`make_backend`; a backend that cannot train :class:`~hyperpop.testing.Climber`
    overrides :meth:`trainable`, :meth:`config` and :meth:`failing_config` too."""

    #: workers asked of :meth:`make_backend`
    workers = 2

    def make_backend(self, workers: int) -> Backend:
        """A new backend running ``workers`` tasks at once (not started)."""
        raise NotImplementedError

    def trainable(self) -> Callable[[], Trainable]:
        """What the backend builds each member's trainable with."""
        return Climber

    def config(self, member: int) -> dict[str, Any]:
        """A config that trains well for ``member``."""
        return {"lr": 0.1 * (member + 1), "fail": 0.0}

    def failing_config(self, member: int) -> dict[str, Any]:
        """A config whose training raises an exception (not a misdefined trainable)."""
        return {**self.config(member), "fail": 1.0}

    def check_reports(self, task: Task, reports: list[dict[str, Any]]) -> None:
        """Check a successful task's reports: one per step, and where they say which step of
        the model they are (``step``), counting on from the task's step."""
        if task.steps is not None:
            assert len(reports) == task.steps, f"{len(reports)} reports for {task.steps} steps"
        else:
            assert len(reports) >= 1
        assert all(isinstance(r, Mapping) for r in reports)
        if all("step" in r for r in reports):
            assert [r["step"] for r in reports] == list(
                range(task.step + 1, task.step + len(reports) + 1)
            )

    # --- helpers -------------------------------------------------------------------------
    @pytest.fixture
    def checkpoints(self, tmp_path: Path) -> CheckpointStore:
        return CheckpointStore(tmp_path / "checkpoints", fsync=False)

    @pytest.fixture
    def backend(self, checkpoints: CheckpointStore) -> Iterator[Backend]:
        b = self.make_backend(self.workers)
        b.start(self.trainable(), checkpoints)
        try:
            yield b
        finally:
            b.shutdown()

    def task(
        self,
        member: int,
        checkpoint: str | None = None,
        step: int = 0,
        steps: int = 2,
        config: dict[str, Any] | None = None,
    ) -> Task:
        """A task for ``member`` with :meth:`config` (or ``config``)."""
        return Task(member, config or self.config(member), checkpoint, step, steps)

    @staticmethod
    def collect(backend: Backend, count: int) -> list[TaskResult]:
        """Poll until ``count`` results came back (fails after :data:`WAIT_SECONDS`)."""
        out: list[TaskResult] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while len(out) < count:
            left = deadline - time.monotonic()
            assert left > 0, f"{len(out)} of {count} results within {WAIT_SECONDS:g}s"
            out += backend.poll(min(left, 5.0))
        assert len(out) == count, f"{len(out)} results for {count} tasks"
        return out

    def run_one(self, backend: Backend, task: Task, slot: int | None = None) -> TaskResult:
        """Submit ``task`` and wait for its result."""
        backend.submit(task, slot)
        (result,) = self.collect(backend, 1)
        assert result.task == task
        return result

    def assert_trained(
        self, result: TaskResult, checkpoints: CheckpointStore, task: Task | None = None
    ) -> None:
        """``result`` is a success: its reports, and a checkpoint that can be loaded."""
        task = task or result.task
        assert result.error is None, result.error
        assert not result.fatal
        assert result.member == task.member
        self.check_reports(task, result.reports)
        assert result.end_step == task.step + len(result.reports)
        assert result.checkpoint is not None and checkpoints.exists(result.checkpoint)
        assert checkpoints.load(result.checkpoint) is not None

    # --- the checks ----------------------------------------------------------------------
    def test_capacity_is_the_workers_asked_for(self, backend: Backend) -> None:
        assert backend.capacity == self.workers

    def test_nothing_running_polls_nothing_at_once(self, backend: Backend) -> None:
        t0 = time.monotonic()
        assert backend.poll(0.0) == []
        assert backend.poll(0.05) == []
        assert time.monotonic() - t0 < 5.0
        assert backend.progress() == {}

    def test_a_task_trains_its_steps_and_saves_a_checkpoint(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        task = self.task(0, steps=3)
        result = self.run_one(backend, task)
        self.assert_trained(result, checkpoints)
        assert result.end_step == 3 and result.restored  # a fresh member is built

    def test_a_task_continues_from_a_checkpoint(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        first = self.run_one(backend, self.task(0, steps=2))
        self.assert_trained(first, checkpoints)
        assert first.checkpoint is not None
        again = self.run_one(backend, self.task(0, first.checkpoint, step=2, steps=2))
        self.assert_trained(again, checkpoints)
        assert again.end_step == 4 and again.checkpoint != first.checkpoint
        assert checkpoints.exists(first.checkpoint)  # a checkpoint is never overwritten

    def test_a_member_continues_from_its_checkpoint_after_being_forgotten(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        first = self.run_one(backend, self.task(1, steps=2))
        self.assert_trained(first, checkpoints)
        backend.forget(1)  # its state in memory may go: the checkpoint brings it back
        again = self.run_one(backend, self.task(1, first.checkpoint, step=2, steps=1))
        self.assert_trained(again, checkpoints)

    def test_a_full_load_and_a_population_larger_than_capacity(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        members = range(backend.capacity + 2)
        done: dict[int, TaskResult] = {}
        waiting = [self.task(m) for m in members]
        running = 0
        deadline = time.monotonic() + WAIT_SECONDS
        while waiting or running:
            while waiting and running < backend.capacity:
                backend.submit(waiting.pop(0))
                running += 1
            assert time.monotonic() < deadline, f"{len(done)} results within {WAIT_SECONDS:g}s"
            for result in backend.poll(5.0):  # one result or more
                running -= 1
                assert result.member not in done
                self.assert_trained(result, checkpoints)
                done[result.member] = result
        assert sorted(done) == list(members)
        # an exploit: every member goes on from another member's checkpoint, all at once
        swap = [self.task(m, done[m - 1].checkpoint, step=2, steps=1) for m in range(1, 3)]
        for task in swap:
            backend.submit(task)
        for result in self.collect(backend, len(swap)):
            self.assert_trained(result, checkpoints)
            assert result.end_step == 3

    def test_a_task_bounded_by_seconds_trains_at_least_one_step(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        task = Task(0, self.config(0), None, 0, None, seconds=0.0)
        result = self.run_one(backend, task)
        self.assert_trained(result, checkpoints)
        assert result.end_step >= 1

    def test_a_failing_task_comes_back_as_a_failed_result(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        task = self.task(0, config=self.failing_config(0))
        result = self.run_one(backend, task)
        assert isinstance(result.error, str) and result.error
        assert result.checkpoint is None and not result.fatal
        assert result.reports == []  # a failed interval's reports are not results
        # the backend goes on: the member retries from scratch, another member trains
        retry = self.run_one(backend, self.task(0))
        self.assert_trained(retry, checkpoints)
        other = self.run_one(backend, self.task(1))
        self.assert_trained(other, checkpoints)

    def test_free_slots_and_affinity_stay_within_capacity(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        slots = backend.free_slots()
        assert len(set(slots)) == len(slots) and set(slots) <= set(range(backend.capacity))
        if not slots:  # a backend that schedules its own slots
            result = self.run_one(backend, self.task(0))
            self.assert_trained(result, checkpoints)
            assert backend.free_slots() == [] and backend.affinity(0) is None
            return
        assert sorted(slots) == list(range(backend.capacity))  # all free before any task
        chosen = slots[-1]
        task = self.task(0)
        backend.submit(task, chosen)
        assert chosen not in backend.free_slots()  # the driver's choice is used as it is
        assert len(backend.free_slots()) == backend.capacity - 1
        (result,) = self.collect(backend, 1)
        self.assert_trained(result, checkpoints)
        assert sorted(backend.free_slots()) == list(range(backend.capacity))
        assert backend.affinity(0) in (None, chosen)  # where its state stays, if anywhere
        assert backend.affinity(99) is None  # a member never seen

    def test_a_blob_released_by_the_driver_is_not_needed_again(
        self, backend: Backend, checkpoints: CheckpointStore
    ) -> None:
        first = self.run_one(backend, self.task(0))
        second = self.run_one(backend, self.task(0, first.checkpoint, step=2))
        assert first.checkpoint is not None
        backend.release(first.checkpoint)
        checkpoints.delete(first.checkpoint)
        third = self.run_one(backend, self.task(0, second.checkpoint, step=4))
        self.assert_trained(third, checkpoints)

    def test_a_step_timeout_is_taken_or_refused_by_name(self, backend: Backend) -> None:
        backend.set_step_timeout(None)  # no limit: every backend takes it
        try:
            backend.set_step_timeout(600.0)
        except ValueError as e:
            assert "step_timeout" in str(e)
        backend.set_step_timeout(None)

    def test_shutdown_returns_with_a_task_running_and_twice(
        self, checkpoints: CheckpointStore
    ) -> None:
        backend = self.make_backend(self.workers)
        backend.start(self.trainable(), checkpoints)
        backend.submit(self.task(0, steps=1))
        t0 = time.monotonic()
        backend.shutdown()  # its interval will never be recorded: it is not waited for
        backend.shutdown()
        assert time.monotonic() - t0 < 30.0
