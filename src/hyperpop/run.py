"""The public entry points: :func:`run` starts a PBT run, :func:`resume` continues one.

Both validate the user's input, open the store and the checkpoints, build the controller and the
backend, and hand them to the driver loop (:mod:`hyperpop.driver`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from hyperpop import __version__
from hyperpop.backends.base import Backend
from hyperpop.callbacks import Callback, CallbackList
from hyperpop.checkpoints import CheckpointStore, checkpoint_dir_for, log_dir_for
from hyperpop.controller import Budget, Controller, Ready, Rejuvenate, Steps, budget_from_dict
from hyperpop.driver import Driver, MetricError, Progress, RunError
from hyperpop.population import Population
from hyperpop.results import Result
from hyperpop.space import Space, SpaceError
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import (
    SQLiteStore,
    StoreError,
    WriterLock,
    open_store,
)
from hyperpop.strategies import ExploitStrategy, ExploreStrategy, make_exploit, make_explore
from hyperpop.trainable import make_factory
from hyperpop.userfile import load_trainable

__all__ = ["MetricError", "RunError", "RunExistsError", "SettingsError", "resume", "run"]

log = logging.getLogger("hyperpop")


class SettingsError(ValueError):
    """A setting of :func:`run` or :func:`resume` is invalid (nothing was written)."""


class RunExistsError(StoreError):
    """The storage path already holds a run (resume it, overwrite it, or choose a new path)."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(
            f"{path} already holds a run; resume it with hyperpop.resume({str(path)!r}) or "
            f"`hyperpop resume {path}`, pass overwrite=True to replace it, or choose a new "
            "storage path"
        )


@contextmanager
def _settings() -> Iterator[None]:
    """Turn a ValueError or TypeError raised while checking the settings into a SettingsError
    (one clear line on the command line); errors with a type of their own pass through."""
    try:
        yield
    except (SpaceError, SettingsError):
        raise
    except (ValueError, TypeError) as e:
        raise SettingsError(str(e)) from e


def _refuse_in_worker_import() -> None:
    """A worker process (``spawn``) imports the user's script; a script that calls ``run`` at
    module level, with no main guard, would start a run again inside each worker. Stop it
    there, before it touches the store, with one line (the driver explains the rest)."""
    import multiprocessing

    from hyperpop.userfile import ImportOnly, import_only

    if import_only():  # a script imported for its trainable (resume, replay): its run waits
        raise ImportOnly()
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(
            "hyperpop: hp.run() was called while a worker process imported the script that "
            'starts the run; put that call under `if __name__ == "__main__":`'
        )


def _workers(workers: Any) -> int | None:
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise SettingsError(
            f"workers must be a positive int (members training at once), got {workers!r}; "
            "leave it out for one per CPU core"
        )
    return workers


def _make_backend(backend: str | Backend, workers: int | None, **options: Any) -> Backend:
    if isinstance(backend, Backend):
        return backend
    workers = _workers(workers)
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
    if backend == "simulated":
        from hyperpop.backends.simulated import SimulatedBackend

        return SimulatedBackend(2 if workers is None else workers, **options)
    if backend == "vectorized":
        from hyperpop.backends.vectorized import VectorizedBackend

        return VectorizedBackend(workers, **options)
    raise ValueError(
        f"unknown backend {backend!r}; use 'local', 'ray', 'simulated', 'vectorized' or a "
        "Backend instance"
    )


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
    if main and os.path.isfile(main) and name and "<" not in name:
        return {"file": os.path.abspath(main), "name": name}
    return {}


def _initial_configs(
    space: Space, population: int, configs: Sequence[Mapping[str, Any]] | None, seed: int | None
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    given = [dict(c) for c in (configs or [])]
    if len(given) > population:
        raise ValueError(f"{len(given)} initial configs for a population of {population}")
    out = []
    for c in given:
        # a partial initial config: the parameters it leaves out keep sampled values
        flat = space.flatten(space.sample(rng))
        try:
            flat.update(space.flatten_partial(c))
            cfg = space.unflatten(flat)
            space.validate_config(cfg)
        except SpaceError as e:
            raise SpaceError(f"initial config {c!r}: {e}") from None
        out.append(cfg)
    while len(out) < population:
        out.append(space.sample(rng))
    return out


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
    rejuvenate: Rejuvenate | int | None = None,
    score_window: int = 1,
    max_lead: int | None = 4,
    deterministic: bool = False,
    configs: Sequence[Mapping[str, Any]] | None = None,
    storage: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    backend: str | Backend = "local",
    backend_options: Mapping[str, Any] | None = None,
    max_failures: int = 3,
    step_timeout: float | None = None,
    seed: int | None = 0,
    progress: Progress | bool | None = None,
    callbacks: Sequence[Callback] | None = None,
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
        rejuvenate: reset a stalled member's weights while its hyperparameter lineage goes
            on: ``hp.Rejuvenate(patience, config="explore", reset="full", grace=1)``, or just
            the patience (ready points without improvement); None: never.
        score_window: rank members by the mean of their last ``score_window`` reports
            (along their lineage, donors' reports included) instead of the last one alone;
            for noisy metrics such as RL returns or small validation sets. The same score
            picks ``result.best``.
        max_lead: asynchronous mode: a member waits rather than train while it is this many
            ready intervals or more ahead of a member still training, so that members stay
            comparable when a worker falls behind (None: no limit).
        deterministic: asynchronous mode: handle finished intervals in a fixed order (as if
            each took its number of steps) instead of as they arrive, so a seeded run of a
            deterministic trainable gives the same lineage every time, at some cost in wall
            time (a worker may wait for a slower one to report first).
        configs: initial configs for the first members (partial dicts are completed by
            sampling); the rest are sampled.
        storage: path of the SQLite store (``"runs/x.db"``); checkpoints go beside it. None
            keeps everything in a temporary folder removed at the end.
        overwrite: delete a run already stored at ``storage`` (and its checkpoints) first,
            instead of refusing; a run that a live driver is writing is never deleted.
        backend: ``"local"`` (processes on this machine), ``"ray"``, ``"simulated"`` (in this
            process on a simulated clock: deterministic, for tests), or a Backend instance.
        backend_options: keyword arguments for the backend (e.g. ``cache_size``).
        max_failures: retries of a member after its trainable raised, before giving it up.
        step_timeout: seconds one interval (load, the steps to the next ready point, save) may
            take before its worker is killed and replaced and the interval counts as a failure
            (retried up to ``max_failures`` times); None: no limit. Local backend only.
        seed: seed of the initial sampling and the controller's decisions.
        progress: shown by default: a live view with elapsed time, ETA and members training,
            queued, finished and failed when standard output is a terminal, else a plain line
            every 10 s (files, pipes, job logs); False for none, or a callable that gets the
            population.
        callbacks: :class:`hyperpop.callbacks.Callback` instances that see every event as it
            is written (experiment trackers: TensorBoard, MLflow, W&B).
        source: where the trainable comes from (``{"file": ..., "name": ...}``), for resume.

    Returns:
        A :class:`hyperpop.Result`.
    """
    _refuse_in_worker_import()
    with _settings():
        if not isinstance(metric, str) or not metric:
            raise ValueError("metric must be the name of a metric the trainable reports")
        if not isinstance(population, int) or population < 1:
            raise ValueError(f"population must be a positive int, got {population!r}")
        if max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {max_failures}")
        if isinstance(score_window, bool) or not isinstance(score_window, int) or score_window < 1:
            raise ValueError(
                f"score_window must be a positive int (reports averaged into a score), "
                f"got {score_window!r}"
            )
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
            max_lead=max_lead,
            seed=seed,
        )
        backend_ = _make_backend(backend, workers, **dict(backend_options or {}))
        backend_.set_step_timeout(_step_timeout(step_timeout))
        callbacks_ = CallbackList(callbacks)
        initial = _initial_configs(space, population, configs, seed)

    cleanup = None
    if storage is None:
        tmp = tempfile.TemporaryDirectory(prefix="hyperpop-")
        storage_path: Path | None = Path(tmp.name) / "run.db"
        cleanup = tmp.cleanup
        store = open_store(None)
    else:
        storage_path = Path(storage)
        if overwrite:  # under the lease from before the old run is deleted until the new one
            lock = WriterLock(storage_path).acquire()
            try:
                remove_run(storage_path, lock=lock)
            except BaseException:
                lock.release()
                raise
            store = SQLiteStore(storage_path, write=True, lock=lock)
        else:
            store = open_store(storage_path, write=True)
    try:
        if store.read():
            raise RunExistsError(storage_path)
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
        "rejuvenate": controller.rejuvenate.to_dict() if controller.rejuvenate else None,
        "score_window": score_window,
        "max_lead": max_lead,
        "deterministic": deterministic,
        "max_failures": max_failures,
        "step_timeout": step_timeout,
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
    shown = _progress(progress)
    if storage is not None:
        _member_logs(backend_, storage_path, shown)
    driver = Driver(
        store=store,
        pop=pop,
        controller=controller,
        backend=backend_,
        checkpoints=checkpoints,
        factory=factory,
        metric=metric,
        max_failures=max_failures,
        progress=shown,
        deterministic=deterministic,
        callbacks=callbacks_,
    )
    return driver.execute(cleanup)


def remove_run(path: str | os.PathLike[str], *, lock: WriterLock | None = None) -> None:
    """Delete a stored run: its SQLite file (with its WAL files) and its checkpoints.

    Deletes under the writer lease (the lock file ``<path>.lock`` stays), so a run that a live
    driver writes is never deleted and two removals (two ``--overwrite`` starts) never race.

    Args:
        path: the run's SQLite file.
        lock: the lease, already held by the caller, who keeps it (e.g. to create a new run
            there); by default it is taken and released here.

    Raises:
        StoreLockedError: a live driver is writing the run.
    """
    path = Path(path)
    held = lock if lock is not None else WriterLock(path).acquire()
    try:
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
        shutil.rmtree(checkpoint_dir_for(path), ignore_errors=True)
        shutil.rmtree(log_dir_for(path), ignore_errors=True)
    finally:
        if lock is None:
            held.release()


def _member_logs(backend: Backend, storage: Path | str, progress: Progress | None) -> None:
    """Members' stdout and stderr go to ``DB-logs/member-N.log`` beside the store; with a
    progress display, one line says where (their prints no longer reach this terminal)."""
    logs = log_dir_for(storage)
    backend.set_log_dir(logs)
    if getattr(backend, "log_dir", None) is None:
        return
    note = getattr(progress, "note", None)
    if note is not None:
        note(f"members' output goes to {logs}/member-N.log (hyperpop logs {storage} -m N)")


def _progress(progress: Progress | bool | None) -> Progress | None:
    """The progress display: by default (None) or with True, a live view on a terminal and
    plain periodic lines into a file or a pipe; False: none; or the caller's callable."""
    if progress is True or progress is None:
        import sys

        from hyperpop.live import LiveView, PlainProgress

        return LiveView() if sys.stdout.isatty() else PlainProgress()
    if progress is False:
        return None
    return progress


def resume(
    storage: str | os.PathLike[str],
    trainable: Any = None,
    *,
    workers: int | None = None,
    backend: str | Backend | None = None,
    backend_options: Mapping[str, Any] | None = None,
    step_timeout: float | None = None,
    exploit: ExploitStrategy | None = None,
    explore: ExploreStrategy | None = None,
    progress: Progress | bool | None = None,
    callbacks: Sequence[Callback] | None = None,
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
        step_timeout: seconds one interval may take (see :func:`run`; default: as recorded).
        exploit: a custom exploit strategy instance, if the run used one.
        explore: a custom explore strategy instance, if the run used one.
        progress: as in :func:`run` (shown by default; False for none).
        callbacks: as in :func:`run` (they are not recorded: pass them again).
    """
    _refuse_in_worker_import()
    _workers(workers)  # 0 is an error, not "as recorded"
    _refuse_missing(storage)
    callbacks_ = CallbackList(callbacks)
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
            max_lead=s.get("max_lead", 4),
            seed=s.get("seed"),  # decisions are keyed by member and ready point: same draws
        )
        controller.restore(pop)
        backend_ = _make_backend(
            backend or s.get("backend", "local"),
            workers or s.get("workers"),
            **dict(backend_options or {}),
        )
        if step_timeout is not None:
            backend_.set_step_timeout(_step_timeout(step_timeout))
        elif s.get("step_timeout") is not None:
            try:
                backend_.set_step_timeout(_step_timeout(s["step_timeout"]))
            except ValueError as e:  # the run's own value: go on without it, and say so
                log.warning("the run's step_timeout=%ss is not enforced: %s", s["step_timeout"], e)
        checkpoints = CheckpointStore(checkpoint_dir_for(storage))
        missing = [b for b in pop.live_checkpoints() if not checkpoints.exists(b)]
        if missing:
            log.warning("checkpoints missing from %s: %s", checkpoints.root, missing[:5])
        checkpoints.collect(pop.live_checkpoints(), temporaries=True)
        resumed = [Event(ev.RUN_RESUMED, None, {"pid": os.getpid(), "version": __version__})]
        store.append(resumed)
        pop.extend(resumed)
        shown = _progress(progress)
        _member_logs(backend_, storage, shown)
    except BaseException:
        store.close()
        raise
    driver = Driver(
        store=store,
        pop=pop,
        controller=controller,
        backend=backend_,
        checkpoints=checkpoints,
        factory=factory,
        metric=s["metric"],
        max_failures=s.get("max_failures", 3),
        progress=shown,
        deterministic=bool(s.get("deterministic", False)),
        callbacks=callbacks_,
    )
    return driver.execute()


def _refuse_missing(storage: str | os.PathLike[str]) -> None:
    """Resume writes nothing unless ``storage`` is a hyperpop store that holds a run (a typo
    must not leave a folder and an empty store behind)."""
    path = Path(storage)
    if not path.is_file():
        raise StoreError(f"no hyperpop store at {path} (check the path; resume creates nothing)")
    SQLiteStore(path).close()  # read-only: raises if it is not a hyperpop store


def _step_timeout(seconds: Any) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(
            f"step_timeout must be a positive number of seconds (or None: no limit), got "
            f"{seconds!r}"
        )
    return float(seconds)


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
