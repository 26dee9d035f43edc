"""Do: the interface every backend implements, and the unit of work it runs."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["Backend", "Task", "TaskResult", "check_processes", "check_workers"]


@dataclass(frozen=True)
class Task:
    """One interval of training for one member.

    Attributes:
        member: the member's id.
        config: the hyperparameters to train with.
        checkpoint: the blob to start from; None means a fresh ``setup(config)``. A worker that
            already holds this blob in memory for this member trains on without loading it.
        step: the model's training steps at the start.
        steps: train this many steps (at most, when ``seconds`` is set).
        seconds: or train until this many seconds have passed (checked after each step).
        attempt: retries so far after failures (0 for the first try).
        reset: a partial reset to apply before training (rejuvenation): the worker calls the
            trainable's ``reset(how)`` on the restored state, then ``apply(config)``.
    """

    member: int
    config: dict[str, Any]
    checkpoint: str | None
    step: int
    steps: int | None
    seconds: float | None = None
    attempt: int = 0
    reset: str | None = None


@dataclass
class TaskResult:
    """What came back from a :class:`Task`.

    Attributes:
        task: the task.
        reports: the metrics of each step trained, in order.
        checkpoint: the blob saved at the end (None on error).
        error: a traceback if the trainable (or the worker) failed; the interval's reports are
            then discarded and the member retried from its last checkpoint.
        fatal: the error cannot be cured by a retry (e.g. the trainable is misdefined).
        user_seconds: time spent inside the user's code (setup, load, apply, train, save).
        seconds: wall time of the whole task inside the worker.
        worker: which worker ran it.
        restored: whether the worker had to build or load the member's state (no cache hit).
    """

    task: Task
    reports: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None
    error: str | None = None
    fatal: bool = False
    user_seconds: float = 0.0
    seconds: float = 0.0
    worker: str = ""
    restored: bool = False

    @property
    def member(self) -> int:
        """The member's id."""
        return self.task.member

    @property
    def end_step(self) -> int:
        """The model's training steps at the end of the interval."""
        return self.task.step + len(self.reports)


class Backend(ABC):
    """Runs trainables. The driver submits tasks and polls results; nothing else crosses."""

    #: short name recorded in the store
    name: str = "backend"
    #: whether checkpoints must be synced to disk (False for a simulation, which has no
    #: power cut to survive)
    durable: bool = True
    #: the folder members' stdout and stderr go to (set by :meth:`set_log_dir` on a backend
    #: that can send them there; None: their output stays where it goes)
    log_dir: str | None = None
    #: how many processes train one member together (the ranks of a DDP group)
    processes_per_member: int = 1

    @abstractmethod
    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        """Start workers that build trainables with ``factory`` and write to ``checkpoints``."""

    @property
    @abstractmethod
    def capacity(self) -> int:
        """How many tasks can run at once."""

    @abstractmethod
    def submit(self, task: Task, slot: int | None = None) -> None:
        """Start a task (the driver never submits more than :attr:`capacity` at once).

        Args:
            task: the interval to train.
            slot: the free slot (from :meth:`free_slots`) the driver chose for it, to be
                used as it is; None: the backend chooses (e.g. the slot that holds the
                member's state in memory).
        """

    @abstractmethod
    def poll(self, timeout: float | None) -> list[TaskResult]:
        """Results of finished tasks, waiting up to ``timeout`` seconds for the first one."""

    def release(self, blob: str) -> None:  # noqa: B027 - optional hook
        """The driver deleted ``blob`` (nothing names it any more): drop any copy of it the
        backend keeps (object-store references, copies in shared storage)."""

    def forget(self, member: int) -> None:  # noqa: B027 - optional hook
        """The member left the population: its in-memory state may be dropped."""

    def set_log_dir(self, path: str | os.PathLike[str] | None) -> None:  # noqa: B027
        """Send each member's stdout and stderr to ``path/member-N.log``, for backends whose
        workers can (None, or a backend that cannot: output stays where it goes)."""

    def simulated_seconds(self) -> float | None:
        """Seconds since the start on the backend's simulated clock, for a backend that runs on
        one (the driver's clock then follows it); None: the backend runs in real time."""
        return None

    def progress(self) -> dict[int, int]:
        """Steps trained so far by each running task, for backends that can tell (a count
        people can follow between ready points; the reports come with the task's result)."""
        return {}

    def notes(self) -> list[str]:
        """Lines for the progress display, each returned once (e.g. what the backend chose)."""
        return []

    def affinity(self, member: int) -> int | None:
        """The slot that holds the member's state in memory, if any (a scheduling hint)."""
        return None

    def free_slots(self) -> list[int]:
        """Slots with no task running (a scheduling hint)."""
        return []

    def resize(self, workers: int) -> None:
        """Train ``workers`` tasks at once from now on (a person's ``workers`` request, or a
        cluster that grew or shrank).

        The contract: :attr:`capacity` is the new number as soon as this returns (a backend
        whose new workers must first be placed somewhere, such as Ray's actors, counts each
        one once it has started, as it counts a replacement); growing adds slots at once;
        shrinking never stops a running interval: the surplus slots retire as their current
        intervals end (the driver never submits beyond :attr:`capacity`), and
        :meth:`free_slots` never names a retired slot.

        Raises:
            ValueError: ``workers`` is not an int of at least 1, or the backend cannot change
                its number of workers (the message names the backend).
        """
        check_workers(workers)
        raise ValueError(
            f"the {self.name!r} backend cannot change its number of workers while it runs; "
            "stop the run and resume it with workers=N instead"
        )

    def own_resizes(self) -> list[tuple[int, int]]:
        """The changes of its number of workers the backend made by itself since the last call
        (Ray's ``workers="auto"`` following its cluster), each ``(from, to)``, returned once;
        the driver records them. A change asked for with :meth:`resize` is not one."""
        return []

    def set_step_timeout(self, seconds: float | None) -> None:
        """Fail a task that runs longer than ``seconds`` (None: no limit), replacing the worker
        that ran it. A backend that cannot enforce a limit refuses one."""
        if seconds is not None:
            raise ValueError(
                f"the {self.name!r} backend cannot enforce step_timeout; leave it unset or use "
                "the 'local' backend"
            )

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every worker."""


def check_workers(workers: object) -> int:
    """``workers`` as a number of workers (an int of at least 1).

    Raises:
        ValueError: anything else, naming it.
    """
    if not _is_count(workers):
        raise ValueError(f"workers must be an int of at least 1, got {workers!r}")
    return workers


def check_processes(processes: object) -> int:
    """``processes_per_member`` as a number of processes (an int of at least 1).

    Raises:
        ValueError: anything else, naming it.
    """
    if not _is_count(processes):
        raise ValueError(f"processes_per_member must be a positive int, got {processes!r}")
    return processes


def _is_count(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an int of at least 1 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
