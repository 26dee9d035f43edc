"""The embedded default backend: persistent worker processes on this machine.

Each worker is a process started once as a fresh interpreter (``python -m
hyperpop.backends._worker``: safe with threaded libraries such as PyTorch, and it never imports
the driver's ``__main__``, so a script, a notebook cell, ``python -c`` or ``python - < file`` need
no main guard) that receives the trainable by value (cloudpickle) and keeps the trainables of the
members it trains in memory. Tasks and results travel
over a pipe per worker; checkpoints travel as blob ids, never as copies. A worker process that
dies is replaced: busy, its task is reported as a failure of its member; idle, the members whose
state it held load their checkpoints when they train next. With a step timeout, a task that runs
longer is failed and its worker killed and replaced. The worker processes themselves are in
:mod:`hyperpop.backends.processes`.

With ``processes_per_member=N`` each worker is a group of N processes, the ranks of one
DDP/FSDP job (:mod:`hyperpop.backends.process_group`): they train a member's interval
together, and one that dies, raises or hangs fails the interval and the whole group is
replaced. :meth:`LocalBackend.resize` changes the number of workers of a running backend.

With GPUs (``gpus=``, ``gpus_per_member=``) each worker gets its device(s) through its own
``CUDA_VISIBLE_DEVICES``, set before it starts (so before user code imports PyTorch), and a
replacement gets the same ones. What a worker keeps in memory is bounded by a byte budget of
saved-state size (``cache_bytes``, by default a share of the worker's GPU or host memory).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

import cloudpickle

from hyperpop.backends.base import Backend, Task, TaskResult, check_processes, check_workers
from hyperpop.backends.cache import FALLBACK_COUNT, ByteBudget, auto_budget, parse_bytes
from hyperpop.backends.gpus import GpuSpec, gpu_memory, placement
from hyperpop.backends.process_group import ProcessGroup, await_started
from hyperpop.backends.slots import Slot, SlotPool
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["LocalBackend"]


class _Worker(Slot):
    """A slot of the local backend: its worker process(es), and what they are given."""

    def __init__(self, index: int):
        super().__init__(index)
        self.group: ProcessGroup | None = None  # its worker process(es)
        self.since = 0.0  # when the task was sent (time.monotonic())
        self.evicted: set[int] = set()  # members its worker dropped during the running task
        self.devices: tuple[str, ...] | None = None  # its GPUs (CUDA_VISIBLE_DEVICES)
        self.cache_bytes: int | None = None  # its worker's byte budget for held members
        self.cache_size: int | None = None  # its worker's count limit for held members

    @property
    def proc(self) -> Any:
        """Its worker process (rank 0 of a group; None before it starts)."""
        return self.group.procs[0] if self.group is not None and self.group.procs else None

    def send(self, msg: tuple[str, Any]) -> None:
        """Tell its worker(s) (a dead one is replaced by the next poll)."""
        if self.group is not None:
            self.group.send(msg)

    def stop(self) -> None:
        if self.group is not None:
            self.group.stop()


class LocalBackend(Backend):
    """Persistent worker processes on this machine.

    Args:
        workers: number of worker processes (default: one per GPU share when GPUs are asked
            for, else the number of CPU cores). With GPUs, it must fit on them.
        cache_size: at most this many members' trainables kept in memory per worker (None:
            no count limit). Members beyond a limit reload their checkpoint when they train
            again.
        cache_bytes: a budget per worker for the saved-state size of the members it keeps in
            memory (tensors' and arrays' ``nbytes``, else pickled size): ``"auto"`` (default)
            is a quarter of the worker's memory (its share of its GPUs' memory, else of the
            machine's memory divided by the workers; where that cannot be read, 8 members),
            a number of bytes or a string such as ``"2GB"``, or None for no byte limit.
        threads_per_worker: value for ``OMP_NUM_THREADS`` and friends in each worker (default:
            cores divided by workers, at least 1).
        gpus: the GPUs to use: ``None`` (every visible GPU, if ``gpus_per_member`` is given;
            else no GPU placement), ``"all"``, a count (the first ``n`` visible), or device
            ids (``[0, 1]``, ``"0,1"``, UUIDs) as ``CUDA_VISIBLE_DEVICES`` takes them.
        gpus_per_member: each worker's share: 1 (default when GPUs are asked for), a fraction
            ``1/k`` such as 0.5 (``k`` workers per GPU), or a whole number (that many GPUs
            per worker). Each worker sees only its device(s), through ``CUDA_VISIBLE_DEVICES``.
        gpu_discovery: returns the visible GPU ids (default: ``CUDA_VISIBLE_DEVICES``, else
            ``nvidia-smi -L``; PyTorch is never imported in the driver). For tests.
        processes_per_member: each worker is a group of this many processes that train a
            member's intervals together, as the ranks of one DDP/FSDP job
            (:mod:`hyperpop.backends.process_group`); a worker's GPUs are split over its
            ranks (default with ``gpus``: one GPU per rank).

    Raises:
        ValueError: GPUs are asked for and none is visible, ``workers`` do not fit on them, or
            a setting is invalid (the message says which and how to fix it).
    """

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        *,
        cache_size: int | None = None,
        cache_bytes: ByteBudget = "auto",
        threads_per_worker: int | None = None,
        gpus: GpuSpec = None,
        gpus_per_member: float | None = None,
        gpu_discovery: Callable[[], Sequence[str]] | None = None,
        processes_per_member: int = 1,
    ):
        cores = os.cpu_count() or 1
        if workers is not None:
            check_workers(workers)
        if cache_size is not None and (
            isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0
        ):
            raise ValueError(
                f"cache_size must be a number of members >= 0 or None (no count limit), got "
                f"{cache_size!r}"
            )
        self.processes_per_member = n = check_processes(processes_per_member)
        if gpus_per_member is None and gpus is not None and n > 1:
            gpus_per_member = n  # one GPU per rank
        self.devices = placement(gpus, gpus_per_member, workers, gpu_discovery)
        self.gpus_per_member = None if self.devices is None else (gpus_per_member or 1.0)
        if self.devices is not None and n > 1 and (self.gpus_per_member or 1) % n:
            raise ValueError(
                f"gpus_per_member={self.gpus_per_member:g} does not split over "
                f"processes_per_member={n} ranks: give each rank whole GPUs "
                f"(gpus_per_member={n} for one each)"
            )
        self.workers = len(self.devices) if self.devices is not None else int(workers or cores)
        self.cache_size = cache_size
        if not (isinstance(cache_bytes, str) and cache_bytes == "auto"):
            parse_bytes(cache_bytes)  # a bad value fails here, not in start()
        self.cache_bytes = cache_bytes
        self.threads = threads_per_worker or max(1, cores // (self.workers * n))
        self._slots: SlotPool[_Worker] = SlotPool(_Worker, "worker")
        self._factory: bytes = b""
        self._root = ""
        self._results: list[TaskResult] = []  # failures found outside poll, returned by it
        self.step_timeout: float | None = None
        self.log_dir: str | None = None
        self._progress: dict[int, int] = {}  # member -> steps of its running task so far

    @property
    def capacity(self) -> int:
        return self.workers

    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        self._factory = cloudpickle.dumps(factory)
        self._root = str(checkpoints.root)
        self._slots = SlotPool(_Worker, "worker")
        for budget in self._budgets():
            self._configure(self._slots.add(), budget)
        for slot in self._slots:
            self._spawn(slot)
        for slot in self._slots:
            self._await_ready(slot)

    def _configure(self, slot: _Worker, budget: int | None) -> None:
        """Give a new slot its devices and its worker's limits (``budget``: its bytes)."""
        slot.devices = None if self.devices is None else self.devices[slot.index]
        slot.cache_bytes, slot.cache_size = budget, self.cache_size
        if budget is None and self.cache_bytes == "auto" and self.cache_size is None:
            slot.cache_size = FALLBACK_COUNT  # no memory size to take a share of: a count

    def _budgets(self) -> list[int | None]:
        """Each worker's byte budget for held members (None: no byte limit)."""
        if not (isinstance(self.cache_bytes, str) and self.cache_bytes == "auto"):
            return [parse_bytes(self.cache_bytes)] * self.workers
        memory = gpu_memory() if self.devices is not None else {}
        out = []
        for i in range(self.workers):
            devices = None if self.devices is None else self.devices[i]
            out.append(auto_budget(devices, self.gpus_per_member, self.workers, memory))
        return out

    @property
    def worker_devices(self) -> list[tuple[str, ...] | None]:
        """Each worker's GPUs (its ``CUDA_VISIBLE_DEVICES``; None: no GPU placement)."""
        if self.devices is None:
            return [None] * self.workers
        return list(self.devices)

    def set_log_dir(self, path: str | os.PathLike[str] | None) -> None:
        """Send each member's stdout and stderr to ``path/member-N.log`` (None: leave them on
        the driver's terminal)."""
        self.log_dir = None if path is None else os.fspath(path)
        if self.log_dir is not None:
            os.makedirs(self.log_dir, exist_ok=True)

    def _spawn(self, slot: _Worker) -> None:
        """Start fresh worker process(es) for ``slot`` and send them what they need."""
        if slot.group is not None:
            slot.group.close()
        init = {
            "factory": self._factory,
            "root": self._root,
            "name": f"local-{slot.index}",
            "cache": slot.cache_size,
            "cache_bytes": slot.cache_bytes,
            "threads": self.threads,
            "log_dir": self.log_dir,
        }
        slot.group = ProcessGroup(
            self.processes_per_member,
            init,
            devices=slot.devices,
            dist_timeout=self.step_timeout,
            threads=self.threads,
        )
        slot.group.spawn()  # a worker dead at once is found by _await_ready
        slot.task, slot.held, slot.evicted = None, {}, set()

    def set_step_timeout(self, seconds: float | None) -> None:
        """Kill a worker whose task runs longer than ``seconds`` and report the task failed
        (a member of several processes: its whole group)."""
        if seconds is not None and not seconds > 0:
            raise ValueError(f"step_timeout must be a positive number of seconds, got {seconds!r}")
        self.step_timeout = seconds

    def _replace(self, slot: _Worker) -> None:
        """Start fresh worker process(es) in place of the dead (or killed) ones in ``slot``."""
        self._spawn(slot)
        self._await_ready(slot)

    def _await_ready(self, slot: _Worker) -> None:
        def respawn() -> ProcessGroup:
            self._spawn(slot)
            assert slot.group is not None
            return slot.group

        assert slot.group is not None
        try:
            await_started(slot.group, respawn)
        except RuntimeError:
            self.shutdown()
            raise

    def progress(self) -> dict[int, int]:
        """Steps each running task has trained so far (as its worker last said)."""
        busy = {s.task.member for s in self._slots if s.task is not None}
        return {m: n for m, n in self._progress.items() if m in busy}

    def free_slots(self) -> list[int]:
        return [s.index for s in self._slots.free()]

    def affinity(self, member: int) -> int | None:
        return self._slots.affinity(member)

    def submit(self, task: Task, slot: int | None = None) -> None:
        chosen = self._slots.choose(task, slot, self._slots.free())
        for s in self._slots.release(task.member, keep=chosen):
            s.send(("forget", task.member))  # its copy is stale once another worker trains
        assert chosen.group is not None
        chosen.task, chosen.since = task, time.monotonic()
        chosen.evicted = set()
        if not chosen.group.submit(task):
            # a worker died while idle: replace the group and hand the task to the new one
            self._replace(chosen)
            assert chosen.group is not None
            chosen.task, chosen.since = task, time.monotonic()
            if not chosen.group.submit(task):
                self._results.append(self._lost(chosen, task))

    def _lost(self, slot: _Worker, task: Task) -> TaskResult:
        """The failure of a task whose worker died as it was handed over; a fresh one waits."""
        assert slot.group is not None
        failed = [arg for kind, arg in slot.group.read() if kind == "failed"]
        slot.task = None
        self._replace(slot)
        if failed:
            return failed[0]
        error = (
            f"worker process {slot.index} died as member {task.member}'s interval was handed to "
            "it; the member restarts from its last checkpoint"
        )
        return TaskResult(task=task, error=error, worker=f"local-{slot.index}")

    def poll(self, timeout: float | None) -> list[TaskResult]:
        out, self._results = self._results, []
        self._stop_retired()
        for s in self._slots:  # a worker that died while idle: replace it
            if s.task is None and s.group is not None and not s.group.alive():
                self._replace(s)
        busy = self._slots.busy()
        if not busy:
            return out
        out.extend(self._wait(busy, 0.0 if out else timeout))
        out.extend(self._time_out())
        self._stop_retired()
        return out

    def _wait(self, busy: list[_Worker], timeout: float | None) -> list[TaskResult]:
        """Wait up to ``timeout`` seconds (at most until the first step timeout) for the
        workers to say something; what they said."""
        # keyed by what multiprocessing's wait() takes and returns: connections, descriptors
        keys: dict[Any, _Worker] = {}
        for s in self._slots:
            assert s.group is not None
            keys.update((w, s) for w in s.group.waitables())
        if self.step_timeout is not None:
            first = min(s.since for s in busy) + self.step_timeout
            left = max(0.0, first - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        out = []
        for slot in dict.fromkeys(keys[r] for r in wait(list(keys), timeout)):
            out.extend(self._read(slot))
        return out

    def _time_out(self) -> list[TaskResult]:
        """Fail the tasks that ran past the step timeout (their workers are killed)."""
        out: list[TaskResult] = []
        if self.step_timeout is None:
            return out
        now = time.monotonic()
        for slot in self._slots.busy():
            if now - slot.since <= self.step_timeout:
                continue
            assert slot.group is not None and slot.task is not None
            if slot.group.pending():
                continue  # it finished while this poll replaced another worker: read next
            failure = slot.group.timed_out(slot.task, self.step_timeout)
            out.append(self._end(slot, failure, failed=True))
        return out

    def _end(self, slot: _Worker, result: TaskResult, failed: bool) -> TaskResult:
        """The slot's task ended with ``result``; after a failure its worker(s) start afresh
        (a retiring slot's go instead)."""
        assert slot.task is not None
        self._progress.pop(slot.task.member, None)
        slot.task = None
        if failed and not slot.retiring:
            self._replace(slot)
        return result

    def _read(self, slot: _Worker) -> list[TaskResult]:
        """Act on what a slot's worker(s) said: progress, evictions, the task's end."""
        assert slot.group is not None
        task = slot.task
        if task is None:  # an idle worker died
            if not slot.group.alive() and not slot.retiring:
                self._replace(slot)
            return []
        out = []
        for kind, arg in slot.group.read():
            if kind == "progress":  # steps trained so far: still at work
                self._progress[arg[0]] = arg[1]
            elif kind == "evicted":  # dropped from its memory to stay within budget
                for member in arg:
                    slot.held.pop(member, None)
                slot.evicted.update(arg)
            elif kind == "result":
                out.append(self._end(slot, arg, failed=False))
                if arg.checkpoint is not None and task.member not in slot.evicted:
                    slot.held[task.member] = arg.checkpoint
                else:
                    slot.held.pop(task.member, None)
            elif kind == "failed":  # a worker died (or a rank raised): a fresh group
                out.append(self._end(slot, arg, failed=True))
        return out

    def forget(self, member: int) -> None:
        for s in self._slots.release(member):
            s.send(("forget", member))

    def pids(self) -> list[int]:
        """Process ids of the workers, every rank of each slot (for tests and monitoring)."""
        return [pid for s in self._slots if s.group is not None for pid in s.group.pids()]

    def resize(self, workers: int) -> None:
        """Change the number of slots of a running backend: :attr:`capacity` is ``workers``
        at once; new slots start their worker process(es) now; surplus slots retire when
        their running interval ends (none is killed), and are never free meanwhile."""
        check_workers(workers)
        if self.devices is not None and workers != self.workers:
            raise ValueError(
                "a backend with GPU placement keeps its workers (each has its own devices); "
                "restart the run with other gpus= or gpus_per_member= to change them"
            )
        self.workers = workers
        if not self._slots:  # not started: start() makes them
            return
        add, stop = self._slots.resize(workers)
        for s in stop:
            s.stop()
        budget = self._budgets()[0] if add else None
        for _ in range(add):
            slot = self._slots.add()
            self._configure(slot, budget)
            self._spawn(slot)
            self._await_ready(slot)
        self._stop_retired()

    def _stop_retired(self) -> None:
        """Stop the worker(s) of retiring slots that have no task running."""
        for s in self._slots.retired():
            s.stop()

    def shutdown(self) -> None:
        # every worker is asked first, then waited for: they exit side by side
        groups = [s.group for s in self._slots if s.group is not None]
        for g in groups:
            g.ask_to_stop()
        for g in groups:
            g.wait_stopped()
        self._slots.clear()
