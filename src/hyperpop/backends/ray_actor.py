"""The Ray backend's worker: the actor class every slot runs, and how the trainable reaches it.

:class:`RayActor` is wrapped with ``ray.remote`` when the backend starts. It runs the same
:class:`~hyperpop.backends.worker.WorkerCore` as a local worker process, so the members it
trains stay in its memory between intervals; with ``processes_per_member`` above 1 it runs
each interval on a group of processes on its own node instead
(:class:`~hyperpop.backends.ray_group.RayGroup`).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import ray

from hyperpop.backends.base import Task, TaskResult
from hyperpop.backends.processes import thread_env, torch_threads
from hyperpop.backends.transfer import SharedStorage, Transfer, WorkerStore
from hyperpop.trainable import Trainable

__all__ = ["RayActor", "dumps_factory", "remote_actor"]


class RayActor:
    """A worker on the cluster.

    The process outlives a run when the backend keeps its actors warm: each run opens a
    session with :meth:`begin` (its trainable, storage and a key naming the run and the
    session), which drops everything the previous session held, and every task names its
    session, so no member's state or blob ever crosses from one run to another.
    """

    def __init__(self, threads: int):
        thread_env(threads, os.environ)
        self.threads = threads
        self.session: str | None = None
        self.error: str | None = None
        self.core: Any = None
        self.store: WorkerStore | None = None
        self.group: Any = None  # a RayGroup, with processes_per_member > 1

    def begin(
        self,
        session: str,
        factory_bytes: bytes,
        name: str,
        cache_size: int | None,
        shared: str | None,
        probe: str | None,
        transfer: Transfer,
        threshold: int,
        processes: int = 1,
    ) -> dict[str, Any]:
        """Start a session: forget the previous one's members, load this run's trainable;
        returns who and where this actor is, whether it loaded the trainable, and how long
        that took."""
        t0 = time.perf_counter()
        self.end()
        from hyperpop.backends.worker import WorkerCore

        self.error = None
        storage = SharedStorage(shared) if shared else None
        sees = bool(storage is not None and probe and storage.sees(probe))
        self.store = WorkerStore(storage, sees_shared=sees, transfer=transfer, threshold=threshold)
        try:
            factory = cloudpickle.loads(factory_bytes)
        except Exception as e:  # noqa: BLE001 - reported to the driver
            self.error = f"cannot load the trainable in a Ray actor: {e!r}"
            factory = None
        torch_threads(self.threads)
        self.core = WorkerCore(factory, self.store, name=name, cache_size=cache_size)
        if processes > 1 and self.error is None:
            from hyperpop.backends.ray_group import RayGroup

            try:
                self.group = RayGroup(processes, factory_bytes, name, cache_size, self.threads)
            except Exception as e:  # noqa: BLE001 - reported to the driver
                self.error = f"cannot start member processes in a Ray actor: {e}"
            sees = False  # the ranks read and write the group's own folder
        self.session = session
        return {
            "error": self.error,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "sees_shared": sees,
            "setup_seconds": time.perf_counter() - t0,
        }

    def run(
        self, session: str, task: Task, data: bytes | None
    ) -> tuple[tuple[TaskResult, dict[int, str | None], str], Any]:
        """Train one interval; returns (result, held members, where the blob went), bytes."""
        if session != self.session or self.core is None or self.store is None:
            # never train on another session's state (a task sent before the actor moved on)
            error = f"Ray actor session {self.session!r} got a task of session {session!r}"
            return (TaskResult(task=task, error=error), {}, ""), None
        if self.group is not None:
            result, out = self.group.run(task, data)
            return (result, dict(self.group.held), "object" if out else ""), out
        store = self.store
        store.incoming = {task.checkpoint: data} if data is not None and task.checkpoint else {}
        result = self.core.run(task)
        store.incoming = {}
        where = store.written.get(result.checkpoint or "", "")
        out = store.outgoing.get(result.checkpoint or "") if where == "object" else None
        store.outgoing.clear()
        store.written.clear()
        held = {m: h.blob for m, h in self.core.held.items()}
        return (result, held, where), out

    def forget(self, session: str, member: int) -> None:
        """Drop a member's in-memory state."""
        if session == self.session and self.group is not None:
            self.group.forget(member)
        elif session == self.session and self.core is not None:
            self.core.forget(member)

    def end(self) -> None:
        """End the session: release every member's trainable (``cleanup``) and the trainable
        itself; the process stays, ready for another :meth:`begin`."""
        if self.core is not None:
            self.core.forget_all()
        if self.group is not None:
            self.group.close()
        self.core, self.store, self.session, self.group = None, None, None, None


def remote_actor(
    cpus: float, gpus: float, resources: dict[str, float], runtime_env: dict[str, Any] | None
) -> Any:
    """:class:`RayActor` as a Ray actor class reserving these resources (never restarted: the
    backend replaces a dead actor itself)."""
    options: dict[str, Any] = {
        "num_cpus": cpus,
        "num_gpus": gpus,
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    if resources:
        options["resources"] = resources
    if runtime_env:
        options["runtime_env"] = runtime_env
    return ray.remote(RayActor).options(**options)


def _installed(module: Any) -> bool:
    """Whether a module comes from an installed package (importable on every node alike)."""
    top = (getattr(module, "__name__", "") or "").split(".")[0]
    if top == "hyperpop":
        return True
    path = getattr(module, "__file__", None)
    if not path:
        return True  # built-in
    path = os.path.realpath(path)
    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    roots |= {sys.prefix, sys.base_prefix}
    return any(path.startswith(os.path.realpath(r) + os.sep) for r in roots if r)


def dumps_factory(factory: Callable[[], Trainable], by_value: bool | None) -> bytes:
    """Pickle the factory; the user's own module travels by value unless it is installed."""
    target = getattr(factory, "cls", None) or getattr(factory, "fn", None) or factory
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    register = (
        module is not None
        and module.__name__ != "__main__"
        and (by_value if by_value is not None else not _installed(module))
    )
    if register:
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:  # already registered (a run file)
            register = False
    try:
        return cloudpickle.dumps(factory)
    finally:
        if register:
            cloudpickle.unregister_pickle_by_value(module)
