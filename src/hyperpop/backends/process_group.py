"""A member of N processes: a group of worker processes that trains each interval together.

With ``processes_per_member=N`` a member's interval runs on N worker processes at once, the
ranks of one data-parallel job (DDP, FSDP), each started with the environment ``torchrun``
gives: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``
(127.0.0.1) and ``MASTER_PORT`` (a free port per group, new for each fresh group), plus
``HYPERPOP_DIST_TIMEOUT``, the seconds a collective may wait before it fails (see
:func:`hyperpop.torch.init_distributed`), and ``HYPERPOP_GROUP_ID``, unique to each group.
Every rank sees the member's GPUs (rank ``r`` uses device ``r`` when there is one GPU per
rank, as under ``torchrun``).

Every rank builds the member's trainable, loads the checkpoint the task names (after an
exploit, the donor's), applies the task's config and trains the same steps; every rank calls
``save()`` (FSDP gathers a full state in a collective), and rank 0 alone writes the blob and
reports the metrics. The group keeps its trainables in memory between intervals, as a single
worker does. A rank that dies, raises or hangs fails the whole interval: the supervisor kills
every rank (none is left waiting in a collective) and the caller starts a fresh group.

:class:`ProcessGroup` is the supervisor. The local backend keeps one per slot and multiplexes
their connections in its poll; an actor (Ray) calls the blocking :meth:`ProcessGroup.run`,
or :func:`run_interval` for a group that lives for one interval.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from hyperpop.backends.base import Task, TaskResult, check_processes
from hyperpop.backends.processes import WorkerProcess, spawn_worker, thread_env

__all__ = [
    "DEFAULT_DIST_TIMEOUT",
    "ProcessGroup",
    "await_started",
    "free_port",
    "rank_env",
    "run_interval",
]

#: seconds a collective waits for a peer when no step timeout is set
DEFAULT_DIST_TIMEOUT = 300.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(
    rank: int,
    size: int,
    port: int,
    *,
    devices: Sequence[str] | None = None,
    dist_timeout: float | None = None,
    threads: int | None = None,
    base: Mapping[str, str] | None = None,
    group_id: str = "",
) -> dict[str, str]:
    """The environment of rank ``rank`` of a group of ``size`` on this machine (a group of 1
    gets no distributed variables: a single process is no process group)."""
    env = dict(os.environ if base is None else base)
    if threads is not None:  # before the worker imports numerical libraries
        thread_env(threads, env)
    if devices is not None:  # the member's GPUs, numbered as nvidia-smi numbers them
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if size > 1:
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(size),
            LOCAL_WORLD_SIZE=str(size),
            GROUP_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            HYPERPOP_DIST_TIMEOUT=f"{dist_timeout or DEFAULT_DIST_TIMEOUT:g}",
            HYPERPOP_GROUP_ID=group_id or f"{port}",
        )
    return env


class ProcessGroup:
    """The ``size`` worker processes of one slot, supervised as one.

    Args:
        size: processes per member (1: one plain worker process).
        init: what each worker receives first (the trainable's pickled factory, the
            checkpoint folder, cache limits, threads, log folder; see
            :func:`hyperpop.backends.processes.spawn_worker`); ``name`` names the group.
        devices: the member's GPUs (every rank sees them), or None.
        dist_timeout: seconds a collective may wait (``HYPERPOP_DIST_TIMEOUT``).
        threads: ``OMP_NUM_THREADS`` and friends of each rank.
        env: the environment the ranks start from (default: this process's).
    """

    def __init__(
        self,
        size: int,
        init: Mapping[str, Any],
        *,
        devices: Sequence[str] | None = None,
        dist_timeout: float | None = None,
        threads: int | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.size = check_processes(size)
        self.init = dict(init)
        self.name = str(self.init.get("name", "group"))
        self.devices = None if devices is None else tuple(devices)
        self.dist_timeout = dist_timeout
        self.threads = threads
        self.env = env
        self.procs: list[WorkerProcess] = []
        self.conns: list[Connection] = []
        self.task: Task | None = None
        self._done: dict[int, TaskResult] = {}  # rank -> its result of the running task

    # --- life -------------------------------------------------------------------------------
    def spawn(self) -> ProcessGroup:
        """Start the ranks (a fresh port for the group); :meth:`await_ready` waits for them.
        Returns the group."""
        self.close()
        port = free_port() if self.size > 1 else 0
        group_id = f"{self.name}-{uuid.uuid4().hex[:8]}"
        for rank in range(self.size):
            env = rank_env(
                rank,
                self.size,
                port,
                devices=self.devices,
                dist_timeout=self.dist_timeout,
                threads=self.threads,
                base=self.env,
                group_id=group_id,
            )
            proc, conn = spawn_worker({**self.init, "rank": rank}, env)
            self.procs.append(proc)
            self.conns.append(conn)
        self.task, self._done = None, {}
        return self

    def await_ready(self) -> bool:
        """Wait until every rank has loaded the trainable: True, or False when a rank was
        killed by a signal as it started (not a failure of its own: spawn the group again).

        Raises:
            RuntimeError: a rank could not start (its error is on stderr), or the trainable
                cannot be loaded in a worker process.
        """
        for rank, conn in enumerate(self.conns):
            try:
                kind, arg = conn.recv()
            except (EOFError, OSError):  # OSError: a socket reset by a killed worker
                code = self._reap(rank)
                if code is not None and code < 0:
                    return False
                raise RuntimeError(
                    f"worker process {self._who(rank)} exited at start (exit code {code}); "
                    "its error is printed above"
                ) from None
            if kind == "fatal":
                self.kill()
                raise RuntimeError(arg)
        return True

    def start(self, restarts: int = 3) -> None:
        """:meth:`spawn` and wait for the ranks (:func:`await_started`)."""
        await_started(self.spawn(), self.spawn, restarts)

    def _reap(self, rank: int) -> int | None:
        """Rank ``rank`` is gone: its exit code, once it has exited; every rank is killed."""
        proc = self.procs[rank]
        proc.join(timeout=5)
        code = proc.exitcode
        self.kill()
        return code

    def alive(self) -> bool:
        """Whether every rank is running."""
        return bool(self.procs) and all(p.is_alive() for p in self.procs)

    def pids(self) -> list[int]:
        """The ranks' process ids, rank 0 first."""
        return [p.pid for p in self.procs]

    def kill(self) -> None:
        """Kill every rank at once (none may wait in a collective for a dead peer)."""
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(timeout=5)
        self.task = None

    def close(self) -> None:
        """Release what the (stopped or killed) ranks held."""
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
            p.close()
        for c in self.conns:
            c.close()
        self.procs, self.conns = [], []

    def stop(self) -> None:
        """Stop the ranks: a running task is abandoned (terminated), idle ranks exit cleanly."""
        self.ask_to_stop()
        self.wait_stopped()

    def ask_to_stop(self) -> None:
        """The first half of :meth:`stop`, which returns at once: several groups asked first
        and then waited for exit side by side."""
        for p, c in zip(self.procs, self.conns):
            if not p.is_alive():
                continue
            if self.task is not None:
                p.terminate()
            else:
                with contextlib.suppress(OSError, BrokenPipeError):
                    c.send(("stop", None))

    def wait_stopped(self) -> None:
        """The second half of :meth:`stop`: wait for the ranks to exit (killing those that do
        not in time) and release them."""
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self.task = None
        self.close()

    # --- tasks ------------------------------------------------------------------------------
    def send(self, msg: tuple[str, Any]) -> bool:
        """Send to every rank; False if one is dead."""
        ok = True
        for c in self.conns:
            try:
                c.send(msg)
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                ok = False
        return ok

    def submit(self, task: Task) -> bool:
        """Start ``task`` on every rank; False if a rank is dead (the caller replaces the
        group)."""
        self.task, self._done = task, {}
        return self.send(("task", task))

    def waitables(self) -> list[Any]:
        """What :func:`multiprocessing.connection.wait` takes to wake on this group: its
        connections and its processes' exit sentinels."""
        return [*self.conns, *(p.sentinel for p in self.procs)]

    def pending(self) -> bool:
        """Whether a rank has sent something not read yet."""
        return any(c.poll() for c in self.conns)

    def read(self) -> list[tuple[str, Any]]:
        """What the ranks said since the last read, for the running task: ``("progress",
        (member, steps))`` and ``("evicted", members)`` from rank 0, then ``("result",
        TaskResult)`` once every rank has finished (rank 0's result: its reports and blob), or
        ``("failed", TaskResult)`` when a rank died, or raised in a group of several (the
        other ranks are then killed: the caller replaces the group)."""
        task = self.task
        if task is None:
            return []
        out, dead = self._receive()
        raised = [r for r, res in sorted(self._done.items()) if res.error is not None]
        if self.size > 1 and raised:
            out.append(("failed", self._raised(task, raised[0])))
        elif len(self._done) == self.size:
            out.append(("result", self._finished(task)))
        else:
            if dead is None:
                dead = next((r for r, p in enumerate(self.procs) if not p.is_alive()), None)
            if dead is not None:
                out.append(("failed", self._died(task, dead)))
        return out

    def _receive(self) -> tuple[list[tuple[str, Any]], int | None]:
        """Read what the ranks sent: each rank's result into ``_done``; rank 0's progress and
        evictions, returned with the first rank whose connection broke (None: none)."""
        out: list[tuple[str, Any]] = []
        dead: int | None = None
        for rank, conn in enumerate(self.conns):
            try:
                while rank not in self._done and conn.poll():
                    kind, arg = conn.recv()
                    if kind == "result":
                        self._done[rank] = arg
                    elif rank == 0 and kind in ("progress", "evicted"):
                        out.append((kind, arg))
            except (EOFError, OSError):
                dead = rank if dead is None else dead
        return out, dead

    def _raised(self, task: Task, rank: int) -> TaskResult:
        """Rank ``rank`` of a group of several raised: the other ranks are killed."""
        self.kill()
        res = self._done[rank]
        error = (
            f"rank {rank} of member {task.member}'s {self.size} processes failed; the "
            f"group was stopped and the member restarts from its last checkpoint:\n"
            f"{res.error}"
        )
        return self._failure(task, error, fatal=res.fatal)

    def _finished(self, task: Task) -> TaskResult:
        """Every rank finished: rank 0's result (the other ranks learn its blob's id)."""
        result = self._done[0]
        self.task, self._done = None, {}
        if self.size > 1 and result.checkpoint is not None:
            self.send(("blob", (task.member, result.checkpoint)))
        return result

    def _died(self, task: Task, rank: int) -> TaskResult:
        """Rank ``rank`` died: the group is killed."""
        code = self._reap(rank)
        error = (
            f"worker process {self._who(rank)} died while training member {task.member} "
            f"(exit code {code}); the member restarts from its last checkpoint"
        )
        return self._failure(task, error)

    def timed_out(self, task: Task, seconds: float) -> TaskResult:
        """Kill the group of a task past the step timeout; the task's failure."""
        self.kill()
        who = f"worker process {self._who(None)} was"
        if self.size > 1:
            who = f"{self.size} worker processes ({self.name}) were"
        return self._failure(
            task,
            f"member {task.member}'s interval exceeded step_timeout={seconds:g}s (from step "
            f"{task.step}); its {who} killed and replaced, and the member restarts from its "
            "last checkpoint (if an interval can take longer, raise step_timeout)",
        )

    def run(
        self,
        task: Task,
        timeout: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> TaskResult:
        """Train one interval and return its result (blocking), for a caller with nothing
        else to wait on (an actor). A group that failed or timed out is killed, and started
        afresh by the next call."""
        if not self.alive():
            self.close()
            self.start()
        t0 = time.monotonic()
        if not self.submit(task):
            self.kill()
            out = [("failed", self._failure(task, f"worker process {self._who(None)} died"))]
        else:
            out = []
        while not any(kind in ("result", "failed") for kind, _ in out):
            left = None if timeout is None else max(0.0, t0 + timeout - time.monotonic())
            wait(self.waitables(), left)
            if timeout is not None and time.monotonic() - t0 > timeout and not self.pending():
                out.append(("failed", self.timed_out(task, timeout)))
                break
            for kind, arg in self.read():
                if kind == "progress" and on_progress is not None:
                    on_progress(arg[1])
                out.append((kind, arg))
        return out[-1][1]

    # --- messages ---------------------------------------------------------------------------
    def _who(self, rank: int | None) -> str:
        if self.size == 1:
            return self.name.rsplit("-", 1)[-1]
        where = f"{self.name}" if rank is None else f"{self.name} (rank {rank} of {self.size})"
        return where

    def _failure(self, task: Task, error: str, fatal: bool = False) -> TaskResult:
        return TaskResult(task=task, error=error, fatal=fatal, worker=self.name)


def await_started(
    group: ProcessGroup, respawn: Callable[[], ProcessGroup], restarts: int = 3
) -> ProcessGroup:
    """Wait until every rank of ``group`` is ready; when one is killed as it starts (not a
    failure of its own), wait for the group ``respawn()`` starts in its place instead, up to
    ``restarts`` times. Returns the group that started.

    Raises:
        RuntimeError: a rank could not start, or ranks were killed at start too often.
    """
    while not group.await_ready():
        if restarts <= 0:
            raise RuntimeError(f"the worker processes of {group.name} were killed at start")
        restarts -= 1
        group = respawn()
    return group


def run_interval(
    task: Task,
    size: int,
    init: Mapping[str, Any],
    *,
    devices: Sequence[str] | None = None,
    timeout: float | None = None,
    threads: int | None = None,
) -> TaskResult:
    """Train one interval on a group of ``size`` fresh processes that exits afterwards (no
    member state is kept in memory between intervals): the simplest use of
    :class:`ProcessGroup` from an actor. ``init`` is as for :class:`ProcessGroup`."""
    group = ProcessGroup(size, init, devices=devices, dist_timeout=timeout, threads=threads)
    group.start()
    try:
        return group.run(task, timeout)
    finally:
        group.stop()
