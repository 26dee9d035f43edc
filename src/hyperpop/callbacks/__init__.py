"""Callbacks: code that sees a run as it is written (experiment trackers and the like).

Pass instances to ``hp.run(..., callbacks=[...])`` (and to ``hp.resume`` again). The driver calls
them with the events it has just written to the store, in log order, together with the folded
population, so a callback sees exactly what the log holds: reports, exploits, explores,
rejuvenations, failures. A callback that raises is logged and switched off; the run goes on.

Experiment trackers (imported on first use, each needs its extra; see docs/trackers.md):
:class:`TensorBoard` (``hyperpop[tensorboard]``), :class:`MLflow` (``hyperpop[mlflow]``) and
:class:`WandB` (``hyperpop[wandb]``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hyperpop.population import Population
from hyperpop.store.events import Event

if TYPE_CHECKING:  # at run time, imported on first use by __getattr__ below
    from hyperpop.callbacks.mlflow import MLflow
    from hyperpop.callbacks.tensorboard import TensorBoard
    from hyperpop.callbacks.wandb import WandB

__all__ = ["Callback", "CallbackList", "MLflow", "TensorBoard", "WandB"]

#: tracker classes, by the module that defines them (imported on first use)
_TRACKERS = {"TensorBoard": "tensorboard", "MLflow": "mlflow", "WandB": "wandb"}


def __getattr__(name: str) -> object:
    if name in _TRACKERS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_TRACKERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


log = logging.getLogger("hyperpop")


class Callback:
    """Base class: override the hooks you need; each does nothing by default."""

    def on_start(self, pop: Population, path: Path | None) -> None:
        """A session starts (a new run, or a resumed one: ``pop`` then holds its past).

        Args:
            pop: the population folded from every event written so far (settings, space,
                members, and, on resume, their whole history).
            path: the run's SQLite file, or None for a run kept in a temporary folder.
        """

    def on_events(self, events: Sequence[Event], pop: Population) -> None:
        """Events were written to the store (in log order, each with its ``seq``).

        Args:
            events: the events just written.
            pop: the population with these events folded in.
        """

    def on_end(self, pop: Population, reason: str) -> None:
        """The session ends (``reason``: why, e.g. ``"budget"``, ``"stopped"``, ``"error"``)."""


class CallbackList:
    """Calls each callback in turn; one that raises is logged and dropped, the run goes on."""

    def __init__(self, callbacks: Sequence[Callback] | None = None):
        items = list(callbacks or [])
        for cb in items:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be hyperpop.callbacks.Callback instances, got {cb!r}"
                )
        self.callbacks = items

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def _each(self, hook: str, *args: object) -> None:
        for cb in list(self.callbacks):
            try:
                getattr(cb, hook)(*args)
            except Exception:  # a tracker must never stop the run
                log.exception("callback %r failed in %s; it is switched off", cb, hook)
                self.callbacks.remove(cb)

    def on_start(self, pop: Population, path: Path | None) -> None:
        self._each("on_start", pop, path)

    def on_events(self, events: Sequence[Event], pop: Population) -> None:
        if events:
            self._each("on_events", events, pop)

    def on_end(self, pop: Population, reason: str) -> None:
        self._each("on_end", pop, reason)
