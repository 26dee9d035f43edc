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
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

__all__ = [
    "RunFile",
    "RunFileError",
    "import_only",
    "load_file",
    "load_object",
    "load_trainable",
    "source_of",
]

#: where each trainable loaded from a run file came from, so a run started with it records
#: a place that resume and replay can import it from again
_SOURCES: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()


def source_of(trainable: Any) -> dict[str, str]:
    """Where a trainable can be imported from again: ``{"module"|"file": ..., "name": ...}``,
    or ``{}`` for one defined where nothing can import it (``python -c``, a notebook)."""
    try:
        known = _SOURCES.get(trainable)
    except TypeError:  # not weak-referenceable
        known = None
    if known is not None:
        return dict(known)
    mod = getattr(trainable, "__module__", None)
    name = getattr(trainable, "__qualname__", None)
    if mod and name and mod != "__main__" and "<" not in name:
        return {"module": mod, "name": name}
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main and os.path.isfile(main) and name and "<" not in name:
        return {"file": os.path.abspath(main), "name": name}
    return {}


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


#: set while a script is imported only for its definitions (resume, replay): a run it starts
#: at module level stops there (see :class:`ImportOnly`)
_IMPORT_ONLY = False


class ImportOnly(BaseException):
    """Raised by ``hp.run``/``hp.resume`` while a script is imported only for its definitions
    (``hyperpop resume --trainable script.py:Name``): the script's own run does not start, and
    what it defined before that call is kept."""


def import_only() -> bool:
    """Whether a script is being imported only for its definitions (no run may start)."""
    return _IMPORT_ONLY


def _import_file(path: str | os.PathLike[str], *, lenient: bool = False) -> ModuleType:
    """Import a Python file as a module (objects it defines are pickled by value).

    With ``lenient``, a script that starts a run at module level (no main guard) is imported
    up to that call: the run does not start, and what it defined before is there."""
    global _IMPORT_ONLY
    p = Path(path).resolve()
    if not p.is_file():
        raise RunFileError(f"no Python file at {path}")
    name = "hyperpop_runfile_" + "".join(c if c.isalnum() else "_" for c in p.stem)
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(p):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise RunFileError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # the file is not importable in worker processes: send its objects by value
    cloudpickle.register_pickle_by_value(module)
    sys.path.insert(0, str(p.parent))
    before, _IMPORT_ONLY = _IMPORT_ONLY, lenient or _IMPORT_ONLY
    try:
        spec.loader.exec_module(module)
    except ImportOnly:
        pass  # the script's own hp.run(...): everything above it is defined
    finally:
        _IMPORT_ONLY = before
        if sys.path and sys.path[0] == str(p.parent):
            sys.path.pop(0)
    return module


_SPEC_HELP = (
    "pass --trainable path/to/script.py:Name or --trainable package.module:Name (in Python: "
    "hp.resume(db, trainable=Name))"
)


def load_object(spec: str) -> Any:
    """The object a spec names: ``path.py:Name`` (the file is imported without starting a run
    it may start at module level), ``path.py`` (its ``trainable``), or ``module:Name``.

    Raises:
        RunFileError: the spec is malformed, or names nothing; the message says what to pass.
    """
    path, sep, name = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if path.endswith(".py") or (not sep and spec.endswith(".py")):
        if not sep:
            return load_file(spec).trainable
        module = _import_file(path, lenient=True)
    elif not sep or not path or not name:
        raise RunFileError(f"{spec!r} is not FILE.py:Name or module:Name; {_SPEC_HELP}")
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as e:
            raise RunFileError(
                f"cannot import module {path!r} ({e}); run from the folder that holds it, "
                f"or {_SPEC_HELP}"
            ) from None
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise RunFileError(f"{path} defines no {name!r}; {_SPEC_HELP}")
        obj = getattr(obj, part)
    return obj


def load_file(path: str | os.PathLike[str]) -> RunFile:
    """Import a run file and pick out its trainable, space and settings."""
    from hyperpop.trainable import Trainable

    p = Path(path).resolve()
    if not p.is_file():
        raise RunFileError(f"no run file at {path}")
    module = _import_file(p)

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
    try:
        _SOURCES[trainable] = {"file": str(p), "name": trainable_name}
    except TypeError:  # not weak-referenceable: the run records where Python says it lives
        pass
    return RunFile(p, module, trainable, trainable_name, space, settings)


def load_trainable(source: Mapping[str, Any]) -> Any:
    """Import the trainable recorded in a store (``{"module"|"file": ..., "name": ...}``)."""
    name = source.get("name")
    if not name or not ("module" in source or "file" in source):
        raise RunFileError(
            "the store does not say where its trainable lives (the run was started from "
            f"`python -c`, stdin or a notebook); {_SPEC_HELP}"
        )
    if "module" in source:
        return load_object(f"{source['module']}:{name}")
    if not Path(source["file"]).is_file():
        raise RunFileError(
            f"the trainable {name!r} came from {source['file']}, which is gone; {_SPEC_HELP}"
        )
    return load_object(f"{source['file']}:{name}")
