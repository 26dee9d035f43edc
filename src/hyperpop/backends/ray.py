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
actor that Ray places wherever resources are free. The number of actors changes on request
(:meth:`RayBackend.resize`) or follows the cluster (``workers="auto"``, :mod:`.ray_cluster`).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

try:
    import ray
    from ray import exceptions as ray_errors
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"the ray backend needs Ray: pip install 'hyperpop[ray]' ({e})") from None

from hyperpop.backends.base import Backend, Task, TaskResult, check_processes, check_workers
from hyperpop.backends.ray_actor import dumps_factory, remote_actor
from hyperpop.backends.ray_blobs import RayBlobs
from hyperpop.backends.ray_cluster import (
    ClusterFollower,
    RayClusterError,
    cluster_actors,
    connect,
    job,
    kill,
    requested_workers,
)
from hyperpop.backends.ray_slots import RaySlot, await_started, end_sessions, shrink_order
from hyperpop.backends.slots import SlotPool
from hyperpop.backends.transfer import DEFAULT_THRESHOLD, Transfer
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import Trainable

__all__ = ["RayBackend", "RayClusterError"]

log = logging.getLogger("hyperpop")


class RayBackend(Backend):
    """Members train in Ray actors on a Ray cluster.

    Args:
        workers: actors, i.e. members training at once (default: as many as the cluster's
            resources hold with ``num_cpus``/``num_gpus`` each, counted at the start). The
            population may be larger: members take turns, as on the local backend.
            ``"auto"``: as many as the cluster holds while it runs, following nodes that join
            and leave (every ``follow_seconds``; at most ``max_workers``).
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
        max_workers: under ``workers="auto"``, the most actors (None: no limit; a run
            started by :func:`hyperpop.run` needs no more than its population).
        follow_seconds: under ``workers="auto"``, seconds between two looks at the cluster.
        processes_per_member: processes that train one member together (DDP ranks): each
            actor reserves ``num_cpus`` per rank (and ``num_gpus`` for the member), so a member
            is placed on one node, where it runs them (:mod:`hyperpop.backends.ray_group`).
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
        workers: int | str | None = None,
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
        max_workers: int | None = None,
        follow_seconds: float = 2.0,
        processes_per_member: int = 1,
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
        #: whether the actors follow the cluster (``workers="auto"``; a resize stops it)
        self._requested, self.auto = requested_workers(workers)
        self.max_workers = None if max_workers is None else check_workers(max_workers)
        self.follow_seconds = float(follow_seconds)
        p = check_processes(processes_per_member)
        if p > 1 and transfer == "shared":  # a group's ranks use a folder of their actor's
            raise ValueError("transfer='shared' is not for processes_per_member > 1: use 'auto'")
        self.processes_per_member = p
        self._follower: ClusterFollower | None = None
        #: actors to have: as asked, or the cluster's slots (known once connected)
        self.workers = 0
        self._slots: SlotPool[RaySlot] = SlotPool(RaySlot, "actor")
        self._blobs = RayBlobs(self.transfer, self.shared_location)
        self._factory = b""
        self._remote: Any = None
        #: actors replaced after they died; each change of the number of actors, (from, to)
        self.replaced = 0
        self.resized: list[tuple[int, int]] = []
        #: blobs saved through each path ("object", "shared"), and starting blobs sent with a
        #: task ("object", "shared", or "cached": the actor held the member in memory)
        self.saved, self.sent = self._blobs.saved, self._blobs.sent

    # --- the cluster ---------------------------------------------------------------------
    def connect(self) -> None:
        """Connect to the cluster (``ray.init``, unless the caller already did) and size the
        backend: :meth:`start` does it, and so does the first look at :attr:`capacity`.
        Building a RayBackend connects to nothing."""
        if self.workers and ray.is_initialized():
            return
        self._warm = []  # Ray was shut down under a kept backend: its actors are gone
        t0 = time.perf_counter()
        if connect(self.address, self.connect_timeout, self.init_options):
            self._owns_ray = True
        self._connect_seconds = time.perf_counter() - t0
        self.workers = self._requested or cluster_actors(self._need())
        if self.auto and self.max_workers is not None:
            self.workers = min(self.workers, self.max_workers)

    def _need(self) -> dict[str, float]:
        """One actor's resources, as Ray names them."""
        cpus = self.num_cpus * self.processes_per_member
        return {"CPU": cpus, "GPU": self.num_gpus, **self.resources}

    @property
    def capacity(self) -> int:
        """Actors that can take a task now: a replacement for an actor lost with its node
        counts once Ray has placed and started it (it may wait for resources the node took
        with it; the others train every member meanwhile)."""
        if not self._slots:
            self.connect()
            return self.workers
        self._follow()
        n = self._slots.capacity(self._started)
        if n == 0:  # every actor waits to be placed: wait a little instead of spinning
            ray.wait([s.ready_ref for s in self._slots.active()], num_returns=1, timeout=0.5)
            n = self._slots.capacity(self._started)
        return n

    def resize(self, workers: int) -> None:
        """Have ``workers`` actors from now on (a person's request: the actors no longer
        follow the cluster). New actors count in :attr:`capacity` once Ray has placed and
        started them; with fewer, idle actors stop at once and busy ones when their interval
        ends."""
        self.auto = False
        self._resize(check_workers(workers))

    def _resize(self, workers: int) -> None:
        self._requested = workers
        if not self._slots:  # not started: the next start starts this many
            self.workers = workers
            return
        add, stop = self._slots.resize(workers, shrink_order())
        for slot in stop:
            self._retire(slot)
        for _ in range(add):
            self._spawn(self._slots.add())
        self.resized.append((self.workers, workers))
        self.workers = workers

    def _retire(self, slot: RaySlot) -> None:
        """Stop a slot's actor for good (the members it held have their checkpoints)."""
        self._slots.remove(slot)
        kill(slot.actor)

    def _follow(self) -> None:
        """Under ``workers="auto"``: as many actors as the cluster holds."""
        if self.auto and self._follower is not None:
            self._follower.follow(self.workers, self._resize)

    def own_resizes(self) -> list[tuple[int, int]]:
        return [] if self._follower is None else self._follower.taken()

    def _started(self, slot: RaySlot) -> bool:
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
        self._factory = dumps_factory(factory, self.pickle_by_value)
        # the run's id (the checkpoint folder's owner) and a fresh token: a warm actor keys
        # everything it holds by this, so no state crosses between runs or sessions
        self._session = f"{checkpoints.owner or checkpoints.root}#{uuid.uuid4().hex[:12]}"
        self._blobs.open(checkpoints)
        if self._remote is None:
            one = self._need()
            self._remote = remote_actor(one["CPU"], one["GPU"], self.resources, self.runtime_env)
        if self.auto:
            self._follower = ClusterFollower(self._need(), self.follow_seconds, self.max_workers)
        prepared = time.perf_counter()
        reused = float(self._open_slots())
        self.timings = {
            "connect": self._connect_seconds,
            "prepare": prepared - t0,
            "reused": reused,
        }
        self._connect_seconds = 0.0
        try:
            need = f"num_cpus={self.num_cpus}, num_gpus={self.num_gpus}, resources={self.resources}"
            shared = self._blobs.location if self.transfer == "shared" else None
            slots = self._slots.slots
            await_started(
                slots, self.start_timeout, self.START_ATTEMPTS, self._replace, need, shared
            )
        except BaseException:
            self.close()
            raise
        self._log_start(prepared)

    def _open_slots(self) -> int:
        """Make the run's slots: warm actors kept from the last run (while their Ray session
        lasts) open this run's session, new ones start; returns how many were warm."""
        warm, self._warm = self._warm, []
        if warm and self._warm_job != job():  # Ray was restarted since: they are gone
            warm = []
        for actor in warm[self.workers :]:
            kill(actor)
        self._slots = SlotPool(RaySlot, "actor")
        for i in range(self.workers):
            slot = self._slots.add()
            if i >= len(warm):
                self._spawn(slot)
                continue
            slot.actor, slot.name = warm[i], f"ray-{slot.index}"
            try:
                self._begin(slot)
            except Exception:  # noqa: BLE001 - gone with a session Ray cannot find: a new one
                self._spawn(slot)
        return min(len(warm), self.workers)

    def _log_start(self, prepared: float) -> None:
        """Record and log where the start spent its time (``prepared``: when the actors were
        asked for)."""
        t = self.timings
        t["actors"] = time.perf_counter() - prepared
        t["actor_setup"] = max(
            (s.info["setup_seconds"] for s in self._slots if s.info), default=0.0
        )
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

    def _spawn(self, slot: RaySlot) -> None:
        slot.generation += 1
        slot.name = f"ray-{slot.index}" + (f".{slot.generation - 1}" if slot.generation > 1 else "")
        slot.actor = self._remote.remote(max(1, int(self.num_cpus)))
        self._begin(slot)

    def _begin(self, slot: RaySlot) -> None:
        """Open this run's session on the slot's actor (new or warm); its answer is the
        slot's ``ready_ref``."""
        slot.ready_ref = slot.actor.begin.remote(
            self._session,
            self._factory,
            slot.name,
            self.cache_size,
            self._blobs.location,
            self._blobs.probe,
            self.transfer,
            self.threshold,
            self.processes_per_member,
        )
        slot.info, slot.task, slot.refs, slot.held = None, None, None, {}

    def _replace(self, slot: RaySlot) -> None:
        kill(slot.actor)
        self.replaced += 1
        self._spawn(slot)

    # --- state transfer ------------------------------------------------------------------
    def release(self, blob: str) -> None:
        """The driver collected ``blob``: free its object and its shared copy."""
        self._blobs.release(blob)

    @property
    def _refs(self) -> dict[str, Any]:
        """Blob -> the ObjectRef of its bytes, for the blobs the driver holds in Ray."""
        return self._blobs.refs

    # --- tasks ---------------------------------------------------------------------------
    def free_slots(self) -> list[int]:
        return [s.index for s in self._slots.free(self._started)]

    def affinity(self, member: int) -> int | None:
        return self._slots.affinity(member)

    def submit(self, task: Task, slot: int | None = None) -> None:
        chosen = self._slots.choose(task, slot, self._slots.free(self._started))
        for s in self._slots.release(task.member, keep=chosen):
            s.actor.forget.remote(self._session, task.member)  # stale once another trains
        held = chosen.held.get(task.member) == task.checkpoint
        sees = bool(chosen.info and chosen.info["sees_shared"])
        data = self._blobs.data_for(task.checkpoint, held, sees)
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

    def _collect(self, slot: RaySlot) -> TaskResult:
        task, refs = slot.task, slot.refs
        assert task is not None and refs is not None
        slot.task, slot.refs = None, None
        try:
            result, held, where = ray.get(refs[0])
            if slot.info is None:
                slot.info = ray.get(slot.ready_ref)
            slot.held = held
            self._blobs.saved_by_actor(result.checkpoint, where, refs[1])
            if slot.retiring:  # the backend shrank: this actor's last interval
                self._retire(slot)
            return result
        except ray_errors.RayActorError as e:
            why = str(e).strip().splitlines()
            pid = slot.info["pid"] if slot.info else "?"
            error = (
                f"Ray actor {slot.name} (pid {pid}) died while training member {task.member}: "
                f"{why[0] if why else type(e).__name__}; the member restarts from its last "
                "checkpoint on another actor"
            )
            if slot.retiring:
                self._retire(slot)
            else:
                self._replace(slot)
        except ray_errors.RayError as e:
            # e.g. the object holding the starting blob was lost with its node: resend it from
            # the durable copy on the next try
            self._blobs.lost(task.checkpoint)
            slot.held.pop(task.member, None)
            error = f"Ray could not run member {task.member}'s task on {slot.name}: {e}"
        return TaskResult(task=task, error=error, worker=slot.name)

    def forget(self, member: int) -> None:
        for s in self._slots.release(member):
            try:
                s.actor.forget.remote(self._session, member)
            except Exception:  # noqa: BLE001 - a dead actor holds nothing
                pass

    def shutdown(self) -> None:
        """End the run: with ``keep_actors``, idle actors end their session (every member's
        trainable released) and wait for the next run; otherwise, or for an actor still
        training, the actor is stopped."""
        # an actor kept for the next run is worth a longer wait than one stopped anyway
        for s in end_sessions(self._slots.slots, 30 if self.keep_actors else 5):
            if self.keep_actors:
                self._warm.append(s.actor)  # ended cleanly: kept for the next run
                self._warm_job = job()
                s.actor = None
        for s in self._slots:
            if s.actor is not None:
                kill(s.actor)
        self._slots.clear()
        self._follower = None
        self._blobs.close()
        if not self.keep_actors:
            self._release_ray()

    def close(self) -> None:
        """Stop the actors kept warm (``keep_actors``) and a Ray session this backend
        started; the backend can start again afterwards (cold)."""
        self.shutdown()
        for actor in self._warm:
            kill(actor)
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
