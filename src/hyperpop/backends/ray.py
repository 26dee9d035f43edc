"""The Ray backend: members train in Ray actors across a Ray cluster.

Each slot is a Ray actor (one per ``workers``, each with ``num_cpus``/``num_gpus``/``resources``)
running the same :class:`~hyperpop.backends.worker.WorkerCore` as a local worker process: it keeps
the trainables of the members it trains in memory, so a member that keeps training on the same
actor moves no state at all. When a member moves (its turn comes on another actor, or it exploits
a donor), its blob travels through Ray's object store or through shared storage
(:mod:`hyperpop.backends.transfer`), always by reference: several receivers of one donor share
one object.

Every blob the event log records is also durable on the driver's side (the checkpoint folder
beside the SQLite store, or the shared storage), so ``resume`` works as on the local backend and
a lost object (a dead node) is re-sent from there. An actor that dies (killed process, lost node)
is reported as a failed task for its member, exactly like a dead local worker process: the
interval's reports were never recorded, the member restarts from its last checkpoint on a new
actor that Ray places wherever resources are free.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import sysconfig
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlparse

try:
    import ray
    from ray import exceptions as ray_errors
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"the ray backend needs Ray: pip install 'hyperpop[ray]' ({e})") from None

import cloudpickle

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.transfer import DEFAULT_THRESHOLD, SharedStorage, Transfer, WorkerStore
from hyperpop.checkpoints import CheckpointError, CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["RayBackend", "RayClusterError"]

log = logging.getLogger("hyperpop")


class RayClusterError(ConnectionError):
    """The Ray cluster cannot be reached, or cannot host the requested workers."""


class _Actor:
    """A worker on the cluster (wrapped with ``ray.remote`` when the backend starts).

    The process outlives a run when the backend keeps its actors warm: each run opens a
    session with :meth:`begin` (its trainable, storage and a key naming the run and the
    session), which drops everything the previous session held, and every task names its
    session, so no member's state or blob ever crosses from one run to another.
    """

    def __init__(self, threads: int):
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
        self.threads = threads
        self.session: str | None = None
        self.error: str | None = None
        self.core: Any = None
        self.store: WorkerStore | None = None

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
        if "torch" in sys.modules:  # PyTorch ignores OMP_NUM_THREADS once imported
            try:
                sys.modules["torch"].set_num_threads(self.threads)
            except Exception:  # noqa: BLE001
                pass
        self.core = WorkerCore(factory, self.store, name=name, cache_size=cache_size)
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
    ) -> tuple[tuple[TaskResult, dict, str], Any]:
        """Train one interval; returns (result, held members, where the blob went), bytes."""
        if session != self.session or self.core is None or self.store is None:
            # never train on another session's state (a task sent before the actor moved on)
            error = f"Ray actor session {self.session!r} got a task of session {session!r}"
            return (TaskResult(task=task, error=error), {}, ""), None
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
        if session == self.session and self.core is not None:
            self.core.forget(member)

    def end(self) -> None:
        """End the session: release every member's trainable (``cleanup``) and the trainable
        itself; the process stays, ready for another :meth:`begin`."""
        if self.core is not None:
            for member in list(self.core.held):
                self.core.forget(member)
        self.core, self.store, self.session = None, None, None


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.generation = 0
        self.actor: Any = None
        self.name = ""
        self.info: dict[str, Any] | None = None  # from ready(), once known
        self.ready_ref: Any = None
        self.task: Task | None = None
        self.refs: tuple[Any, Any] | None = None
        self.held: dict[int, str | None] = {}  # member -> blob it holds in memory


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


def _dumps_factory(factory: Callable[[], Trainable], by_value: bool | None) -> bytes:
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


def _probe_address(address: str, timeout: float) -> None:
    """Fail fast (within ``timeout``) when nothing listens at a Ray address."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        return
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RayClusterError(
            f"cannot reach the Ray cluster at {address}: {e}. Start one with `ray start --head` "
            "(a client connects to ray://HEAD:10001, a process on a node uses address='auto'), "
            "or check the address and firewall"
        ) from None


class RayBackend(Backend):
    """Members train in Ray actors on a Ray cluster.

    Args:
        workers: actors, i.e. members training at once (default: as many as the cluster's
            resources hold with ``num_cpus``/``num_gpus`` each). The population may be larger:
            members take turns, as on the local backend.
        address: the cluster (``"auto"``, ``"HOST:6379"`` or ``"ray://HEAD:10001"``); None
            uses the running Ray session, ``RAY_ADDRESS``, or starts a local cluster.
        num_cpus: CPUs per actor (fractions allowed).
        num_gpus: GPUs per actor (fractions allowed, e.g. 0.25 puts four members on a GPU).
        resources: custom Ray resources per actor.
        cache_size: members' trainables each actor keeps in memory (None: no limit).
        transfer: how state moves between actors: ``"object"`` (Ray's object store),
            ``"shared"`` (shared storage) or ``"auto"``: by size (see ``threshold``), shared
            storage only for the actors that see it.
        shared_storage: a folder every node sees or an fsspec URL (``s3://bucket/run``).
            Default: the run's checkpoint folder, used by the actors that can see it (all of them
            on one machine or when the store is on a shared filesystem).
        threshold: under ``transfer="auto"``, blobs of at least this many bytes go through
            shared storage and smaller ones through the object store.
        runtime_env: Ray runtime environment for the actors (``pip``, ``working_dir``...).
        pickle_by_value: send the trainable's module by value (default: when it is not an
            installed package, so a script or test module needs no copy on the workers).
        connect_timeout: seconds to wait for the cluster's address to answer.
        start_timeout: seconds to wait for the actors to be placed and started.
        init_options: more keyword arguments for ``ray.init``.
        keep_actors: keep the actors (and a Ray session this backend started) after a run,
            for the next run or resume given this same backend instance: they start the next
            run at once, with nothing of the last run's members in them. :meth:`close` (or
            leaving a ``with`` block) stops them; so does the end of this process.

    Attributes:
        timings: where the last :meth:`start` spent its time, in seconds: ``connect``
            (``ray.init``; 0 when already connected), ``prepare`` (hyperpop on the driver:
            pickling the trainable, the shared-storage probe), ``actors`` (from asking for the
            actors until all of them answered: Ray placing and starting them, then hyperpop's
            setup in each), ``actor_setup`` (the longest of those setups: loading the
            trainable), ``reused`` (warm actors that served this run; they cost no start).
    """

    name = "ray"

    def __init__(
        self,
        workers: int | None = None,
        *,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        resources: Mapping[str, float] | None = None,
        cache_size: int | None = None,
        transfer: Transfer = "auto",
        shared_storage: str | os.PathLike[str] | None = None,
        threshold: int = DEFAULT_THRESHOLD,
        runtime_env: Mapping[str, Any] | None = None,
        pickle_by_value: bool | None = None,
        connect_timeout: float = 15.0,
        start_timeout: float = 300.0,
        init_options: Mapping[str, Any] | None = None,
        keep_actors: bool = False,
    ):
        if transfer not in ("auto", "object", "shared"):
            raise ValueError(f"transfer must be 'auto', 'object' or 'shared', got {transfer!r}")
        if num_cpus < 0 or num_gpus < 0:
            raise ValueError("num_cpus and num_gpus must be >= 0")
        self.address = address
        self.num_cpus, self.num_gpus = float(num_cpus), float(num_gpus)
        self.resources = dict(resources or {})
        self.cache_size = cache_size
        self.transfer: Transfer = transfer
        self.shared_location = None if shared_storage is None else str(shared_storage)
        self.threshold = int(threshold)
        self.runtime_env = dict(runtime_env) if runtime_env else None
        self.pickle_by_value = pickle_by_value
        self.connect_timeout = connect_timeout
        self.start_timeout = start_timeout
        self.init_options = dict(init_options or {})
        self._owns_ray = False
        self.keep_actors = bool(keep_actors)
        self._warm: list[Any] = []  # actors kept from the last run, between sessions
        self._warm_job = ""  # the Ray job (driver connection) they belong to
        self._session = ""
        self.timings: dict[str, float] = {}
        self._connect_seconds = 0.0
        if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self._requested = int(workers) if workers else None
        #: actors to start: as asked, or the cluster's slots (known once connected)
        self.workers = 0
        self._slots: list[_Slot] = []
        self._refs: dict[str, Any] = {}  # blob -> ObjectRef of its bytes (owned by the driver)
        self._checkpoints: CheckpointStore | None = None
        self._shared: SharedStorage | None = None
        self._shared_is_local = False
        self._probe: str | None = None
        self._factory = b""
        self._remote: Any = None
        #: actors replaced after they died (for monitoring and tests)
        self.replaced = 0
        #: blobs saved through each path ("object", "shared")
        self.saved: Counter[str] = Counter()
        #: starting blobs sent with a task through each path ("object", "shared"); "cached"
        #: counts tasks whose actor already held the member's state in memory
        self.sent: Counter[str] = Counter()

    # --- the cluster ---------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the cluster (``ray.init``, unless the caller already did) and size the
        backend: :meth:`start` does it, and so does the first look at :attr:`capacity`.
        Building a RayBackend connects to nothing."""
        if self.workers and ray.is_initialized():
            return
        self._warm = []  # Ray was shut down under a kept backend: its actors are gone
        t0 = time.perf_counter()
        self._connect()
        self._connect_seconds = time.perf_counter() - t0
        self.workers = self._requested or self._cluster_slots()

    def _connect(self) -> None:
        if self.address:
            _probe_address(self.address, self.connect_timeout)
        if ray.is_initialized():
            return  # a session the caller started (e.g. ray.init in a notebook)
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
        if self.address:
            kwargs["address"] = self.address
        kwargs.update(self.init_options)
        try:
            ray.init(**kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises several kinds
            raise RayClusterError(
                f"cannot connect to the Ray cluster at {self.address or 'RAY_ADDRESS/local'}: {e}"
            ) from None
        self._owns_ray = True

    def _cluster_slots(self) -> int:
        total = ray.cluster_resources()
        fits = []
        if self.num_cpus > 0:
            fits.append(total.get("CPU", 0.0) / self.num_cpus)
        if self.num_gpus > 0:
            fits.append(total.get("GPU", 0.0) / self.num_gpus)
        for k, v in self.resources.items():
            if v > 0:
                fits.append(total.get(k, 0.0) / v)
        n = int(min(fits) + 1e-9) if fits else int(total.get("CPU", 1))
        if n < 1:
            raise RayClusterError(
                f"the Ray cluster ({dict(total)}) cannot hold one actor with num_cpus="
                f"{self.num_cpus}, num_gpus={self.num_gpus}, resources={self.resources}"
            )
        return n

    @property
    def capacity(self) -> int:
        """Actors that can take a task now: a replacement for an actor lost with its node
        counts once Ray has placed and started it (it may wait for resources the node took
        with it; the others train every member meanwhile)."""
        if not self._slots:
            self.connect()
            return self.workers
        n = sum(1 for s in self._slots if s.task is not None or self._started(s))
        if n == 0:  # every actor waits to be placed: wait a little instead of spinning
            ray.wait([s.ready_ref for s in self._slots], num_returns=1, timeout=0.5)
            n = sum(1 for s in self._slots if self._started(s))
        return n

    def _started(self, slot: _Slot) -> bool:
        """Whether the slot's actor has started (never blocks)."""
        if slot.info is not None:
            return True
        done, _ = ray.wait([slot.ready_ref], num_returns=1, timeout=0)
        if not done:
            return False
        try:
            slot.info = ray.get(slot.ready_ref)
        except ray_errors.RayError as e:  # it died before it started (its node too): again
            log.warning("Ray actor %s died while starting (%s); starting another", slot.name, e)
            self._replace(slot)
            return False
        return True

    # --- actors --------------------------------------------------------------------------
    def start(self, factory: Callable[[], Trainable], checkpoints: CheckpointStore) -> None:
        self.connect()
        t0 = time.perf_counter()
        self._factory = _dumps_factory(factory, self.pickle_by_value)
        self._checkpoints = checkpoints
        # the run's id (the checkpoint folder's owner) and a fresh token: a warm actor keys
        # everything it holds by this, so no state crosses between runs or sessions
        self._session = f"{checkpoints.owner or checkpoints.root}#{uuid.uuid4().hex[:12]}"
        if self.transfer != "object":
            location = self.shared_location or str(checkpoints.root.resolve())
            self._shared = SharedStorage(location)
            self._shared_is_local = not self._shared.is_url and os.path.realpath(
                self._shared._root
            ) == os.path.realpath(checkpoints.root)
            self._probe = self._shared.make_probe()
        if self._remote is None:
            options: dict[str, Any] = {
                "num_cpus": self.num_cpus,
                "num_gpus": self.num_gpus,
                "max_restarts": 0,
                "max_task_retries": 0,
            }
            if self.resources:
                options["resources"] = self.resources
            if self.runtime_env:
                options["runtime_env"] = self.runtime_env
            self._remote = ray.remote(_Actor).options(**options)
        warm, self._warm = self._warm, []
        if warm and self._warm_job != _job():  # Ray was restarted since: they are gone
            warm = []
        for actor in warm[self.workers :]:
            _kill(actor)
        self._slots = [_Slot(i) for i in range(self.workers)]
        prepared = time.perf_counter()
        for slot, actor in zip(self._slots, warm):
            slot.actor = actor
            slot.name = f"ray-{slot.index}"
            try:
                self._begin(slot)
            except Exception:  # noqa: BLE001 - gone with a session Ray cannot find: a new one
                self._spawn(slot)
        for slot in self._slots[len(warm) :]:
            self._spawn(slot)
        self.timings = {
            "connect": self._connect_seconds,
            "prepare": prepared - t0,
            "reused": float(min(len(warm), self.workers)),
        }
        self._connect_seconds = 0.0
        refs = [slot.ready_ref for slot in self._slots]
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=self.start_timeout)
        try:
            if pending:
                raise RayClusterError(
                    f"only {len(done)} of {len(refs)} Ray actors started within "
                    f"{self.start_timeout:.0f}s; each needs num_cpus={self.num_cpus}, "
                    f"num_gpus={self.num_gpus}, resources={self.resources} and the cluster "
                    f"has {ray.cluster_resources()}. Lower workers= or the per-member resources"
                )
            for slot in self._slots:
                for attempt in range(self.START_ATTEMPTS):
                    try:
                        slot.info = ray.get(slot.ready_ref, timeout=self.start_timeout)
                        break
                    except ray_errors.RayError as e:
                        # an actor that dies before it ran (a worker process that could not
                        # register in time on a loaded node, or a warm one that died between
                        # runs) is started again, like a local worker killed while it starts
                        if attempt + 1 == self.START_ATTEMPTS:
                            raise RuntimeError(
                                f"a Ray actor failed to start {self.START_ATTEMPTS} times: {e}"
                            ) from None
                        self._replace(slot)
                info = slot.info
                assert info is not None  # the loop above set it or raised
                if info["error"]:
                    raise RuntimeError(info["error"])
                if self.transfer == "shared" and not info["sees_shared"]:
                    raise RayClusterError(
                        f"transfer='shared' but the actor on node {info['node']} cannot see "
                        f"the shared storage {self._shared.location if self._shared else None}; "
                        "pass shared_storage= a folder every node mounts or an fsspec URL"
                    )
        except BaseException:
            self.close()
            raise
        self.timings["actors"] = time.perf_counter() - prepared
        self.timings["actor_setup"] = max(
            (s.info["setup_seconds"] for s in self._slots if s.info), default=0.0
        )
        t = self.timings
        log.info(
            "Ray start: ray.init %.2fs, %d actors %.2fs (%d warm; loading the trainable %.2fs), "
            "hyperpop's preparation %.2fs",
            t["connect"],
            self.workers,
            t["actors"],
            t["reused"],
            t["actor_setup"],
            t["prepare"],
        )

    #: tries to start each actor before the run gives up
    START_ATTEMPTS = 3

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.name = f"ray-{slot.index}" + (f".{slot.generation - 1}" if slot.generation > 1 else "")
        slot.actor = self._remote.remote(max(1, int(self.num_cpus)))
        self._begin(slot)

    def _begin(self, slot: _Slot) -> None:
        """Open this run's session on the slot's actor (new or warm); its answer is the
        slot's ``ready_ref``."""
        slot.ready_ref = slot.actor.begin.remote(
            self._session,
            self._factory,
            slot.name,
            self.cache_size,
            self._shared.location if self._shared else None,
            self._probe,
            self.transfer,
            self.threshold,
        )
        slot.info, slot.task, slot.refs, slot.held = None, None, None, {}

    def _replace(self, slot: _Slot) -> None:
        _kill(slot.actor)
        self.replaced += 1
        self._spawn(slot)

    # --- state transfer ------------------------------------------------------------------
    def release(self, blob: str) -> None:
        """The driver collected ``blob``: free its object and its shared copy."""
        self._refs.pop(blob, None)
        if self._shared is not None and not self._shared_is_local:
            try:
                self._shared.delete(blob)
            except Exception as e:  # noqa: BLE001 - garbage left behind, not an error
                log.debug("cannot delete %s from %s: %s", blob, self._shared.location, e)

    def _in_shared(self, blob: str) -> bool:
        if self._shared is None:
            return False
        if self._shared_is_local:
            assert self._checkpoints is not None
            return self._checkpoints.exists(blob)
        try:
            return self._shared.exists(blob)
        except Exception:  # noqa: BLE001
            return False

    def _data_for(self, task: Task, slot: _Slot) -> Any:
        """What to send with a task: None (cached, or read from shared storage) or an ObjectRef."""
        blob = task.checkpoint
        if blob is None:
            return None
        if slot.held.get(task.member) == blob:
            self.sent["cached"] += 1
            return None
        ref = self._refs.get(blob)
        if ref is not None:
            self.sent["object"] += 1
            return ref
        sees = slot.info["sees_shared"] if slot.info else False
        if sees and self._in_shared(blob):
            self.sent["shared"] += 1
            return None
        assert self._checkpoints is not None
        try:
            if self._checkpoints.exists(blob):
                data = self._checkpoints.read(blob)
            elif self._shared is not None:
                data = self._shared.read(blob)
            else:
                return None  # the worker reports the missing checkpoint
        except CheckpointError:
            return None
        ref = ray.put(data)
        self._refs[blob] = ref
        self.sent["object"] += 1
        return ref

    # --- tasks ---------------------------------------------------------------------------
    def free_slots(self) -> list[int]:
        return [s.index for s in self._slots if s.task is None and self._started(s)]

    def affinity(self, member: int) -> int | None:
        for s in self._slots:
            if member in s.held:
                return s.index
        return None

    def submit(self, task: Task, slot: int | None = None) -> None:
        free = [s for s in self._slots if s.task is None and self._started(s)]
        if not free:
            raise RuntimeError("no free actor: the driver submitted beyond capacity")
        chosen = next((s for s in free if s.index == slot), None)
        if chosen is None:
            chosen = next((s for s in free if task.member in s.held), free[0])
        for s in self._slots:
            if s is not chosen and task.member in s.held:
                del s.held[task.member]  # its copy is stale once another actor trains
                s.actor.forget.remote(self._session, task.member)
        data = self._data_for(task, chosen)
        meta, out = chosen.actor.run.options(num_returns=2).remote(self._session, task, data)
        chosen.task, chosen.refs = task, (meta, out)

    def poll(self, timeout: float | None) -> list[TaskResult]:
        busy = {s.refs[0]: s for s in self._slots if s.task is not None and s.refs}
        if not busy:
            return []
        ready, _ = ray.wait(list(busy), num_returns=1, timeout=timeout)
        if not ready:
            return []
        ready, _ = ray.wait(list(busy), num_returns=len(busy), timeout=0)
        return [self._collect(busy[ref]) for ref in ready]

    def _collect(self, slot: _Slot) -> TaskResult:
        task, refs = slot.task, slot.refs
        assert task is not None and refs is not None
        slot.task, slot.refs = None, None
        try:
            result, held, where = ray.get(refs[0])
            if slot.info is None:
                slot.info = ray.get(slot.ready_ref)
            slot.held = held
            if where:
                self.saved[where] += 1
            if result.checkpoint is not None and where == "object":
                data = ray.get(refs[1])  # the driver keeps a durable copy for resume
                assert self._checkpoints is not None
                self._checkpoints.write(result.checkpoint, data)
                self._refs[result.checkpoint] = refs[1]
            return result
        except ray_errors.RayActorError as e:
            why = str(e).strip().splitlines()
            pid = slot.info["pid"] if slot.info else "?"
            error = (
                f"Ray actor {slot.name} (pid {pid}) died while training member {task.member}: "
                f"{why[0] if why else type(e).__name__}; the member restarts from its last "
                "checkpoint on another actor"
            )
            self._replace(slot)
        except ray_errors.RayError as e:
            # e.g. the object holding the starting blob was lost with its node: resend it from
            # the durable copy on the next try
            if task.checkpoint is not None:
                self._refs.pop(task.checkpoint, None)
            slot.held.pop(task.member, None)
            error = f"Ray could not run member {task.member}'s task on {slot.name}: {e}"
        return TaskResult(task=task, error=error, worker=slot.name)

    def forget(self, member: int) -> None:
        for s in self._slots:
            if member in s.held:
                del s.held[member]
                try:
                    s.actor.forget.remote(self._session, member)
                except Exception:  # noqa: BLE001 - a dead actor holds nothing
                    pass

    def shutdown(self) -> None:
        """End the run: with ``keep_actors``, idle actors end their session (every member's
        trainable released) and wait for the next run; otherwise, or for an actor still
        training, the actor is stopped."""
        ends: list[tuple[_Slot, Any]] = []
        for s in self._slots:
            if s.info is not None and s.task is None:  # a busy actor is killed at once
                try:
                    ends.append((s, s.actor.end.remote()))
                except Exception:  # noqa: BLE001
                    pass
        if ends:
            refs = [ref for _, ref in ends]
            # an actor kept for the next run is worth a longer wait than one stopped anyway
            wait = 30 if self.keep_actors else 5
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=wait)
            for s, ref in ends:
                if self.keep_actors and ref in done and _ok(ref):
                    self._warm.append(s.actor)  # ended cleanly: kept for the next run
                    self._warm_job = _job()
                    s.actor = None
        for s in self._slots:
            if s.actor is not None:
                _kill(s.actor)
        self._slots = []
        self._refs.clear()
        if self._shared is not None and self._probe:
            self._shared.remove_probe(self._probe)
            self._probe = None
        if not self.keep_actors:
            self._release_ray()

    def close(self) -> None:
        """Stop the actors kept warm (``keep_actors``) and a Ray session this backend
        started; the backend can start again afterwards (cold)."""
        self.shutdown()
        for actor in self._warm:
            _kill(actor)
        self._warm = []
        self._release_ray()

    def _release_ray(self) -> None:
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False
        self._remote = None

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _job() -> str:
    """This driver's Ray session: its cluster and job (another after each ``ray.init``)."""
    if not ray.is_initialized():
        return ""
    context = ray.get_runtime_context()
    return f"{context.gcs_address}/{context.get_job_id()}"


def _ok(ref: Any) -> bool:
    """Whether a finished call succeeded (its actor is alive and well)."""
    try:
        ray.get(ref, timeout=0)
        return True
    except Exception:  # noqa: BLE001
        return False
