"""The driver: joins decide (controller), do (backend) and remember (store) in one direction.

A worker's result reaches the driver, becomes events, is folded into the population, the
controller decides, the decisions become events, all of them are written to the store in one
transaction, and only then is the worker told what to do next.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyperpop import __version__
from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.checkpoints import CheckpointStore, checkpoint_dir_for
from hyperpop.controller import Budget, Controller, Decision, Ready, Steps, budget_from_dict
from hyperpop.population import Population
from hyperpop.results import Result
from hyperpop.space import Space, SpaceError
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import StoreError, open_store
from hyperpop.strategies import ExploitStrategy, ExploreStrategy, make_exploit, make_explore
from hyperpop.trainable import make_factory

__all__ = ["MetricError", "RunError", "resume", "run"]

log = logging.getLogger("hyperpop")


class RunError(RuntimeError):
    """The run cannot go on (every member failed, all scores are NaN...)."""


class MetricError(RunError):
    """The trainable does not report the metric being optimised, or reports a non-number."""


Progress = Callable[[Population], None]


def _make_backend(backend: str | Backend, workers: int | None, **options: Any) -> Backend:
    if isinstance(backend, Backend):
        return backend
    if backend == "local":
        from hyperpop.backends.local import LocalBackend

        return LocalBackend(workers, **options)
    if backend == "ray":
        try:
            from hyperpop.backends.ray import RayBackend
        except ImportError as e:
            raise ImportError(
                f"the ray backend needs Ray: pip install 'hyperpop[ray]' ({e})"
            ) from None
        return RayBackend(workers, **options)
    raise ValueError(f"unknown backend {backend!r}; use 'local', 'ray' or a Backend instance")


def _budgets(budget: Budget | Sequence[Budget] | int | None) -> list[Budget]:
    if budget is None:
        return []
    if isinstance(budget, int) and not isinstance(budget, bool):
        return [Steps(budget)]
    if isinstance(budget, Budget):
        return [budget]
    out = list(budget)
    for b in out:
        if not isinstance(b, Budget):
            raise TypeError(f"budget entries must be hp.Steps, hp.WallTime or hp.Target, got {b!r}")
    return out


def _ready(ready: Ready | int | float, burn_in: int | None) -> Ready:
    if isinstance(ready, Ready):
        return ready if burn_in is None else Ready(ready.steps, ready.seconds, burn_in)
    if isinstance(ready, int) and not isinstance(ready, bool):
        return Ready(steps=ready, burn_in=burn_in or 0)
    raise TypeError(f"ready must be an int (steps) or hp.Ready(...), got {ready!r}")


def _source_of(trainable: Any) -> dict[str, Any]:
    mod = getattr(trainable, "__module__", None)
    name = getattr(trainable, "__qualname__", None)
    if mod and name and mod != "__main__" and "<" not in name:
        return {"module": mod, "name": name}
    import sys

    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and name and "<" not in name:
        return {"file": os.path.abspath(main), "name": name}
    return {}


class _Driver:
    def __init__(
        self,
        *,
        store: Any,
        pop: Population,
        space: Space,
        controller: Controller,
        backend: Backend,
        checkpoints: CheckpointStore,
        factory: Callable[[], Any],
        metric: str,
        max_failures: int,
        progress: Progress | None,
        session_start: float,
    ):
        self.store, self.pop, self.space = store, pop, space
        self.controller, self.backend = controller, backend
        self.checkpoints, self.factory = checkpoints, factory
        self.metric, self.max_failures = metric, max_failures
        self.progress = progress
        self.session_start = session_start
        self.queue: deque[int] = deque()
        self.inflight: dict[int, Task] = {}
        self.attempts: dict[int, int] = {}
        self.turns: dict[int, int] = {}
        self.user_seconds = 0.0
        self.worker_seconds = 0.0
        #: events folded in but not yet written (written together after each poll)
        self.pending: list[Event] = []

    # --- events --------------------------------------------------------------------------
    def commit(self, events: list[Event]) -> None:
        """Fold events into the population and queue them for the next write."""
        self.pending.extend(events)
        self.pop.extend(events)

    def flush(self) -> None:
        """Write every queued event in one transaction, then delete the checkpoints they made
        unreachable (never before: a crash in between must not leave the log pointing at a
        deleted blob)."""
        if self.pending:
            self.store.append(self.pending)
            self.pop.last_seq = max(self.pop.last_seq, self.pending[-1].seq or 0)
            self.pending = []
        for blob in self.pop.drain_dead():
            self.checkpoints.delete(blob)

    def elapsed(self) -> float:
        return self.pop.active_seconds_before + (time.time() - self.session_start)

    # --- scheduling ----------------------------------------------------------------------
    def _pick(self, slot: int | None) -> int:
        # Fair turns: never start a member's next interval while another member still waits
        # for an earlier turn. Within the head's turn, prefer a member whose state this slot
        # holds in memory (no reload).
        member = self.queue[0]
        if slot is not None:
            turn = self.turns.get(member, 0)
            window = min(len(self.queue), 8 * max(1, self.backend.capacity))
            for i in range(window):
                cand = self.queue[i]
                if self.turns.get(cand, 0) != turn:
                    break
                if self.backend.affinity(cand) == slot:
                    member = cand
                    break
        self.queue.remove(member)
        self.turns[member] = self.turns.get(member, 0) + 1
        return member

    def fill(self) -> None:
        while self.queue and len(self.inflight) < self.backend.capacity:
            free = self.backend.free_slots()
            slot = free[0] if free else None
            member = self._pick(slot)
            m = self.pop.members[member]
            if not m.alive:
                continue
            iv = self.controller.interval(m)
            task = Task(
                member=member,
                config=m.config,
                checkpoint=m.checkpoint,
                step=m.step,
                steps=iv.steps,
                seconds=iv.seconds,
                attempt=self.attempts.get(member, 0),
            )
            self.inflight[member] = task
            if slot is not None:
                self.backend.submit(task, slot)  # type: ignore[call-arg]
            else:
                self.backend.submit(task)

    # --- results -------------------------------------------------------------------------
    def handle(self, r: TaskResult) -> None:
        self.inflight.pop(r.member, None)
        self.user_seconds += r.user_seconds
        self.worker_seconds += r.seconds
        m = self.pop.members[r.member]
        now = time.time()
        if r.error is not None:
            self._failed(r, now)
            return
        self.attempts.pop(r.member, None)
        events: list[Event] = []
        for i, metrics in enumerate(r.reports):
            events.append(
                Event(
                    ev.REPORTED,
                    r.member,
                    {
                        "step": r.task.step + i + 1,
                        "score": self._score(metrics, r),
                        "metrics": metrics,
                    },
                    now,
                )
            )
        events.append(
            Event(ev.CHECKPOINTED, r.member, {"step": r.end_step, "checkpoint": r.checkpoint}, now)
        )
        # Decide over the population with this interval folded in, then write everything at once.
        self.pop.extend(events)
        decisions = self.controller.on_ready(self.pop, r.member, now)
        decided = self._decision_events(decisions, now)
        self.pending.extend(events)
        self.commit(decided)
        self._after(decisions)
        if math.isnan(m.ready_score if m.ready_score is not None else 0.0):
            self._check_all_nan()

    def _score(self, metrics: Mapping[str, Any], r: TaskResult) -> float:
        if self.metric not in metrics:
            raise MetricError(
                f"the trainable reported {sorted(metrics)} but not the metric {self.metric!r} "
                f"(member {r.member}); return it from train() or pass metric= one of those keys"
            )
        value = metrics[self.metric]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise MetricError(
                f"metric {self.metric!r} must be a number, got {value!r} (member {r.member})"
            ) from None

    def _check_all_nan(self) -> None:
        members = [m for m in self.pop.members.values() if m.status != "failed"]
        scored = [m.ready_score for m in members if m.ready_score is not None]
        if members and len(scored) == len(members) and all(math.isnan(s) for s in scored):
            raise RunError(
                f"every member reports NaN for {self.metric!r}: training diverged "
                "everywhere. Narrow the search space (e.g. lower learning rates) or clip "
                "gradients; what was recorded so far is kept in the store"
            )

    def _decision_events(self, decisions: list[Decision], now: float) -> list[Event]:
        """The events that record ``decisions`` (a ``continue`` or ``wait`` records nothing)."""
        out: list[Event] = []
        for d in decisions:
            m = self.pop.members[d.member]
            old = m.config
            if d.kind == "exploit":
                old = self.pop.blobs[d.checkpoint].config
                data = {"donor": d.donor, "step": d.step, "checkpoint": d.checkpoint, "at": m.step}
                out.append(Event(ev.EXPLOITED, d.member, data, now))
            if d.kind in ("exploit", "explore") and d.config != old:
                data = {"config": d.config, "old_config": old, "how": d.how}
                out.append(Event(ev.EXPLORED, d.member, data, now))
            elif d.kind == "rejuvenate":
                data = {"config": d.config, "old_config": old, "at": m.step}
                out.append(Event(ev.REJUVENATED, d.member, data, now))
            elif d.kind == "finish":
                out.append(Event(ev.FINISHED, d.member, {"step": m.step, "reason": d.reason}, now))
        return out

    def _after(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if d.kind == "finish":
                self.backend.forget(d.member)
            elif d.kind != "wait":
                self.queue.append(d.member)

    def _failed(self, r: TaskResult, now: float) -> None:
        m = self.pop.members[r.member]
        attempt = self.attempts.get(r.member, 0) + 1
        self.attempts[r.member] = attempt
        fatal = r.fatal or attempt > self.max_failures
        log.warning(
            "member %d failed at step %d (attempt %d%s):\n%s",
            r.member,
            r.task.step,
            attempt,
            ", giving up" if fatal else ", retrying from its last checkpoint",
            r.error,
        )
        failed = Event(
            ev.FAILED,
            r.member,
            {"step": r.task.step, "error": r.error, "attempt": attempt, "fatal": fatal},
            now,
        )
        if not fatal:
            self.commit([failed])
            self.queue.append(r.member)
            return
        self.commit([failed])
        decisions = self.controller.release(self.pop, now)
        self.commit(self._decision_events(decisions, now))
        self.backend.forget(r.member)
        self._after(decisions)
        if r.fatal:
            raise RunError(f"member {m.id} failed with an error a retry cannot fix:\n{r.error}")

    # --- the loop ------------------------------------------------------------------------
    def loop(self) -> str:
        waiting = self.controller._waiting
        for m in sorted(self.pop.alive(), key=lambda m: (m.ready_count, m.id)):
            if m.id not in waiting:
                self.queue.append(m.id)
        last_progress = 0.0
        while True:
            reason = self.controller.stop_reason(self.pop, self.elapsed())
            if reason is not None:
                return reason
            self.fill()
            if not self.inflight:
                if not self.queue:
                    return "every member finished"
                continue
            # every result of one poll is written in one transaction, before any worker is
            # told what to do next
            try:
                for r in self.backend.poll(timeout=0.5):
                    self.handle(r)
            finally:
                self.flush()
            if self.progress is not None and time.time() - last_progress > 0.2:
                self.progress(self.pop)
                last_progress = time.time()


def _initial_configs(
    space: Space, population: int, configs: Sequence[Mapping[str, Any]] | None, seed: int | None
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    given = [dict(c) for c in (configs or [])]
    if len(given) > population:
        raise ValueError(f"{len(given)} initial configs for a population of {population}")
    out = []
    for c in given:
        full = space.sample(rng)
        flat = space.flatten(full)
        flat.update(space.flatten(_complete(space, c, full)))
        cfg = space.unflatten(flat)
        try:
            space.validate_config(cfg)
        except SpaceError as e:
            raise SpaceError(f"initial config {c!r}: {e}") from None
        out.append(cfg)
    while len(out) < population:
        out.append(space.sample(rng))
    return out


def _complete(space: Space, partial: Mapping[str, Any], default: dict[str, Any]) -> dict:
    # A partial initial config: missing parameters keep their sampled values.
    flat_default = space.flatten(default)
    out = dict(flat_default)
    for path in flat_default:
        node: Any = partial
        for part in path.split("/"):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                node = _MISSING
                break
        if node is not _MISSING:
            out[path] = node
    return space.unflatten(out)


_MISSING = object()


def _execute(
    *,
    store: Any,
    pop: Population,
    space: Space,
    controller: Controller,
    backend: Backend,
    checkpoints: CheckpointStore,
    factory: Callable[[], Any],
    metric: str,
    max_failures: int,
    progress: Progress | None,
    cleanup: Callable[[], None] | None = None,
) -> Result:
    driver = _Driver(
        store=store,
        pop=pop,
        space=space,
        controller=controller,
        backend=backend,
        checkpoints=checkpoints,
        factory=factory,
        metric=metric,
        max_failures=max_failures,
        progress=progress,
        session_start=time.time(),
    )
    backend.start(factory, checkpoints)
    try:
        reason = driver.loop()
        now = time.time()
        events = [
            Event(ev.FINISHED, m.id, {"step": m.step, "reason": reason}, now) for m in pop.alive()
        ]
        events.append(Event(ev.RUN_FINISHED, None, {"reason": reason}, now))
        driver.commit(events)
        driver.flush()
        if pop.members and all(m.status == "failed" for m in pop.members.values()):
            first = min(pop.members.values(), key=lambda m: m.id)
            raise RunError(
                f"every member failed; member {first.id}'s last error:\n{first.last_error}"
            )
        if progress is not None:
            progress(pop)
    finally:
        close = getattr(progress, "close", None)
        if close is not None:
            close()
        backend.shutdown()
        events = store.read()
        store.close()
        if cleanup is not None:
            cleanup()
    result = Result(events, path=getattr(store, "path", None))
    result.overhead = {
        "user_seconds": driver.user_seconds,
        "worker_seconds": driver.worker_seconds,
    }
    return result


def run(
    trainable: Any,
    space: Mapping[str, Any] | Space,
    *,
    metric: str,
    mode: str = "max",
    population: int = 8,
    workers: int | None = None,
    budget: Budget | Sequence[Budget] | int | None = None,
    ready: Ready | int = 4,
    burn_in: int | None = None,
    exploit: str | ExploitStrategy | None = "truncation",
    explore: str | ExploreStrategy | None = "perturb",
    synchronous: bool = False,
    rejuvenate: int | None = None,
    configs: Sequence[Mapping[str, Any]] | None = None,
    storage: str | os.PathLike[str] | None = None,
    backend: str | Backend = "local",
    backend_options: Mapping[str, Any] | None = None,
    max_failures: int = 3,
    seed: int | None = 0,
    progress: Progress | bool | None = None,
    source: Mapping[str, Any] | None = None,
) -> Result:
    """Train a population with Population Based Training.

    Args:
        trainable: a :class:`hyperpop.Trainable` subclass, or a function
            ``fn(config, checkpoint)`` that calls :func:`hyperpop.report` once per step.
        space: the search space (a dict of ``hp.uniform(...)``-style parameters and constants).
        metric: the reported metric to optimise.
        mode: ``"max"`` or ``"min"``.
        population: number of members (independent of ``workers``).
        workers: members training at once (default: one per CPU core).
        budget: ``hp.Steps(n)`` per member (an int means the same), ``hp.WallTime(s)``,
            ``hp.Target(score)``, or a list of them (the first reached stops).
        ready: steps between ready points, or ``hp.Ready(steps=..., seconds=..., burn_in=...)``.
        burn_in: no exploit before this many steps (overrides ``ready.burn_in``).
        exploit: ``"truncation"``, ``"tournament"``, ``None`` or a strategy instance.
        explore: ``"perturb"``, ``"resample"``, ``None`` or a strategy instance.
        synchronous: decide by generation instead of asynchronously.
        rejuvenate: ready points without improvement before a member's weights are reset and
            its hyperparameters resampled (None: never).
        configs: initial configs for the first members (partial dicts are completed by
            sampling); the rest are sampled.
        storage: path of the SQLite store (``"runs/x.db"``); checkpoints go beside it. None
            keeps everything in a temporary folder removed at the end.
        backend: ``"local"`` (processes on this machine), ``"ray"``, or a Backend instance.
        backend_options: keyword arguments for the backend (e.g. ``cache_size``).
        max_failures: retries of a member after its trainable raised, before giving it up.
        seed: seed of the initial sampling and the controller's decisions.
        progress: True for a live terminal view, or a callable that gets the population.
        source: where the trainable comes from (``{"file": ..., "name": ...}``), for resume.

    Returns:
        A :class:`hyperpop.Result`.
    """
    if not isinstance(metric, str) or not metric:
        raise ValueError("metric must be the name of a metric the trainable reports")
    if not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be a positive int, got {population!r}")
    if max_failures < 0:
        raise ValueError(f"max_failures must be >= 0, got {max_failures}")
    space = Space(space)
    factory = make_factory(trainable)
    budgets = _budgets(budget if budget is not None else Steps(100))
    ready_ = _ready(ready, burn_in)
    exploit_, explore_ = make_exploit(exploit), make_explore(explore)
    controller = Controller(
        space,
        mode=mode,
        ready=ready_,
        budget=budgets,
        exploit=exploit_,
        explore=explore_,
        synchronous=synchronous,
        rejuvenate=rejuvenate,
        seed=seed,
    )
    backend_ = _make_backend(backend, workers, **dict(backend_options or {}))
    initial = _initial_configs(space, population, configs, seed)

    cleanup = None
    if storage is None:
        tmp = tempfile.TemporaryDirectory(prefix="hyperpop-")
        storage_path: Path | None = Path(tmp.name) / "run.db"
        cleanup = tmp.cleanup
        store = open_store(None)
    else:
        storage_path = Path(storage)
        store = open_store(storage_path, write=True)
    try:
        if store.read():
            raise StoreError(
                f"{storage_path} already holds a run; resume it with hyperpop.resume("
                f"{str(storage_path)!r}) or `hyperpop resume {storage_path}`, or choose a new "
                "storage path"
            )
    except BaseException:
        store.close()
        if cleanup:
            cleanup()
        raise
    checkpoints = CheckpointStore(checkpoint_dir_for(storage_path))
    settings = {
        "metric": metric,
        "mode": mode,
        "population": population,
        "workers": backend_.capacity,
        "budget": [b.to_dict() for b in budgets],
        "ready": ready_.to_dict(),
        "exploit": exploit_.describe(),
        "explore": explore_.describe(),
        "synchronous": synchronous,
        "rejuvenate": rejuvenate,
        "max_failures": max_failures,
        "seed": seed,
        "backend": backend_.name,
    }
    now = time.time()
    events = [
        Event(
            ev.RUN_STARTED,
            None,
            {
                "settings": settings,
                "space": space.to_dict(),
                "trainable": dict(source) if source else _source_of(trainable),
                "version": __version__,
                "pid": os.getpid(),
            },
            now,
        )
    ]
    events += [Event(ev.MEMBER_CREATED, i, {"config": c}, now) for i, c in enumerate(initial)]
    pop = Population()
    store.append(events)
    pop.extend(events)
    return _execute(
        store=store,
        pop=pop,
        space=space,
        controller=controller,
        backend=backend_,
        checkpoints=checkpoints,
        factory=factory,
        metric=metric,
        max_failures=max_failures,
        progress=_progress(progress),
        cleanup=cleanup,
    )


def _progress(progress: Progress | bool | None) -> Progress | None:
    if progress is True:
        from hyperpop.live import LiveView

        return LiveView()
    if progress is False or progress is None:
        return None
    return progress


def load_trainable(source: Mapping[str, Any]) -> Any:
    """Import the trainable recorded in a store (``{"module"|"file": ..., "name": ...}``)."""
    import importlib

    name = source.get("name")
    if not name:
        raise RunError(
            "the store does not say where its trainable lives; pass trainable= to resume()"
        )
    if "module" in source:
        obj: Any = importlib.import_module(source["module"])
    elif "file" in source:
        from hyperpop.userfile import load_file

        obj = load_file(source["file"]).module
    else:
        raise RunError("the store does not say where its trainable lives; pass trainable=")
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def resume(
    storage: str | os.PathLike[str],
    trainable: Any = None,
    *,
    workers: int | None = None,
    backend: str | Backend | None = None,
    backend_options: Mapping[str, Any] | None = None,
    exploit: ExploitStrategy | None = None,
    explore: ExploreStrategy | None = None,
    progress: Progress | bool | None = None,
) -> Result:
    """Continue a run from its store (after a crash, ``kill -9`` or Ctrl-C).

    Every recorded report is kept; members restart from their last checkpoint. A finished run
    is returned as it is.

    Args:
        storage: the run's SQLite file.
        trainable: the trainable; default: imported from where the store says it came from.
        workers: members training at once (default: as recorded).
        backend: default: as recorded.
        backend_options: keyword arguments for the backend.
        exploit: a custom exploit strategy instance, if the run used one.
        explore: a custom explore strategy instance, if the run used one.
        progress: True for a live terminal view, or a callable.
    """
    store = open_store(storage, write=True)
    try:
        events = store.read()
        if not events or events[0].kind != ev.RUN_STARTED:
            raise StoreError(f"{storage} holds no run to resume")
        pop = Population.from_events(events)
        if pop.finished:
            store.close()
            return Result(events, path=Path(storage))
        s = pop.settings
        space = Space.from_dict(pop.space)
        if trainable is None:
            trainable = load_trainable(pop.trainable)
        factory = make_factory(trainable)
        exploit_ = exploit or _strategy(make_exploit, s["exploit"])
        explore_ = explore or _strategy(make_explore, s["explore"])
        controller = Controller(
            space,
            mode=s["mode"],
            ready=Ready(**s["ready"]),
            budget=[budget_from_dict(b) for b in s["budget"]],
            exploit=exploit_,
            explore=explore_,
            synchronous=s["synchronous"],
            rejuvenate=s.get("rejuvenate"),
            seed=(s.get("seed") or 0) + 7919 * (pop.resumes + 1),
        )
        controller.restore(pop)
        backend_ = _make_backend(
            backend or s.get("backend", "local"),
            workers or s.get("workers"),
            **dict(backend_options or {}),
        )
        checkpoints = CheckpointStore(checkpoint_dir_for(storage))
        missing = [b for b in pop.live_checkpoints() if not checkpoints.exists(b)]
        if missing:
            log.warning("checkpoints missing from %s: %s", checkpoints.root, missing[:5])
        checkpoints.collect(pop.live_checkpoints(), temporaries=True)
        resumed = [Event(ev.RUN_RESUMED, None, {"pid": os.getpid(), "version": __version__})]
        store.append(resumed)
        pop.extend(resumed)
    except BaseException:
        store.close()
        raise
    return _execute(
        store=store,
        pop=pop,
        space=space,
        controller=controller,
        backend=backend_,
        checkpoints=checkpoints,
        factory=factory,
        metric=s["metric"],
        max_failures=s.get("max_failures", 3),
        progress=_progress(progress),
    )


def _strategy(make: Callable[[Any], Any], described: Mapping[str, Any]) -> Any:
    d = dict(described)
    name = d.pop("name")
    try:
        obj = make(name)
    except ValueError:
        raise RunError(
            f"the run used the custom strategy {name!r}; pass it to resume() again"
        ) from None
    if d:
        obj = type(obj)(**d)
    return obj
