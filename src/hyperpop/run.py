"""The public entry points: :func:`run` starts a PBT run, :func:`resume` continues one.

Both check the user's input first (nothing is opened before it is valid), then open the store,
and hand over to :func:`hyperpop.session.run_session`, the one place that builds the
controller, the backend and the driver, and that opens and closes everything a session uses.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from hyperpop._version import __version__
from hyperpop.backends import Backend
from hyperpop.callbacks import Callback, CallbackList
from hyperpop.checkpoints import CheckpointError, CheckpointStore, checkpoint_dir_for
from hyperpop.controller import Budget, Ready, Rejuvenate
from hyperpop.driver import Progress, unanswered
from hyperpop.errors import RunError, RunExistsError, SettingsError, StoreError
from hyperpop.population import Population
from hyperpop.results import Result
from hyperpop.runfiles import remove_run
from hyperpop.session import (
    backend_spec,
    build_backend,
    controller_for,
    recorded_timeout,
    run_session,
    settings_errors,
    workers_given,
)
from hyperpop.settings import AUTO, RunSettings
from hyperpop.space import Space, SpaceError
from hyperpop.store import vocabulary as voc
from hyperpop.store.base import Store
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore, WriterLock, open_store
from hyperpop.strategies import ExploitStrategy, ExploreStrategy
from hyperpop.trainable import TrainableError, make_factory
from hyperpop.userfile import load_trainable, source_of

__all__ = ["resume", "run"]

log = logging.getLogger("hyperpop")


_P = ParamSpec("_P")
_R = TypeVar("_R")

#: the errors hyperpop raises on purpose, each with a message that says what to do: raised to
#: the caller of :func:`run` or :func:`resume` from there, not through hyperpop's internals
_USER_ERRORS = (
    SettingsError,
    SpaceError,
    RunError,  # MetricError too
    StoreError,  # full, locked, another version, a run already there
    TrainableError,
    CheckpointError,
)


def _public(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """An entry point whose own errors end their traceback at the caller's line: the message
    names the problem and the fix, and the frames inside hyperpop would only bury it (as
    scikit-learn's input validation does). Any other exception keeps its whole traceback."""

    @functools.wraps(fn)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except _USER_ERRORS as e:
            raise e.with_traceback(None) from None

    return call


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


# --- run ---------------------------------------------------------------------------------
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


def _check_store_path(path: Path, run_id: str, overwrite: bool) -> None:
    """Refuse, before anything is created, a path that cannot be a new run's store: a folder,
    a name that checkpoint folders use (``x.ckpt`` of the older layout, ``x.db-ckpt``), or a
    store that is gone while its checkpoint folder, with another run's blobs, is still there."""
    if path.is_dir():
        raise StoreError(f"{path} is a folder; a store is a file, e.g. {path / 'run.db'}")
    for suffix in (".ckpt", "-ckpt"):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            stem = path.name[: -len(suffix)]
            raise StoreError(
                f"{path}: a store's name cannot end in {suffix} (checkpoint folders are named "
                f"so); name it e.g. {path.with_name(stem + '.db')}"
            )
    if not overwrite and not path.exists():
        CheckpointStore(checkpoint_dir_for(path), create=False).check(run_id, new=True)


@contextmanager
def _new_store(
    storage: str | os.PathLike[str] | None, overwrite: bool, run_id: str
) -> Iterator[tuple[Store, Path]]:
    """Open the store of a new run and check it holds no run; yield it with the path its
    checkpoints go beside. None: the log in memory, checkpoints in a temporary folder. Closed
    (and the temporary folder removed) on the way out."""
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if storage is not None:
        _check_store_path(Path(storage), run_id, overwrite)
    if storage is None:
        tmp = tempfile.TemporaryDirectory(prefix="hyperpop-")
        store: Store = open_store(None)
    elif overwrite:  # under the lease from before the old run is deleted until the new one
        path = Path(storage)
        lock = WriterLock(path).acquire()
        try:
            remove_run(path, lock=lock)
        except BaseException:
            lock.release()
            raise
        store = SQLiteStore(path, write=True, lock=lock)
    else:
        store = open_store(storage, write=True)
    try:
        if storage is not None and store.read():
            raise RunExistsError(Path(storage))
        base = Path(tmp.name) / "run.db" if tmp is not None else Path(storage)  # type: ignore[arg-type]
        yield store, base
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()


@_public
def run(
    trainable: Any,
    space: Mapping[str, Any] | Space,
    *,
    metric: str,
    mode: str = "max",
    population: int = 8,
    workers: int | str | None = None,
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
    gpus: int | str | Sequence[int | str] | None = None,
    gpus_per_member: float | None = None,
    processes_per_member: int = 1,
    progress: Progress | bool | None = None,
    callbacks: Sequence[Callback] | None = None,
) -> Result:
    """Train a population with Population Based Training.

    Args:
        trainable: a :class:`hyperpop.Trainable` subclass, or a function
            ``fn(config, checkpoint)`` that calls :func:`hyperpop.report` once per step.
        space: the search space (a dict of ``hp.uniform(...)``-style parameters and constants).
        metric: the reported metric to optimise.
        mode: ``"max"`` or ``"min"``.
        population: number of members (independent of ``workers``).
        workers: members training at once (default: one per CPU core); on Ray, ``"auto"``:
            as many as the cluster holds, following nodes as they join and leave (at most one
            per member; each change is a ``workers_changed`` event with ``by="cluster"``).
        budget: ``hp.Steps(n)`` per member (an int means the same), ``hp.WallTime(s)``,
            ``hp.Target(score)``, or a list of them (the first reached stops). Default:
            ``hp.Steps(100)``.
        ready: steps between ready points, or ``hp.Ready(steps=..., seconds=..., burn_in=...)``.
        burn_in: no exploit before this many steps (overrides ``ready.burn_in``).
        exploit: ``"truncation"``, ``"tournament"``, ``"ttest"``, ``None`` or a strategy
            instance.
        explore: ``"perturb"``, ``"resample"``, ``"pb2"``, ``None`` or a strategy instance.
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
            keeps everything in a temporary folder removed at the end (the best model's
            state stays in ``result.best_state``).
        overwrite: delete a run already stored at ``storage`` (and its checkpoints) first,
            instead of refusing; a run that a live driver is writing is never deleted.
        backend: ``"local"`` (processes on this machine), ``"ray"``, ``"simulated"`` (in this
            process on a simulated clock: deterministic, for tests), ``"vectorized"``, or a
            Backend instance (then ``workers`` and ``backend_options`` go to its constructor).
        backend_options: keyword arguments for the backend (e.g. ``cache_size``).
        max_failures: retries of a member after its trainable raised, before giving it up.
        step_timeout: seconds one interval (load, the steps to the next ready point, save) may
            take before its worker is killed and replaced and the interval counts as a failure
            (retried up to ``max_failures`` times); None: no limit. Local backend only.
        seed: seed of the initial sampling and the controller's decisions.
        gpus: the GPUs to train on: None (every visible GPU when ``gpus_per_member`` is set,
            else none), ``"all"``, a count, or device ids (``[0, 1]``). Each local worker sees
            only its device(s) through ``CUDA_VISIBLE_DEVICES``, and ``workers`` follows from
            the GPUs when left out.
        gpus_per_member: each member's share of a GPU: 1, a fraction such as 0.5 (two members
            train on one GPU at once) or a whole number of GPUs. On Ray it becomes the
            actors' ``num_gpus``.
        processes_per_member: processes that train each member together, as the ranks of
            one DDP/FSDP job with the environment ``torchrun`` gives (``RANK``,
            ``WORLD_SIZE``, ``MASTER_ADDR``...); a member's GPUs are split over its ranks.
            Rank 0 reports and saves; every rank loads. See docs/distributed.md.
        progress: shown by default: a live view with elapsed time, ETA and members training,
            queued, finished and failed when standard output is a terminal, else a plain line
            every 10 s (files, pipes, job logs); False for none, or a callable that gets the
            population.
        callbacks: :class:`hyperpop.callbacks.Callback` instances that see every event as it
            is written (experiment trackers: TensorBoard, MLflow, W&B).

    Returns:
        A :class:`hyperpop.Result`.

    Raises:
        SettingsError: a setting is invalid (nothing was written).
        RunExistsError: ``storage`` already holds a run.
    """
    _refuse_in_worker_import()
    with settings_errors():
        workers, backend_options = workers_given(workers, backend_options)
        settings = RunSettings.create(
            metric=metric,
            mode=mode,
            population=population,
            workers=workers,
            budget=budget,
            ready=ready,
            burn_in=burn_in,
            exploit=exploit,
            explore=explore,
            synchronous=synchronous,
            rejuvenate=rejuvenate,
            score_window=score_window,
            max_lead=max_lead,
            deterministic=deterministic,
            max_failures=max_failures,
            step_timeout=step_timeout,
            seed=seed,
            backend=backend.name if isinstance(backend, Backend) else str(backend),
            gpus=gpus,
            gpus_per_member=gpus_per_member,
            processes_per_member=processes_per_member,
        )
        space = Space(space)
        controller = controller_for(settings, space)
        make_factory(trainable)  # a trainable that cannot be built is refused here
        make_backend = backend_spec(backend, workers, backend_options, settings, population)
        callbacks_ = CallbackList(callbacks)
        initial = _initial_configs(space, population, configs, seed)
    source = source_of(trainable)
    run_id = uuid.uuid4().hex  # tells runs apart (trackers, copies of a store, folders)

    def opening(backend_: Backend) -> list[Event]:
        # "auto" stays "auto": a resume follows the cluster again
        recorded = settings if workers == AUTO else settings.replace(workers=backend_.capacity)
        started = voc.RunStarted(
            run_id=run_id,
            settings=recorded.to_dict(),
            space=space.to_dict(),
            trainable=source,
            version=__version__,
            pid=os.getpid(),
        )
        return [Event.of(started)] + [
            Event.of(voc.MemberCreated(c), i) for i, c in enumerate(initial)
        ]

    with _new_store(storage, overwrite, run_id) as (store, base):
        return run_session(
            store=store,
            pop=Population(),
            settings=settings,
            controller=controller,
            trainable=trainable,
            make_backend=lambda: build_backend(make_backend, settings.step_timeout),
            storage=None if storage is None else Path(storage),
            base=base,
            run_id=run_id,
            opening=opening,
            progress=progress,
            callbacks=callbacks_,
            keep_best=storage is None,
        )


# --- resume ------------------------------------------------------------------------------
@_public
def resume(
    storage: str | os.PathLike[str],
    trainable: Any = None,
    *,
    workers: int | str | None = None,
    backend: str | Backend | None = None,
    backend_options: Mapping[str, Any] | None = None,
    step_timeout: float | None = None,
    exploit: ExploitStrategy | None = None,
    explore: ExploreStrategy | None = None,
    processes_per_member: int | None = None,
    progress: Progress | bool | None = None,
    callbacks: Sequence[Callback] | None = None,
) -> Result:
    """Continue a run from its store (after a crash, ``kill -9`` or Ctrl-C).

    Every recorded report is kept; members restart from their last checkpoint. A finished run
    is returned as it is.

    Args:
        storage: the run's SQLite file.
        trainable: the trainable; default: imported from where the store says it came from.
        workers: members training at once, or ``"auto"`` on Ray (default: as recorded).
        backend: default: as recorded.
        backend_options: keyword arguments for the backend.
        step_timeout: seconds one interval may take (see :func:`run`; default: as recorded).
        exploit: a custom exploit strategy instance, if the run used one.
        explore: a custom explore strategy instance, if the run used one.
        processes_per_member: processes per member (see :func:`run`; default: as recorded).
        progress: as in :func:`run` (shown by default; False for none).
        callbacks: as in :func:`run` (they are not recorded: pass them again).
    """
    _refuse_in_worker_import()
    with settings_errors():
        RunSettings.check(
            workers=workers, step_timeout=step_timeout, processes_per_member=processes_per_member
        )
        callbacks_ = CallbackList(callbacks)
    _refuse_missing(storage)
    path = Path(storage)
    with open_store(path, write=True) as store:
        events = store.read()
        if not events or events[0].kind != voc.RunStarted.kind:
            raise StoreError(f"{storage} holds no run to resume")
        pop = Population.from_events(events)
        retry = pop.given_up()  # failed for good: one more round of retries (docs/guide.md)
        if pop.finished and not retry and not unanswered(store, pop):
            return Result(events, path=path)
        settings = RunSettings.from_dict(pop.settings, exploit=exploit, explore=explore)
        with settings_errors():
            if step_timeout is not None:
                settings = settings.replace(step_timeout=step_timeout)
            if processes_per_member is not None:
                settings = settings.replace(processes_per_member=processes_per_member)
            make_backend = backend_spec(
                backend or settings.backend,
                # the recorded count only for the recorded backend (4096 vectorized slots are
                # not 4096 local workers)
                workers or (settings.workers if backend in (None, settings.backend) else None),
                backend_options,
                settings,
                len(pop.members),  # one worker per member at most
            )
        controller = controller_for(settings, Space.from_dict(pop.space))
        if trainable is None:
            trainable = load_trainable(pop.trainable)

        def build() -> Backend:
            backend_ = build_backend(make_backend, None)
            recorded_timeout(backend_, settings.step_timeout, given=step_timeout is not None)
            return backend_

        def opening(backend_: Backend) -> list[Event]:
            resumed = voc.RunResumed(os.getpid(), __version__, backend_.capacity, tuple(retry))
            return [Event.of(resumed)]

        return run_session(
            store=store,
            pop=pop,
            settings=settings,
            controller=controller,
            trainable=trainable,
            make_backend=build,
            storage=path,
            base=path,
            # a log from before run ids: the store's own path stands in
            run_id=pop.run_id or f"store:{path.resolve()}",
            opening=opening,
            progress=progress,
            callbacks=callbacks_,
        )


def _refuse_missing(storage: str | os.PathLike[str]) -> None:
    """Resume writes nothing unless ``storage`` is a hyperpop store that holds a run (a typo
    must not leave a folder and an empty store behind)."""
    path = Path(storage)
    if not path.is_file():
        raise StoreError(f"no hyperpop store at {path} (check the path; resume creates nothing)")
    SQLiteStore(path).close()  # read-only: raises if it is not a hyperpop store
