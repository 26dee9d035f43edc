"""Load a user's run file (``hyperpop run examples/toy.py``): its trainable, space and settings.

A run file is plain Python that defines, at module level:

* ``trainable``: a :class:`hyperpop.Trainable` subclass or a function (alternatively, the only
  ``Trainable`` subclass defined in the file is used);
* ``space``: the search space dict;
* ``settings`` (optional): keyword arguments for :func:`hyperpop.run` (``metric``, ``mode``,
  ``population``, ``budget``...).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

__all__ = ["RunFile", "RunFileError", "load_file", "load_trainable"]


class RunFileError(ValueError):
    """A run file is missing or does not define what ``hyperpop run`` needs."""


@dataclass
class RunFile:
    """What a run file defines."""

    path: Path
    module: ModuleType
    trainable: Any
    trainable_name: str
    space: Any
    settings: dict[str, Any] = field(default_factory=dict)


def load_file(path: str | os.PathLike[str]) -> RunFile:
    """Import a run file and pick out its trainable, space and settings."""
    from hyperpop.trainable import Trainable

    p = Path(path).resolve()
    if not p.is_file():
        raise RunFileError(f"no run file at {path}")
    name = "hyperpop_runfile_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(p):
        module = sys.modules[name]
    else:
        spec = importlib.util.spec_from_file_location(name, p)
        if spec is None or spec.loader is None:
            raise RunFileError(f"{path} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(p.parent))
        try:
            spec.loader.exec_module(module)
        finally:
            if sys.path and sys.path[0] == str(p.parent):
                sys.path.pop(0)
    # the file is not importable in worker processes: send its objects by value
    cloudpickle.register_pickle_by_value(module)

    trainable_name = "trainable"
    trainable = getattr(module, "trainable", None)
    if trainable is None:
        classes = [
            (k, v)
            for k, v in vars(module).items()
            if isinstance(v, type)
            and issubclass(v, Trainable)
            and v is not Trainable
            and v.__module__ == module.__name__
        ]
        if len(classes) != 1:
            raise RunFileError(
                f"{path} must define `trainable = ...` (a Trainable subclass or a function); "
                f"found {len(classes)} Trainable subclasses"
            )
        trainable_name, trainable = classes[0]
    space = getattr(module, "space", None)
    if space is None:
        raise RunFileError(f"{path} must define `space = {{...}}`, the search space")
    settings = dict(getattr(module, "settings", {}) or {})
    return RunFile(p, module, trainable, trainable_name, space, settings)


def load_trainable(source: Mapping[str, Any]) -> Any:
    """Import the trainable recorded in a store (``{"module"|"file": ..., "name": ...}``)."""
    name = source.get("name")
    if not name:
        raise RunFileError(
            "the store does not say where its trainable lives; pass trainable= to resume()"
        )
    if "module" in source:
        obj: Any = importlib.import_module(source["module"])
    elif "file" in source:
        obj = load_file(source["file"]).module
    else:
        raise RunFileError("the store does not say where its trainable lives; pass trainable=")
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
