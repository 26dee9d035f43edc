"""hyperpop: Population Based Training on one machine or a Ray cluster.

>>> import hyperpop as hp
>>> result = hp.run(MyTrainable, {"lr": hp.loguniform(1e-4, 1e-1)}, metric="acc")  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

from hyperpop.controller import Budget, Ready, Rejuvenate, Steps, Target, WallTime
from hyperpop.replay import ReplayResult, replay
from hyperpop.results import MemberResult, Result
from hyperpop.run import MetricError, RunError, SettingsError, resume, run
from hyperpop.space import (
    Choice,
    Constant,
    Float,
    Int,
    Space,
    SpaceError,
    choice,
    loguniform,
    qloguniform,
    randint,
    uniform,
)
from hyperpop.steer import Answer, Steer, SteerError, steer
from hyperpop.store.sqlite import StoreError, StoreFullError, StoreVersionError
from hyperpop.strategies import (
    PB2,
    ExploitStrategy,
    ExploreStrategy,
    Perturb,
    Resample,
    Tournament,
    Truncation,
    WelchTTest,
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
    "ExploitStrategy",
    "ExploreStrategy",
    "PB2",
    "Perturb",
    "ReplayResult",
    "Resample",
    "Tournament",
    "Truncation",
    "WelchTTest",
    "Choice",
    "Constant",
    "Float",
    "FunctionTrainable",
    "Int",
    "MemberResult",
    "MetricError",
    "Ready",
    "Rejuvenate",
    "Result",
    "RunError",
    "SettingsError",
    "Space",
    "SpaceError",
    "Steer",
    "SteerError",
    "Steps",
    "StoreError",
    "StoreFullError",
    "StoreVersionError",
    "Target",
    "Trainable",
    "TrainableError",
    "VectorizedTrainable",
    "WallTime",
    "__version__",
    "choice",
    "load",
    "loguniform",
    "qloguniform",
    "randint",
    "replay",
    "report",
    "resume",
    "run",
    "steer",
    "uniform",
]
