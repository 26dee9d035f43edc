"""One session of a run, assembled: the controller, the backend and the driver that a run's
checked settings describe, run once.

:func:`run_session` is the one path both entry points (:func:`hyperpop.run`,
:func:`hyperpop.resume`) take once they have checked their input and opened the store. How the
backend is asked for is checked first (:func:`backend_spec`) and it is built only once the store
is open (:func:`build_backend`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hyperpop.backends import Backend, backend_class, get_backend
from hyperpop.callbacks import CallbackList
from hyperpop.checkpoints import CheckpointStore, log_dir_for
from hyperpop.controller import Controller
from hyperpop.driver import Driver, Progress
from hyperpop.errors import SettingsError
from hyperpop.population import Population
from hyperpop.results import Result
from hyperpop.settings import AUTO, RunSettings, check_auto
from hyperpop.space import Space, SpaceError
from hyperpop.store.base import Store
from hyperpop.store.events import Event
from hyperpop.summary import ProgressView
from hyperpop.trainable import make_factory

__all__ = [
    "backend_spec",
    "build_backend",
    "controller_for",
    "recorded_timeout",
    "run_session",
    "settings_errors",
    "workers_given",
]

log = logging.getLogger("hyperpop")


@contextmanager
def settings_errors() -> Iterator[None]:
    """Turn a ValueError or TypeError raised while checking the settings into a SettingsError
    (one clear line on the command line); errors with a type of their own pass through."""
    try:
        yield
    except (SpaceError, SettingsError):
        raise
    except (ValueError, TypeError) as e:
        raise SettingsError(str(e)) from e


# --- the backend ------------------------------------------------------------------------
def workers_given(
    workers: int | str | None, options: Mapping[str, Any] | None
) -> tuple[int | str | None, dict[str, Any] | None]:
    """``workers`` and the backend options, with a ``workers`` given among the options taken
    out of them as the ``workers`` setting (it is recorded and resumed like one).

    Raises:
        SettingsError: both give workers, and differ.
    """
    if options is None or "workers" not in options:
        return workers, None if options is None else dict(options)
    opts = dict(options)
    given = opts.pop("workers")
    if workers is not None and given is not None and workers != given:
        raise _given_twice("workers", workers, given)
    return (workers if given is None else given), opts


def backend_spec(
    backend: str | Backend,
    workers: int | str | None,
    options: Mapping[str, Any] | None,
    settings: RunSettings | None = None,
    members: int | None = None,
) -> Callable[[], Backend]:
    """Check how the backend is asked for, and return what builds it (only once the store is
    open and empty). ``settings`` brings the GPU settings, forwarded as backend options;
    ``members`` (the population) caps the workers of a backend with a process or slot per
    worker: more would never train. ``workers`` comes checked, as a setting; ``"auto"`` (Ray
    only) follows the cluster, with ``members`` as its most actors."""
    workers, options = workers_given(workers, options)
    check_auto(workers, backend.name if isinstance(backend, Backend) else str(backend))
    if isinstance(backend, Backend):
        return _instance_spec(backend, workers, options, settings)
    return _named_spec(backend, workers, _with_settings(backend, options, settings), members)


def _given_twice(key: str, argument: Any, option: Any) -> SettingsError:
    """The error for a setting given both as an argument and among the backend options."""
    return SettingsError(
        f"{key} is given twice, as an argument and in backend_options ({argument!r} vs "
        f"{option!r}); give it once"
    )


def _with_settings(
    backend: str, options: Mapping[str, Any] | None, settings: RunSettings | None
) -> dict[str, Any]:
    """The backend options with the run's GPU settings among them (each given once)."""
    opts = dict(options or {})
    if settings is None:
        return opts
    for key, value in settings.replace(backend=str(backend)).backend_options().items():
        if key in opts and opts[key] != value:
            raise _given_twice(key, value, opts[key])
        opts[key] = value
    return opts


def _instance_spec(
    backend: Backend,
    workers: int | str | None,
    options: Mapping[str, Any] | None,
    settings: RunSettings | None,
) -> Callable[[], Backend]:
    """What gives a Backend instance: it is used as it is, so whatever asks it for something
    else (options, ``workers="auto"``, other processes per member, other workers) is refused."""
    if options:
        raise SettingsError(
            "backend_options are for a backend named by a string; a Backend instance is "
            "used as it is: pass them to its constructor instead"
        )
    if workers == AUTO:
        raise SettingsError(
            "workers='auto' is for a backend named by a string; build the instance with "
            "RayBackend('auto', max_workers=...) and leave workers out"
        )
    ranks = settings.processes_per_member if settings is not None else 1
    if ranks != 1 and ranks != backend.processes_per_member:
        raise SettingsError(
            f"processes_per_member={ranks} but the {backend.name!r} backend instance trains "
            f"{backend.processes_per_member} per member; a Backend instance is used as it "
            f"is: pass processes_per_member={ranks} to its constructor instead"
        )
    if isinstance(workers, int):
        return lambda: _sized(backend, workers)
    return lambda: backend


def _named_spec(
    backend: str, workers: int | str | None, opts: dict[str, Any], members: int | None
) -> Callable[[], Backend]:
    """What builds the backend named ``backend`` with options ``opts``, its workers capped at
    ``members`` (the Ray actors of ``workers="auto"`` too)."""
    try:
        backend_class(backend)  # an unknown name, or a missing extra, is refused now
    except ValueError as e:
        raise SettingsError(str(e)) from None
    if workers == AUTO:  # the Ray actors follow the cluster, one per member at most
        if members is not None:
            opts.setdefault("max_workers", members)
        return lambda: get_backend(backend, AUTO, **opts)
    count = workers if isinstance(workers, int) else None
    if members is not None and backend in ("local", "ray", "simulated"):
        count = _capped(count, members, backend, gpus="gpus" in opts)
    return lambda: get_backend(backend, count, **opts)


def _capped(workers: int | None, members: int, backend: str, *, gpus: bool) -> int | None:
    """At most one worker per member (a worker with no member to train only costs memory and
    start-up time): ``workers=8`` for 2 members starts 2, and says so. The local backend's
    default (one per CPU core) is capped the same way, unless GPUs decide the count."""
    if workers is None:
        if backend != "local" or gpus:
            return None
        cores = os.cpu_count() or 1
        return min(cores, members) if members < cores else None
    if workers > members:
        log.warning(
            "workers=%d but the population has %d member%s: starting %d worker%s (one per "
            "member; more would have nothing to train)",
            workers,
            members,
            "" if members == 1 else "s",
            members,
            "" if members == 1 else "s",
        )
        return members
    return workers


def _sized(backend: Backend, workers: int) -> Backend:
    """A Backend instance given with ``workers``: they must agree (nothing is ignored)."""
    if backend.capacity != workers:
        raise SettingsError(
            f"workers={workers} but the {backend.name!r} backend instance has "
            f"{backend.capacity} slots; leave workers out, or build the backend with {workers}"
        )
    return backend


def build_backend(make: Callable[[], Backend], step_timeout: float | None) -> Backend:
    with settings_errors():
        backend = make()
        backend.set_step_timeout(step_timeout)
    return backend


def recorded_timeout(backend: Backend, seconds: float | None, *, given: bool) -> None:
    """Enforce the step timeout on a resumed run: one passed to resume is refused like in
    :func:`run`; the run's own recorded value is dropped with a warning by a backend that
    cannot enforce it (the run goes on)."""
    if seconds is None:
        return
    try:
        backend.set_step_timeout(seconds)
    except ValueError as e:
        if given:
            backend.shutdown()
            raise SettingsError(str(e)) from None
        log.warning("the run's step_timeout=%ss is not enforced: %s", seconds, e)


# --- the session ------------------------------------------------------------------------
def controller_for(settings: RunSettings, space: Space) -> Controller:
    """The controller a run's settings describe (its strategies are checked against the
    space here, before anything is opened)."""
    return Controller(
        space,
        mode=settings.mode,
        ready=settings.ready,
        budget=list(settings.budget),
        exploit=settings.exploit,
        explore=settings.explore,
        synchronous=settings.synchronous,
        rejuvenate=settings.rejuvenate,
        max_lead=settings.max_lead,
        seed=settings.seed,  # decisions are keyed by member and ready point: same draws
    )


def run_session(
    *,
    store: Store,
    pop: Population,
    settings: RunSettings,
    controller: Controller,
    trainable: Any,
    make_backend: Callable[[], Backend],
    storage: Path | None,
    base: Path,
    run_id: str,
    opening: Callable[[Backend], list[Event]],
    progress: Progress | bool | None,
    callbacks: CallbackList,
    keep_best: bool = False,
) -> Result:
    """Run one session of a run: restore the controller's state from the fold, build the
    backend and the driver, start the backend, write the session's opening events
    (``opening(backend)``, once the backend knows its size), run, and shut the backend down.
    The caller built the controller (:func:`controller_for`), opened the store, and closes it.

    Args:
        storage: the run's SQLite file (None: a run kept in a temporary folder).
        base: where checkpoints go (``<base>-ckpt`` beside it).
        run_id: the run's id: its checkpoint folder is claimed for it before anything is
            written or collected there.
        keep_best: keep the best checkpoint's state in the result (a run whose store and
            checkpoints are deleted when it ends).
    """
    controller.restore(pop)
    checkpoints = CheckpointStore.for_store(base)
    # a run kept in a temporary folder (storage=None) has no crash to survive: no syncing
    checkpoints.fsync = storage is not None
    checkpoints.claim(run_id, new=not pop.members)
    if pop.members:  # a resumed run: drop what the log does not name, warn about what's gone
        checkpoints.adopt(pop.live_checkpoints())  # out of a folder of the older layout
        missing = [b for b in pop.live_checkpoints() if not checkpoints.exists(b)]
        if missing:
            log.warning("checkpoints missing from %s: %s", checkpoints.root, missing[:5])
        checkpoints.collect(pop.live_checkpoints(), temporaries=True)
    backend = make_backend()
    checkpoints.fsync = checkpoints.fsync and backend.durable
    driver: Driver | None = None
    try:
        shown = _progress(progress)
        if storage is not None:
            _member_logs(backend, storage, shown)
        clock = _clock(backend, pop)
        driver = Driver(
            store=store,
            pop=pop,
            controller=controller,
            backend=backend,
            checkpoints=checkpoints,
            settings=settings,
            progress=shown,
            callbacks=callbacks,
            **({"clock": clock} if clock is not None else {}),
        )
        backend.start(make_factory(trainable), checkpoints)
        driver.open(opening(backend))
        driver.execute()
    finally:
        backend.shutdown()
        if driver is not None:
            driver.collect_leftovers()
    result = Result(store.read(), path=storage)
    result.best_state = _best_state(pop, checkpoints) if keep_best else None
    result.overhead = {
        "user_seconds": driver.user_seconds,
        "worker_seconds": driver.worker_seconds,
    }
    return result


def _clock(backend: Backend, pop: Population) -> Callable[[], float] | None:
    """The driver's clock for a backend that runs on simulated time (None: the real one). It
    starts at the later of now and the log's last event, so times in the log never go back,
    even across resumes of a simulation that ran ahead of the wall clock."""
    if backend.simulated_seconds() is None:
        return None
    start = max(time.time(), pop.last_time)
    return lambda: start + (backend.simulated_seconds() or 0.0)


def _member_logs(backend: Backend, storage: Path | str, progress: ProgressView | None) -> None:
    """Members' stdout and stderr go to ``DB-logs/member-N.log`` beside the store; with a
    progress display, one line says where (their prints no longer reach this terminal)."""
    logs = log_dir_for(storage)
    backend.set_log_dir(logs)
    if backend.log_dir is None:
        return
    if progress is not None:
        progress.note(f"members' output goes to {logs}/member-N.log (hyperpop logs {storage} -m N)")


def _progress(progress: Progress | bool | None) -> ProgressView | None:
    """The progress display: by default (None) or with True, a live view on a terminal and
    plain periodic lines into a file or a pipe; False: none; one of hyperpop's views as it is;
    or the caller's callable, handed the population."""
    from hyperpop.live import FunctionView, LiveView, PlainProgress, View

    if progress is True or progress is None:
        return LiveView() if sys.stdout.isatty() else PlainProgress()
    if progress is False:
        return None
    return progress if isinstance(progress, View) else FunctionView(progress)


def _best_state(pop: Population, checkpoints: CheckpointStore) -> Any:
    """The state of the run's best checkpoint, or None."""
    blob = pop.best_checkpoint
    if blob is None:
        return None
    try:
        return checkpoints.load(blob)
    except Exception as e:  # noqa: BLE001 - the run's outcome matters more
        log.warning("could not keep the best checkpoint %s: %s", blob, e)
        return None
