"""Worker processes on this machine: how one is started, and the loop it serves tasks with.

A worker is a fresh interpreter (``python -m hyperpop.backends._worker FD PARENT``: safe with
threaded libraries such as PyTorch, and it never imports the driver's ``__main__``) that
receives the trainable by value (cloudpickle) over a socket and keeps the trainables of the
members it trains in memory (:class:`~hyperpop.backends.worker.WorkerCore`). The kernel kills
it when its parent dies (Linux), so no orphan trains on after a ``kill -9`` of the driver.

A worker may be one rank of a member's process group
(:mod:`hyperpop.backends.process_group`): rank 0 reports progress and writes the member's
checkpoint; the other ranks train the same interval, load the same checkpoints and save
nothing (:class:`RankStore`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, MutableMapping
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from hyperpop.backends.base import Task
from hyperpop.checkpoints import CheckpointStore, StateStore

if TYPE_CHECKING:
    from hyperpop.backends.worker import WorkerCore

__all__ = [
    "PROGRESS_EVERY",
    "THREAD_VARS",
    "RankStore",
    "WorkerProcess",
    "spawn_worker",
    "thread_env",
    "torch_threads",
]

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: seconds between two progress messages of a worker
PROGRESS_EVERY = 0.5


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


def thread_env(threads: int, env: MutableMapping[str, str]) -> None:
    """One core's worth of threads each: ``OMP_NUM_THREADS`` and friends in ``env`` (where
    not set), read by numerical libraries as they are imported."""
    for var in THREAD_VARS:
        env.setdefault(var, str(threads))


def torch_threads(threads: int) -> None:
    """PyTorch ignores ``OMP_NUM_THREADS`` if it was imported before it was set: if it is
    imported already, size its thread pool as this process's ``OMP_NUM_THREADS`` says (the
    one the environment had wins, as in :func:`thread_env`), else as ``threads``."""
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    try:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n if n > 0 else threads)
    except Exception:  # noqa: BLE001
        pass


def _flush() -> None:
    """Flush this process's output streams (a closed or broken one is left)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def _output_to(path: str | None) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: prints and C libraries'
    output alike) to ``path`` while the block runs (None: leave them)."""
    if path is None:
        yield
        return
    _flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        yield
    finally:
        _flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


class RankStore(StateStore):
    """Where a rank other than 0 saves: nowhere (rank 0 writes the member's blob, and the
    group's supervisor tells the other ranks its id); it loads from the checkpoint folder."""

    def __init__(self, inner: StateStore):
        self.inner = inner

    def save(self, member: int, step: int, state: Any) -> str:
        return f"rank-copy-m{member}-s{step}"

    def load(self, blob: str) -> Any:
        return self.inner.load(blob)


def _worker_main(
    conn: Connection,
    factory_bytes: bytes,
    root: str,
    name: str,
    cache: int | None,
    threads: int,
    parent: int,
    log_dir: str | None = None,
    cache_bytes: int | None = None,
    rank: int = 0,
) -> None:
    """Serve tasks over ``conn`` until told to stop or the driver goes away."""
    _die_with_parent(parent)
    # Ctrl-C in a terminal reaches the whole process group: the driver decides, workers ignore.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Before the user's code imports numerical libraries: one core's worth of threads each.
    thread_env(threads, os.environ)
    from hyperpop.backends.worker import WorkerCore

    try:
        factory = pickle.loads(factory_bytes)
    except Exception as e:  # noqa: BLE001 - reported to the driver
        conn.send(("fatal", f"cannot load the trainable in a worker process: {e!r}"))
        return
    torch_threads(threads)
    store: StateStore = CheckpointStore(root)
    if rank > 0:
        store = RankStore(store)
    core = WorkerCore(factory, store, name=name, cache_size=cache, cache_bytes=cache_bytes)
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = name if devices is None else f"{name}, CUDA_VISIBLE_DEVICES={devices}"
    conn.send(("ready", None))
    while True:
        try:
            msg, arg = conn.recv()
        except (EOFError, OSError):
            return
        if msg == "task":
            _train(conn, core, arg, rank, _log_path(log_dir, arg.member, rank), where)
        elif msg == "blob":  # rank > 0: the id rank 0 gave the checkpoint this rank holds
            member, blob = arg
            held = core.held.get(member)
            if held is not None:
                held.blob = blob
        elif msg == "forget":
            core.forget(arg)
        elif msg == "stop":
            _stop(core)
            return


def _stop(core: WorkerCore) -> None:
    """Release every member's trainable before the worker exits."""
    core.forget_all()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # a rank of a group: the interpreter's teardown may wait on its process group's
        # peers (seconds); nothing is left to flush but the output streams
        _flush()
        os._exit(0)
    # The driver waits for its workers to exit at the end of every run. The interpreter's
    # teardown collects garbage several times over every object the user's libraries made
    # (0.8 s with PyTorch and scikit-learn loaded, seconds on a busy machine): collect once
    # now (what the members left in reference cycles is finalized), then leave the
    # objects still in use out of the collections that follow (0.3 s).
    gc.collect()
    gc.freeze()


def _log_path(log_dir: str | None, member: int, rank: int) -> str | None:
    """Where a rank's output goes while it trains ``member`` (None: where it goes anyway)."""
    if log_dir is None:
        return None
    suffix = f".rank{rank}" if rank > 0 else ""
    return os.path.join(log_dir, f"member-{member}{suffix}.log")


def _train(
    conn: Connection, core: WorkerCore, task: Task, rank: int, log: str | None, where: str
) -> None:
    """Train one interval, telling the driver its progress (rank 0, every
    :data:`PROGRESS_EVERY` seconds), then the members dropped from memory meanwhile (before
    the result: the driver's record of who is held here), then the result."""
    last = time.monotonic()

    def step(n: int) -> None:
        nonlocal last
        if rank == 0 and time.monotonic() - last >= PROGRESS_EVERY:
            last = time.monotonic()
            conn.send(("progress", (task.member, n)))

    with _output_to(log):
        if log is not None:
            print(
                f"[hyperpop] {time.strftime('%Y-%m-%d %H:%M:%S')} member {task.member}: "
                f"from step {task.step}, config {task.config} ({where}"
                + (f", attempt {task.attempt + 1})" if task.attempt else ")"),
                flush=True,
            )
        result = core.run(task, on_step=step)
    evicted = core.take_evicted()
    if evicted:
        conn.send(("evicted", evicted))
    conn.send(("result", result))


class WorkerProcess:
    """A worker process started as a fresh interpreter, with the few methods of
    :class:`multiprocessing.Process` the backends use. Its ``sentinel`` is a pidfd (Linux),
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
        if self._pidfd is not None and self._popen.poll() is None:
            # readable the moment the process exits (``Popen.wait`` with a timeout polls, up to
            # 50 ms late, and every run waits on each of its workers at its end)
            wait([self._pidfd], timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(0 if self._pidfd is not None else timeout)

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


def spawn_worker(
    init: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[WorkerProcess, Connection]:
    """Start a worker process with environment ``env`` and send it ``init`` (the settings
    :func:`hyperpop.backends._worker.main` reads: the trainable's factory pickled, the
    checkpoint folder, its name, cache limits, threads, log folder and rank). A worker that
    dies at once is found by the caller's first read of the connection."""
    ours, theirs = socket.socketpair()
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
            env=dict(env),
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    proc = WorkerProcess(popen, conn.fileno())
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, EOFError, OSError):
        conn.send(("init", {"path": list(sys.path), **init}))
    return proc, conn
