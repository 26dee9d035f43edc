"""The exceptions hyperpop raises on purpose, in one place (all public as ``hyperpop.X``).

Each message names the problem and the fix. The space's and the trainable's own errors
(:class:`~hyperpop.space.SpaceError`, :class:`~hyperpop.trainable.TrainableError`) live beside
what they check.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MetricError",
    "RunError",
    "RunExistsError",
    "SettingsError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreVersionError",
]


class SettingsError(ValueError):
    """A setting of :func:`hyperpop.run` or :func:`hyperpop.resume` is invalid (nothing was
    written)."""


class RunError(RuntimeError):
    """The run cannot go on (every member failed, all scores are NaN...)."""


class MetricError(RunError):
    """The trainable does not report the metric being optimised, or reports a non-number."""


class StoreError(RuntimeError):
    """The store cannot be opened or read."""


class StoreVersionError(StoreError):
    """The store was written by an incompatible version of hyperpop."""


class StoreLockedError(StoreError):
    """Another live driver is writing this store."""


class StoreFullError(StoreError):
    """The disk (or the database's size limit) is full: nothing more can be recorded."""


class RunExistsError(StoreError):
    """The storage path already holds a run (resume it, overwrite it, or choose a new path)."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(
            f"{path} already holds a run; resume it with hyperpop.resume({str(path)!r}) or "
            f"`hyperpop resume {path}`, pass overwrite=True to replace it, or choose a new "
            "storage path"
        )
