"""hyperpop: Population Based Training on one machine or a Ray cluster.

>>> import hyperpop as hp
>>> result = hp.run(MyTrainable, {"lr": hp.loguniform(1e-4, 1e-1)}, metric="acc")  # doctest: +SKIP

The public names are imported on first use (:func:`__getattr__`), so a worker process, which
needs only the trainable's side, or a quick command such as ``hyperpop --version`` does not load
the driver, the strategies and the stores.
"""

from __future__ import annotations

import copyreg
import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from hyperpop._version import __version__

if TYPE_CHECKING:
    from hyperpop.criteria import Budget, Ready, Rejuvenate, Steps, Target, WallTime
    from hyperpop.errors import (
        MetricError,
        RunError,
        RunExistsError,
        SettingsError,
        StoreError,
        StoreFullError,
        StoreLockedError,
        StoreVersionError,
    )
    from hyperpop.parameters import (
        SpaceError,
        choice,
        loguniform,
        qloguniform,
        randint,
        uniform,
    )
    from hyperpop.replay import ReplayResult, replay
    from hyperpop.results import MemberResult, Result
    from hyperpop.run import resume, run
    from hyperpop.steer import Answer, Steer, SteerError, steer
    from hyperpop.strategies import (
        FIREPBT,
        MFPBT,
        PB2,
        Context,
        ExploitStrategy,
        ExploreStrategy,
        Perturb,
        Resample,
        ReservePBT,
        Tournament,
        Truncation,
        WelchTTest,
        register,
    )
    from hyperpop.trainable import FunctionTrainable, Trainable, TrainableError, report
    from hyperpop.vectorized import VectorizedTrainable

    load = Result.load

#: the module that defines each public name
_WHERE = {
    **dict.fromkeys(("Budget", "Ready", "Rejuvenate", "Steps", "Target", "WallTime"), "criteria"),
    **dict.fromkeys(
        (
            "MetricError",
            "RunError",
            "RunExistsError",
            "SettingsError",
            "StoreError",
            "StoreFullError",
            "StoreLockedError",
            "StoreVersionError",
        ),
        "errors",
    ),
    **dict.fromkeys(("ReplayResult", "replay"), "replay"),
    **dict.fromkeys(("MemberResult", "Result"), "results"),
    **dict.fromkeys(("resume", "run"), "run"),
    **dict.fromkeys(
        ("SpaceError", "choice", "loguniform", "qloguniform", "randint", "uniform"), "parameters"
    ),
    **dict.fromkeys(("Answer", "Steer", "SteerError", "steer"), "steer"),
    **dict.fromkeys(
        (
            "FIREPBT",
            "MFPBT",
            "PB2",
            "Context",
            "ExploitStrategy",
            "ExploreStrategy",
            "Perturb",
            "Resample",
            "ReservePBT",
            "Tournament",
            "Truncation",
            "WelchTTest",
            "register",
        ),
        "strategies",
    ),
    **dict.fromkeys(("FunctionTrainable", "Trainable", "TrainableError", "report"), "trainable"),
    "VectorizedTrainable": "vectorized",  # needs PyTorch
}


def __getattr__(name: str) -> Any:
    """Import a public name where it is defined, the first time it is asked for."""
    if name == "load":
        value: Any = __getattr__("Result").load
    elif name in _WHERE:
        value = getattr(importlib.import_module(f"hyperpop.{_WHERE[name]}"), name)
    else:
        raise AttributeError(f"module 'hyperpop' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Three modules share their name with the function they define (``hyperpop.run``,
    ``replay`` and ``steer``): importing one of them must not put the module where
    ``hp.run`` and the others are looked up."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in {"run", "replay", "steer"}:
            return
        super().__setattr__(name, value)


def _reduce_package(module: _Package) -> tuple[Any, tuple[str]]:
    return importlib.import_module, (module.__name__,)


sys.modules[__name__].__class__ = _Package
# pickled by reference, as a plain module is (cloudpickle sends a trainable written in a script,
# and the ``hp`` it refers to, by value: the class of a module is its own from here on)
copyreg.pickle(_Package, _reduce_package)

__all__ = [
    "Answer",
    "Budget",
    "Context",
    "ExploitStrategy",
    "ExploreStrategy",
    "FIREPBT",
    "FunctionTrainable",
    "MFPBT",
    "MemberResult",
    "MetricError",
    "PB2",
    "Perturb",
    "Ready",
    "Rejuvenate",
    "ReplayResult",
    "Resample",
    "ReservePBT",
    "Result",
    "RunError",
    "RunExistsError",
    "SettingsError",
    "SpaceError",
    "Steer",
    "SteerError",
    "Steps",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreVersionError",
    "Target",
    "Tournament",
    "Trainable",
    "TrainableError",
    "Truncation",
    "VectorizedTrainable",
    "WallTime",
    "WelchTTest",
    "__version__",
    "choice",
    "load",
    "loguniform",
    "qloguniform",
    "randint",
    "register",
    "replay",
    "report",
    "resume",
    "run",
    "steer",
    "uniform",
]
