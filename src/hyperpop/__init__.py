"""hyperpop: Population Based Training on one machine or a Ray cluster.

>>> import hyperpop as hp
>>> result = hp.run(MyTrainable, {"lr": hp.loguniform(1e-4, 1e-1)}, metric="acc")  # doctest: +SKIP
"""

from __future__ import annotations

from hyperpop._version import __version__
from hyperpop.controller import Budget, Ready, Rejuvenate, Steps, Target, WallTime
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
from hyperpop.replay import ReplayResult, replay
from hyperpop.results import MemberResult, Result
from hyperpop.run import resume, run
from hyperpop.space import (
    SpaceError,
    choice,
    loguniform,
    qloguniform,
    randint,
    uniform,
)
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

load = Result.load


def __getattr__(name: str) -> object:
    # needs PyTorch: imported on first use, so `import hyperpop` stays light
    if name == "VectorizedTrainable":
        from hyperpop.vectorized import VectorizedTrainable

        return VectorizedTrainable
    raise AttributeError(f"module 'hyperpop' has no attribute {name!r}")


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
