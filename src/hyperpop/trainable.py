"""The trainable API: what a user hands hyperpop to train.

Two styles:

* a :class:`Trainable` subclass with ``setup``, ``train``, ``save``, ``load`` and ``apply``;
* a function ``fn(config, checkpoint)`` that loops forever, calling :func:`report` once per
  training step (the style of Ray Tune's function API).

The contract that keeps explored hyperparameters from being silently undone (ray#62173): after a
member takes another state (its own after a crash, or a donor's after an exploit), hyperpop calls
``load(state)`` and **then** ``apply(config)``. Whatever ``load`` restores (an optimiser's learning
rate, say), ``apply`` has the last word.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["FunctionTrainable", "Trainable", "TrainableError", "make_factory", "report"]


class TrainableError(RuntimeError):
    """The user's trainable misbehaved (wrong return type, missing method...)."""


class Trainable:
    """Base class of a class-style trainable.

    Subclasses implement :meth:`setup`, :meth:`train`, :meth:`save`, :meth:`load` and
    :meth:`apply`. One instance lives per member in a worker process; it keeps its state in
    memory while the member keeps training there.
    """

    config: dict[str, Any]

    def setup(self, config: dict[str, Any]) -> None:
        """Build the model and optimiser for ``config`` (called once per fresh member)."""

    def train(self) -> Mapping[str, Any]:
        """Train one step (an epoch, a few batches...) and return metrics."""
        raise NotImplementedError("a Trainable must implement train() -> dict of metrics")

    def save(self) -> Any:
        """Return the member's state (any picklable object, e.g. state_dicts)."""
        raise NotImplementedError("a Trainable must implement save() -> picklable state")

    def load(self, state: Any) -> None:
        """Restore a state returned by :meth:`save` (possibly another member's)."""
        raise NotImplementedError("a Trainable must implement load(state)")

    def apply(self, config: dict[str, Any]) -> None:
        """Take new hyperparameters in place (e.g. set the optimiser's learning rate).

        Called after every :meth:`load`, so a restored optimiser never brings back old values.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement apply(config) to take new hyperparameters "
            "in place (e.g. write config['lr'] into the optimiser's param_groups); without it "
            "explored hyperparameters would be silently ignored"
        )

    def reset(self, how: str) -> None:
        """Reset part of the weights in place (rejuvenation with ``Rejuvenate(reset=how)``);
        ``apply(config)`` follows. Only needed for partial resets: ``"full"`` builds the
        member afresh with ``setup(config)`` instead."""
        raise TrainableError(
            f"{type(self).__name__} has no reset({how!r}): implement Trainable.reset(how) for "
            "a partial rejuvenation, or use Rejuvenate(reset='full')"
        )

    def cleanup(self) -> None:
        """Release resources when the member leaves the worker."""


# --- function style -------------------------------------------------------------------------

_local = threading.local()


class _Stop(BaseException):
    """Raised inside a function trainable's thread to unwind it."""


def report(metrics: Mapping[str, Any] | None = None, *, checkpoint: Any = None, **kw: Any) -> None:
    """Report one step's metrics from a function trainable.

    Args:
        metrics: the step's metrics (keywords are merged in).
        checkpoint: the member's state after this step (any picklable); hyperpop hands it back
            as the ``checkpoint`` argument when the member (or a member that exploits it)
            restarts.
    """
    session: _FunctionSession | None = getattr(_local, "session", None)
    if session is None:
        raise TrainableError("hyperpop.report() was called outside a hyperpop function trainable")
    merged = dict(metrics or {})
    merged.update(kw)
    session.put(merged, checkpoint)


class _FunctionSession:
    """Runs a function trainable in a thread, one :func:`report` per :meth:`step`."""

    def __init__(self, fn: Callable[..., Any], config: dict[str, Any], checkpoint: Any):
        self.fn, self.config, self.initial = fn, config, checkpoint
        self.checkpoint = checkpoint
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._result: tuple[str, Any] | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    def _main(self) -> None:
        _local.session = self
        self._go.acquire()
        try:
            if self._stop:
                return
            self.fn(self.config, self.initial)
            self._result = ("end", None)
        except _Stop:
            return
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._result = ("error", e)
        self._done.release()

    def put(self, metrics: dict[str, Any], checkpoint: Any) -> None:
        if checkpoint is not None:
            self.checkpoint = checkpoint
        self._result = ("report", metrics)
        self._done.release()
        self._go.acquire()
        if self._stop:
            raise _Stop

    def step(self) -> dict[str, Any]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, daemon=True)
            self._thread.start()
        self._go.release()
        self._done.acquire()
        assert self._result is not None  # the thread set it before it released _done
        kind, value = self._result
        if kind == "error":
            raise value
        if kind == "end":
            raise TrainableError(
                "the function trainable returned; it must loop and call hyperpop.report() "
                "once per step until hyperpop stops it"
            )
        return value

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stop = True
            self._go.release()
            self._thread.join(timeout=10)


class FunctionTrainable(Trainable):
    """Adapts ``fn(config, checkpoint)`` + :func:`report` to the :class:`Trainable` API.

    A new config or state restarts the function with ``(config, checkpoint)``, so the function
    always starts from the state it is handed and the config it is given.
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self._session: _FunctionSession | None = None
        self._pending: Any = None

    def _restart(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = _FunctionSession(self.fn, self.config, self._pending)

    def setup(self, config: dict[str, Any]) -> None:
        self.config = config
        self._pending = None
        self._restart()

    def train(self) -> Mapping[str, Any]:
        assert self._session is not None
        return self._session.step()

    def save(self) -> Any:
        assert self._session is not None
        return self._session.checkpoint

    def load(self, state: Any) -> None:
        self._pending = state
        self._restart()

    def apply(self, config: dict[str, Any]) -> None:
        self.config = config
        if self._session is not None:
            self._pending = self._session.checkpoint
        self._restart()

    def cleanup(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class _ClassFactory:
    def __init__(self, cls: type[Trainable]):
        self.cls = cls

    def __call__(self) -> Trainable:
        return self.cls()


class _FunctionFactory:
    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self) -> Trainable:
        return FunctionTrainable(self.fn)


def make_factory(trainable: Any) -> Callable[[], Trainable]:
    """A picklable zero-argument callable that builds a fresh trainable instance."""
    if isinstance(trainable, type) and issubclass(trainable, Trainable):
        missing = [
            m
            for m in ("train", "save", "load", "apply")
            if getattr(trainable, m) is getattr(Trainable, m)
        ]
        if missing:
            raise TrainableError(
                f"{trainable.__name__} does not implement {', '.join(missing)}; a Trainable "
                "needs setup, train, save, load and apply"
            )
        return _ClassFactory(trainable)
    if isinstance(trainable, type):
        raise TrainableError(
            f"{trainable.__name__} is a class but not a hyperpop.Trainable subclass; "
            "subclass hp.Trainable or pass a function fn(config, checkpoint)"
        )
    if callable(trainable):
        return _FunctionFactory(trainable)
    raise TrainableError(
        f"expected a hyperpop.Trainable subclass or a function fn(config, checkpoint), "
        f"got {trainable!r}"
    )
