"""The embedded default backend: persistent worker processes on this machine.

Each worker is a process started once (``spawn``, so it is safe with threaded libraries such as
PyTorch) that keeps the trainables of the members it trains in memory. Tasks and results travel
over a pipe per worker; checkpoints travel as blob ids, never as copies. A worker process that
dies is reported as a failed task for its member and replaced.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["LocalBackend"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the driver dies (even by ``kill -9``), so no
    orphan keeps training, or writes checkpoints, after its driver is gone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)


def _worker_main(
    conn: Connection, factory_bytes: bytes, root: str, name: str, cache, threads, parent: int
):
    _die_with_parent(parent)
    # Ctrl-C in a terminal reaches the whole process group: the driver decides, workers ignore.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before the user's code imports numerical libraries: one core's worth of threads each.
    for var in _THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    from hyperpop.backends.worker import WorkerCore

    try:
        factory = pickle.loads(factory_bytes)
    except Exception as e:  # noqa: BLE001 - reported to the driver
        conn.send(("fatal", f"cannot load the trainable in a worker process: {e!r}"))
        return
    try:  # PyTorch ignores OMP_NUM_THREADS if it was imported before we set it
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    except Exception:  # noqa: BLE001
        pass
    core = WorkerCore(factory, CheckpointStore(root), name=name, cache_size=cache)
    conn.send(("ready", None))
    while True:
        try:
            msg, arg = conn.recv()
        except (EOFError, OSError):
            return
        if msg == "task":
            conn.send(("result", core.run(arg)))
        elif msg == "forget":
            core.forget(arg)
        elif msg == "stop":
            for member in list(core.held):
                core.forget(member)
            return


def _start_failure(slot: Any) -> str:
    """Why a worker process exited before it was ready, and what to do about it."""
    slot.proc.join(timeout=5)
    why = f"worker process {slot.index} exited at start (exit code {slot.proc.exitcode})"
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    try:
        with open(script or "", encoding="utf-8") as f:
            guarded = "__main__" in f.read()
    except OSError:
        return why
    if guarded:
        return why
    return (
        f'{why}: {script} has no `if __name__ == "__main__":` guard, and each worker process '
        "imports it and starts the run again; put the hp.run(...) call under that guard, or "
        "define trainable, space and settings in the file and start it with "
        f"`hyperpop run {script}`"
    )


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.proc: Any = None
        self.conn: Connection | None = None
        self.task: Task | None = None
        self.members: set[int] = set()  # members whose latest state this worker holds


class LocalBackend(Backend):
    """Persistent worker processes on this machine.

    Args:
        workers: number of worker processes (default: the number of CPU cores).
        cache_size: members' trainables each worker keeps in memory (None: no limit). Members
            beyond it are reloaded from their checkpoint when they train again.
        threads_per_worker: value for ``OMP_NUM_THREADS`` and friends in each worker (default:
            cores divided by workers, at least 1).
    """

    name = "local"

    def __init__(
        self,
        workers: int | None = None,
        *,
        cache_size: int | None = None,
        threads_per_worker: int | None = None,
    ):
        cores = os.cpu_count() or 1
        self.workers = int(workers or cores)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.cache_size = cache_size
        self.threads = threads_per_worker or max(1, cores // self.workers)
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Slot] = []
        self._factory: bytes = b""
        self._root = ""
        self._results: list[TaskResult] = []

    @property
    def capacity(self) -> int:
        return self.workers

    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        self._factory = cloudpickle.dumps(factory)
        self._root = str(checkpoints.root)
        self._slots = [_Slot(i) for i in range(self.workers)]
        for slot in self._slots:
            self._spawn(slot)
        for slot in self._slots:
            self._await_ready(slot)

    def _spawn(self, slot: _Slot) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main,
            args=(
                child,
                self._factory,
                self._root,
                f"local-{slot.index}",
                self.cache_size,
                self.threads,
                os.getpid(),
            ),
            name=f"hyperpop-worker-{slot.index}",
            daemon=True,
        )
        proc.start()
        child.close()
        slot.proc, slot.conn, slot.task = proc, parent, None
        slot.members = set()

    def _await_ready(self, slot: _Slot) -> None:
        assert slot.conn is not None
        try:
            kind, arg = slot.conn.recv()
        except EOFError:
            raise RuntimeError(_start_failure(slot)) from None
        if kind == "fatal":
            self.shutdown()
            raise RuntimeError(arg)

    def free_slots(self) -> list[int]:
        return [s.index for s in self._slots if s.task is None]

    def affinity(self, member: int) -> int | None:
        for s in self._slots:
            if member in s.members:
                return s.index
        return None

    def submit(self, task: Task, slot: int | None = None) -> None:
        free = [s for s in self._slots if s.task is None]
        if not free:
            raise RuntimeError("no free worker: the driver submitted beyond capacity")
        chosen = next((s for s in free if s.index == slot), None)
        if chosen is None:
            chosen = next((s for s in free if task.member in s.members), free[0])
        for s in self._slots:
            if s is not chosen and task.member in s.members:
                s.members.discard(task.member)  # its copy is stale once another worker trains
                s.conn.send(("forget", task.member))
        chosen.task = task
        assert chosen.conn is not None
        chosen.conn.send(("task", task))

    def poll(self, timeout: float | None) -> list[TaskResult]:
        busy = {s.conn: s for s in self._slots if s.task is not None}
        sentinels = {s.proc.sentinel: s for s in self._slots if s.task is not None}
        if not busy:
            return []
        ready = wait(list(busy) + list(sentinels), timeout)
        out: list[TaskResult] = []
        done: set[int] = set()
        for r in ready:
            slot = busy.get(r) or sentinels.get(r)
            if slot is None or slot.index in done:
                continue
            done.add(slot.index)
            task = slot.task
            assert task is not None
            try:
                if slot.conn.poll():
                    kind, result = slot.conn.recv()
                    if kind == "result":
                        slot.task = None
                        if result.checkpoint is not None:
                            slot.members.add(task.member)
                        else:
                            slot.members.discard(task.member)
                        out.append(result)
                        continue
            except (EOFError, OSError):
                pass
            # the process died mid-task: report it and start a replacement
            slot.proc.join(timeout=5)
            code = slot.proc.exitcode
            out.append(
                TaskResult(
                    task=task,
                    error=(
                        f"worker process {slot.index} died while training member {task.member} "
                        f"(exit code {code}); the member restarts from its last checkpoint"
                    ),
                    worker=f"local-{slot.index}",
                )
            )
            self._spawn(slot)
            self._await_ready(slot)
        return out

    def forget(self, member: int) -> None:
        for s in self._slots:
            if member in s.members:
                s.members.discard(member)
                if s.conn is not None:
                    s.conn.send(("forget", member))

    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and monitoring)."""
        return [s.proc.pid for s in self._slots if s.proc is not None]

    def shutdown(self) -> None:
        for s in self._slots:
            if s.conn is not None and s.proc is not None and s.proc.is_alive():
                try:
                    s.conn.send(("stop", None))
                except (OSError, BrokenPipeError):
                    pass
        for s in self._slots:
            if s.proc is not None:
                s.proc.join(timeout=5)
                if s.proc.is_alive():
                    s.proc.terminate()
                    s.proc.join(timeout=5)
            if s.conn is not None:
                s.conn.close()
        self._slots = []
