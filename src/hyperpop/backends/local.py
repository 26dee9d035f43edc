"""The embedded default backend: persistent worker processes on this machine.

Each worker is a process started once as a fresh interpreter (``python -m
hyperpop.backends._worker``: safe with threaded libraries such as PyTorch, and it never imports
the driver's ``__main__``, so a script, a notebook cell, ``python -c`` or ``python - < file`` need
no main guard) that receives the trainable by value (cloudpickle) and keeps the trainables of the
members it trains in memory. Tasks and results travel
over a pipe per worker; checkpoints travel as blob ids, never as copies. A worker process that
dies is replaced: busy, its task is reported as a failure of its member; idle, the members whose
state it held load their checkpoints when they train next. With a step timeout, a task that runs
longer is failed and its worker killed and replaced.

With GPUs (``gpus=``, ``gpus_per_member=``) each worker gets its device(s) through its own
``CUDA_VISIBLE_DEVICES``, set before it starts (so before user code imports PyTorch), and a
replacement gets the same ones. What a worker keeps in memory is bounded by a byte budget of
saved-state size (``cache_bytes``, by default a share of the worker's GPU or host memory).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.cache import FALLBACK_COUNT, ByteBudget, auto_budget, parse_bytes
from hyperpop.backends.gpus import GpuSpec, gpu_memory, placement
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


@contextlib.contextmanager
def _output_to(path: str | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: prints and C libraries'
    output alike) to ``path`` while the block runs (None: leave them)."""
    if path is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


#: seconds between two progress messages of a worker
PROGRESS_EVERY = 0.5


def _worker_main(
    conn: Connection,
    factory_bytes: bytes,
    root: str,
    name: str,
    cache,
    threads,
    parent: int,
    log_dir: str | None = None,
    cache_bytes: int | None = None,
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
    core = WorkerCore(
        factory, CheckpointStore(root), name=name, cache_size=cache, cache_bytes=cache_bytes
    )
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = name if devices is None else f"{name}, CUDA_VISIBLE_DEVICES={devices}"
    conn.send(("ready", None))
    while True:
        try:
            msg, arg = conn.recv()
        except (EOFError, OSError):
            return
        if msg == "task":
            last = [time.monotonic()]

            def step(n: int, member: int = arg.member, last: list[float] = last) -> None:
                if time.monotonic() - last[0] >= PROGRESS_EVERY:
                    last[0] = time.monotonic()
                    conn.send(("progress", (member, n)))

            log = None
            if log_dir is not None:
                log = os.path.join(log_dir, f"member-{arg.member}.log")
            with _output_to(log):
                if log is not None:
                    print(
                        f"[hyperpop] {time.strftime('%Y-%m-%d %H:%M:%S')} member {arg.member}: "
                        f"from step {arg.step}, config {arg.config} ({where}"
                        + (f", attempt {arg.attempt + 1})" if arg.attempt else ")"),
                        flush=True,
                    )
                result = core.run(arg, on_step=step)
            evicted = core.take_evicted()
            if evicted:  # before the result: the driver's record of who is held here
                conn.send(("evicted", evicted))
            conn.send(("result", result))
        elif msg == "forget":
            core.forget(arg)
        elif msg == "stop":
            for member in list(core.held):
                core.forget(member)
            return


def _start_failure(slot: Any) -> str:
    """Why a worker process exited before it was ready (its own error is on stderr)."""
    slot.proc.join(timeout=5)
    return (
        f"worker process {slot.index} exited at start (exit code {slot.proc.exitcode}); "
        "its error is printed above"
    )


class _Process:
    """A worker process started as a fresh interpreter, with the few methods of
    :class:`multiprocessing.Process` the backend uses. Its ``sentinel`` is a pidfd (Linux),
    readable once the process has exited."""

    def __init__(self, popen: subprocess.Popen, conn_fd: int):
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        try:
            # Linux only: other platforms' stubs have no pidfd_open
            self._pidfd = os.pidfd_open(popen.pid)  # type: ignore[attr-defined, unused-ignore]
        except (AttributeError, OSError):
            pass
        #: readable when the process has exited (a pidfd), or, without pidfds, its connection
        self.sentinel = self._pidfd if self._pidfd is not None else conn_fd

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.terminate()

    def close(self) -> None:
        """Release the pidfd (the process must be gone or given up)."""
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.proc: Any = None
        self.conn: Connection | None = None
        self.task: Task | None = None
        self.since = 0.0  # when the task was sent (time.monotonic())
        self.members: set[int] = set()  # members whose latest state this worker holds
        self.evicted: set[int] = set()  # members its worker dropped during the running task
        self.devices: tuple[str, ...] | None = None  # its GPUs (CUDA_VISIBLE_DEVICES)
        self.cache_bytes: int | None = None  # its worker's byte budget for held members
        self.cache_size: int | None = None  # its worker's count limit for held members


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
    ):
        cores = os.cpu_count() or 1
        if workers is not None and (
            isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
        ):
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        if cache_size is not None and (
            isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0
        ):
            raise ValueError(
                f"cache_size must be a number of members >= 0 or None (no count limit), got "
                f"{cache_size!r}"
            )
        self.devices = placement(gpus, gpus_per_member, workers, gpu_discovery)
        self.gpus_per_member = None if self.devices is None else (gpus_per_member or 1.0)
        self.workers = len(self.devices) if self.devices is not None else int(workers or cores)
        self.cache_size = cache_size
        if not (isinstance(cache_bytes, str) and cache_bytes == "auto"):
            parse_bytes(cache_bytes)  # a bad value fails here, not in start()
        self.cache_bytes = cache_bytes
        self.threads = threads_per_worker or max(1, cores // self.workers)
        self._slots: list[_Slot] = []
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
        self._slots = [_Slot(i) for i in range(self.workers)]
        budgets = self._budgets()
        for slot in self._slots:
            slot.devices = None if self.devices is None else self.devices[slot.index]
            slot.cache_bytes = budgets[slot.index]
            slot.cache_size = self.cache_size
            if slot.cache_bytes is None and self.cache_bytes == "auto" and self.cache_size is None:
                slot.cache_size = FALLBACK_COUNT  # no memory size to take a share of: a count
        for slot in self._slots:
            self._spawn(slot)
        for slot in self._slots:
            self._await_ready(slot)

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

    def _spawn(self, slot: _Slot) -> None:
        """Start a fresh interpreter for ``slot`` and send it what it needs (by value)."""
        if slot.proc is not None and hasattr(slot.proc, "close"):
            slot.proc.close()
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        for var in _THREAD_VARS:  # before the worker imports numerical libraries
            env.setdefault(var, str(self.threads))
        if slot.devices is not None:  # the worker sees only its GPUs, numbered as nvidia-smi
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.devices)
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        try:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hyperpop.backends._worker",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        init = {
            "path": list(sys.path),
            "factory": self._factory,
            "root": self._root,
            "name": f"local-{slot.index}",
            "cache": slot.cache_size,
            "cache_bytes": slot.cache_bytes,
            "threads": self.threads,
            "log_dir": self.log_dir,
        }
        slot.proc, slot.conn, slot.task = _Process(popen, conn.fileno()), conn, None
        slot.members, slot.evicted = set(), set()
        self._send(slot, ("init", init))  # a worker dead at once is found by _await_ready

    def set_step_timeout(self, seconds: float | None) -> None:
        """Kill a worker whose task runs longer than ``seconds`` and report the task failed."""
        if seconds is not None and not seconds > 0:
            raise ValueError(f"step_timeout must be a positive number of seconds, got {seconds!r}")
        self.step_timeout = seconds

    def _replace(self, slot: _Slot) -> None:
        """Start a fresh worker in place of the dead (or killed) one in ``slot``."""
        if slot.proc is not None:
            slot.proc.join(timeout=5)
        if slot.conn is not None:
            slot.conn.close()
        self._spawn(slot)
        self._await_ready(slot)

    def _send(self, slot: _Slot, msg: tuple[str, Any]) -> bool:
        """Send to a worker; False if it is dead (the caller decides what that means)."""
        assert slot.conn is not None
        try:
            slot.conn.send(msg)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            return False
        return True

    def _await_ready(self, slot: _Slot, restarts: int = 3) -> None:
        assert slot.conn is not None
        try:
            kind, arg = slot.conn.recv()
        except (EOFError, OSError):  # OSError: a socket reset by a killed worker
            slot.proc.join(timeout=5)
            code = slot.proc.exitcode
            if code is not None and code < 0 and restarts > 0:
                # killed by a signal while starting, not a failure of its own: start another
                slot.conn.close()
                self._spawn(slot)
                self._await_ready(slot, restarts - 1)
                return
            raise RuntimeError(_start_failure(slot)) from None
        if kind == "fatal":
            self.shutdown()
            raise RuntimeError(arg)

    def progress(self) -> dict[int, int]:
        """Steps each running task has trained so far (as its worker last said)."""
        busy = {s.task.member for s in self._slots if s.task is not None}
        return {m: n for m, n in self._progress.items() if m in busy}

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
                self._send(s, ("forget", task.member))  # a dead one is replaced by poll
        chosen.task, chosen.since = task, time.monotonic()
        chosen.evicted = set()
        if not self._send(chosen, ("task", task)):
            # the worker died while idle: replace it and hand the task to the new one
            self._replace(chosen)
            chosen.task, chosen.since = task, time.monotonic()
            if not self._send(chosen, ("task", task)):
                chosen.task = None
                self._results.append(self._died(chosen, task))
                self._replace(chosen)

    def _died(self, slot: _Slot, task: Task) -> TaskResult:
        if slot.proc is not None:
            slot.proc.join(timeout=5)
        code = slot.proc.exitcode if slot.proc is not None else None
        return TaskResult(
            task=task,
            error=(
                f"worker process {slot.index} died while training member {task.member} "
                f"(exit code {code}); the member restarts from its last checkpoint"
            ),
            worker=f"local-{slot.index}",
        )

    def _timed_out(self, slot: _Slot, task: Task) -> TaskResult:
        """Kill the worker of a task past the step timeout; the task's failure."""
        if slot.proc is not None and slot.proc.is_alive():
            slot.proc.kill()
        return TaskResult(
            task=task,
            error=(
                f"member {task.member}'s interval exceeded step_timeout={self.step_timeout:g}s "
                f"(from step {task.step}); its worker process {slot.index} was killed and "
                "replaced, and the member restarts from its last checkpoint (if an interval "
                "can take longer, raise step_timeout)"
            ),
            worker=f"local-{slot.index}",
        )

    def poll(self, timeout: float | None) -> list[TaskResult]:
        out, self._results = self._results, []
        for s in self._slots:  # a worker that died while idle: replace it
            if s.task is None and s.proc is not None and not s.proc.is_alive():
                self._replace(s)
        # keyed by what multiprocessing's wait() takes and returns: connections, descriptors
        busy: dict[Any, _Slot] = {s.conn: s for s in self._slots if s.task is not None}
        if not busy:
            return out
        sentinels = {s.proc.sentinel: s for s in self._slots}
        wait_for = 0.0 if out else timeout
        if self.step_timeout is not None:
            first = min(s.since for s in busy.values()) + self.step_timeout
            left = max(0.0, first - time.monotonic())
            wait_for = left if wait_for is None else min(wait_for, left)
        ready = wait(list(busy) + list(sentinels), wait_for)
        done: set[int] = set()
        for r in ready:
            slot = busy.get(r) or sentinels.get(r)
            if slot is None or slot.index in done:
                continue
            done.add(slot.index)
            task = slot.task
            if task is None:  # an idle worker died
                self._replace(slot)
                continue
            conn = slot.conn
            assert conn is not None  # a worker at work has its connection
            try:
                alive = False
                while conn.poll():
                    kind, result = conn.recv()
                    if kind == "progress":  # steps trained so far: still at work
                        self._progress[result[0]] = result[1]
                        alive = True
                        continue
                    if kind == "evicted":  # dropped from its memory to stay within budget
                        slot.members.difference_update(result)
                        slot.evicted.update(result)
                        alive = True
                        continue
                    if kind == "result":
                        slot.task = None
                        self._progress.pop(task.member, None)
                        if result.checkpoint is not None and task.member not in slot.evicted:
                            slot.members.add(task.member)
                        else:
                            slot.members.discard(task.member)
                        out.append(result)
                        break
                if slot.task is None or (alive and slot.proc.is_alive()):
                    continue
            except (EOFError, OSError):
                pass
            # the process died mid-task: report it and start a replacement
            slot.task = None
            self._progress.pop(task.member, None)
            out.append(self._died(slot, task))
            self._replace(slot)
        if self.step_timeout is not None:
            now = time.monotonic()
            for slot in self._slots:
                task = slot.task
                if task is None or now - slot.since <= self.step_timeout:
                    continue
                if slot.conn is not None and slot.conn.poll():
                    continue  # it finished while this poll replaced another worker: read next
                slot.task = None
                self._progress.pop(task.member, None)
                out.append(self._timed_out(slot, task))
                self._replace(slot)
        return out

    def forget(self, member: int) -> None:
        for s in self._slots:
            if member in s.members:
                s.members.discard(member)
                if s.conn is not None:
                    self._send(s, ("forget", member))  # a dead one is replaced by poll

    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and monitoring)."""
        return [s.proc.pid for s in self._slots if s.proc is not None]

    def shutdown(self) -> None:
        for s in self._slots:
            if s.conn is not None and s.proc is not None and s.proc.is_alive():
                if s.task is not None:
                    # its interval will never be recorded: do not wait for it (a stop, Ctrl-C)
                    s.proc.terminate()
                    continue
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
                if s.proc.is_alive():
                    s.proc.kill()
                    s.proc.join(timeout=5)
                s.proc.close()
            if s.conn is not None:
                s.conn.close()
        self._slots = []
