"""The settings of a run: one frozen, validated object, recorded in its ``run_started`` event.

:meth:`RunSettings.create` takes what a user passes to :func:`hyperpop.run` (ints for
budgets and ready points, strategy names) and returns the normalised settings, or raises a
:class:`~hyperpop.errors.SettingsError` with one line in one format: what is wrong, what was
given, and what to do. :meth:`RunSettings.to_dict` is what the store records;
:meth:`RunSettings.from_dict` is how :func:`hyperpop.resume` reads it back.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hyperpop.controller import Budget, Ready, Rejuvenate, Steps, budget_from_dict
from hyperpop.errors import RunError, SettingsError
from hyperpop.strategies import ExploitStrategy, ExploreStrategy, make_exploit, make_explore

__all__ = ["DEFAULT_BUDGET", "RunSettings"]

#: the budget of a run that names none: 100 training steps per member
DEFAULT_BUDGET = Steps(100)


def _must(name: str, expected: str, got: Any, fix: str = "") -> SettingsError:
    """The one format of a settings error: ``NAME must be EXPECTED, got GOT[; FIX]``."""
    return SettingsError(f"{name} must be {expected}, got {got!r}" + (f"; {fix}" if fix else ""))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _budgets(budget: Any) -> tuple[Budget, ...]:
    if budget is None:
        return (DEFAULT_BUDGET,)
    if isinstance(budget, int) and not isinstance(budget, bool):
        return (_checked(lambda: Steps(budget)),)
    if isinstance(budget, Budget):
        return (budget,)
    if isinstance(budget, (str, bytes)) or not isinstance(budget, Sequence):
        raise _must("budget", "hp.Steps, hp.WallTime, hp.Target, an int or a list of them", budget)
    for b in budget:
        if not isinstance(b, Budget):
            raise _must("budget entries", "hp.Steps, hp.WallTime or hp.Target", b)
    if not budget:
        raise _must(
            "budget", "at least one stopping criterion", budget, "leave it out for 100 steps"
        )
    return tuple(budget)


def _ready(ready: Any, burn_in: int | None) -> Ready:
    if burn_in is not None and (not isinstance(burn_in, int) or isinstance(burn_in, bool)):
        raise _must("burn_in", "an int (steps) or None", burn_in)
    if isinstance(ready, Ready):
        return (
            ready
            if burn_in is None
            else _checked(lambda: dataclasses.replace(ready, burn_in=burn_in))
        )
    if isinstance(ready, int) and not isinstance(ready, bool):
        return _checked(lambda: Ready(steps=ready, burn_in=burn_in or 0))
    raise _must("ready", "an int (steps) or hp.Ready(steps=..., seconds=..., burn_in=...)", ready)


def _gpus(gpus: Any) -> int | str | tuple[int | str, ...] | None:
    if gpus is None or isinstance(gpus, (int, str)) and not isinstance(gpus, bool):
        return gpus
    if isinstance(gpus, Sequence):
        return tuple(gpus)
    raise _must("gpus", "None, 'all', a count or a list of device ids", gpus)


def _checked(make: Callable[[], Any]) -> Any:
    """Build a value whose own checks raise ValueError, as a SettingsError."""
    try:
        return make()
    except (ValueError, TypeError) as e:
        raise SettingsError(str(e)) from None


def _strategy(make: Callable[[Any], Any], described: Mapping[str, Any]) -> Any:
    """Rebuild a recorded strategy from its ``describe()``."""
    d = dict(described)
    name = d.pop("name")
    try:
        obj = make(name)
    except ValueError:
        raise RunError(
            f"the run used the custom strategy {name!r}; pass it to resume() again, or "
            "decorate its class with @hyperpop.register so it can be named"
        ) from None
    return type(obj)(**d) if d else obj


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything that decides how a run trains, validated, in one frozen object.

    Build it with :meth:`create` from the arguments of :func:`hyperpop.run`; every field is
    documented there. ``workers`` is None for "as many as the backend has" (one per CPU core
    locally, the cluster's slots on Ray).
    """

    metric: str
    mode: str = "max"
    population: int = 8
    workers: int | None = None
    budget: tuple[Budget, ...] = (DEFAULT_BUDGET,)
    ready: Ready = field(default_factory=Ready)
    exploit: ExploitStrategy = field(default_factory=lambda: make_exploit("truncation"))
    explore: ExploreStrategy = field(default_factory=lambda: make_explore("perturb"))
    synchronous: bool = False
    rejuvenate: Rejuvenate | None = None
    score_window: int = 1
    max_lead: int | None = 4
    deterministic: bool = False
    max_failures: int = 3
    step_timeout: float | None = None
    seed: int | None = 0
    backend: str = "local"
    gpus: int | str | tuple[int | str, ...] | None = None
    gpus_per_member: float | None = None
    processes_per_member: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise _must("metric", "the name of a metric the trainable reports", self.metric)
        if self.mode not in ("max", "min"):
            raise _must("mode", "'max' or 'min'", self.mode)
        if not _positive_int(self.population):
            raise _must("population", "a positive int", self.population)
        if self.workers is not None and not _positive_int(self.workers):
            raise _must(
                "workers", "a positive int (members training at once)", self.workers,
                "leave it out for one per CPU core",
            )  # fmt: skip
        if not self.budget or not all(isinstance(b, Budget) for b in self.budget):
            raise _must("budget", "a tuple of hp.Steps, hp.WallTime or hp.Target", self.budget)
        if not isinstance(self.ready, Ready):
            raise _must("ready", "hp.Ready(...)", self.ready)
        if not isinstance(self.exploit, ExploitStrategy):
            raise _must("exploit", "an ExploitStrategy", self.exploit)
        if not isinstance(self.explore, ExploreStrategy):
            raise _must("explore", "an ExploreStrategy", self.explore)
        if not isinstance(self.synchronous, bool):
            raise _must("synchronous", "True or False", self.synchronous)
        if self.rejuvenate is not None and not isinstance(self.rejuvenate, Rejuvenate):
            raise _must("rejuvenate", "hp.Rejuvenate(...), a patience or None", self.rejuvenate)
        if not _positive_int(self.score_window):
            raise _must(
                "score_window", "a positive int (reports averaged into a score)", self.score_window
            )
        if self.max_lead is not None and not _positive_int(self.max_lead):
            raise _must("max_lead", "a positive int or None", self.max_lead)
        if (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or (self.max_failures < 0)
        ):
            raise _must("max_failures", "an int >= 0", self.max_failures)
        if self.step_timeout is not None and (
            isinstance(self.step_timeout, bool)
            or not isinstance(self.step_timeout, (int, float))
            or not self.step_timeout > 0
            or math.isinf(self.step_timeout)
        ):
            raise _must(
                "step_timeout", "a positive number of seconds", self.step_timeout,
                "or None: no limit",
            )  # fmt: skip
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise _must("seed", "an int or None", self.seed)
        if not isinstance(self.backend, str) or not self.backend:
            raise _must("backend", "a backend name", self.backend)
        if self.gpus_per_member is not None and (
            isinstance(self.gpus_per_member, bool)
            or not isinstance(self.gpus_per_member, (int, float))
            or not self.gpus_per_member > 0
        ):
            raise _must(
                "gpus_per_member", "a positive number (1, a fraction such as 0.5, or 2)",
                self.gpus_per_member, "or None: no GPU placement",
            )  # fmt: skip
        if self.gpus is not None and not isinstance(self.gpus, (int, str, tuple)):
            raise _must("gpus", "None, 'all', a count or a list of device ids", self.gpus)
        if not _positive_int(self.processes_per_member):
            raise _must(
                "processes_per_member", "a positive int (processes that train one member "
                "together, as DDP ranks)", self.processes_per_member, "leave it out for 1",
            )  # fmt: skip
        if self.processes_per_member > 1 and self.ready.seconds is not None:
            raise SettingsError(
                f"ready=hp.Ready(seconds=...) is not with processes_per_member="
                f"{self.processes_per_member}: its ranks would stop at different steps; give "
                "ready in steps"
            )
        if self.processes_per_member > 1 and self.backend in ("vectorized", "simulated"):
            raise SettingsError(
                f"the {self.backend!r} backend trains members without processes of their own, not "
                f"with processes_per_member={self.processes_per_member}: use backend='local' "
                "or 'ray', or leave processes_per_member out"
            )

    @classmethod
    def create(
        cls,
        *,
        budget: Budget | Sequence[Budget] | int | None = None,
        ready: Ready | int = 4,
        burn_in: int | None = None,
        exploit: str | ExploitStrategy | None = "truncation",
        explore: str | ExploreStrategy | None = "perturb",
        rejuvenate: Rejuvenate | int | None = None,
        gpus: int | str | Sequence[int | str] | None = None,
        **fields: Any,
    ) -> RunSettings:
        """Normalise and validate what a user passed to :func:`hyperpop.run`: the arguments
        here take the shorthands ``run`` allows (an int budget or ready point, strategy
        names, a patience); every other field is taken as it is.

        Raises:
            SettingsError: one line naming the setting, the value and the fix.
        """
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(f"unknown settings {unknown}; see help(hyperpop.run)")
        return cls(
            budget=_budgets(budget),
            ready=_ready(ready, burn_in),
            exploit=_checked(lambda: make_exploit(exploit)),
            explore=_checked(lambda: make_explore(explore)),
            rejuvenate=_checked(lambda: Rejuvenate.of(rejuvenate)),
            gpus=_gpus(gpus),
            **fields,
        )

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in the ``run_started`` event."""
        return {
            "metric": self.metric,
            "mode": self.mode,
            "population": self.population,
            "workers": self.workers,
            "budget": [b.to_dict() for b in self.budget],
            "ready": self.ready.to_dict(),
            "exploit": self.exploit.describe(),
            "explore": self.explore.describe(),
            "synchronous": self.synchronous,
            "rejuvenate": self.rejuvenate.to_dict() if self.rejuvenate else None,
            "score_window": self.score_window,
            "max_lead": self.max_lead,
            "deterministic": self.deterministic,
            "max_failures": self.max_failures,
            "step_timeout": self.step_timeout,
            "seed": self.seed,
            "backend": self.backend,
            "gpus": list(self.gpus) if isinstance(self.gpus, tuple) else self.gpus,
            "gpus_per_member": self.gpus_per_member,
            "processes_per_member": self.processes_per_member,
        }

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        *,
        exploit: ExploitStrategy | None = None,
        explore: ExploreStrategy | None = None,
    ) -> RunSettings:
        """Read recorded settings back (stores written by older versions lack some keys: they
        get the defaults those versions had). Custom strategies that cannot be rebuilt by
        name are passed in again.

        Raises:
            RunError: the run used a custom strategy that is neither passed nor registered.
        """
        return cls(
            metric=d["metric"],
            mode=d.get("mode", "max"),
            population=int(d.get("population", 8)),
            workers=d.get("workers"),
            budget=tuple(
                budget_from_dict(b) for b in d.get("budget") or [{"type": "steps", "n": 100}]
            ),
            ready=Ready(**d["ready"]) if d.get("ready") else Ready(),
            exploit=exploit or _strategy(make_exploit, d.get("exploit") or {"name": "truncation"}),
            explore=explore or _strategy(make_explore, d.get("explore") or {"name": "perturb"}),
            synchronous=bool(d.get("synchronous", False)),
            rejuvenate=Rejuvenate.of(d.get("rejuvenate")),
            score_window=int(d.get("score_window") or 1),
            max_lead=d.get("max_lead", 4),
            deterministic=bool(d.get("deterministic", False)),
            max_failures=int(d.get("max_failures", 3)),
            step_timeout=d.get("step_timeout"),
            seed=d.get("seed"),
            backend=d.get("backend", "local"),
            gpus=_gpus(d.get("gpus")),
            gpus_per_member=d.get("gpus_per_member"),
            processes_per_member=int(d.get("processes_per_member", 1)),
        )

    def backend_options(self) -> dict[str, Any]:
        """The GPU settings as the named backend takes them: ``gpus`` and
        ``gpus_per_member`` for the local backend, ``num_gpus`` for Ray (which places actors
        itself, so it takes no device list); ``processes_per_member`` when it is not 1.

        Raises:
            SettingsError: GPUs are asked for on a backend that cannot place them.
        """
        out: dict[str, Any] = {}
        if self.processes_per_member != 1:
            out["processes_per_member"] = self.processes_per_member
        if self.gpus is None and self.gpus_per_member is None:
            return out
        if self.backend == "local":
            out["gpus"] = self.gpus
            if self.gpus_per_member is not None:
                out["gpus_per_member"] = self.gpus_per_member
            return out
        if self.backend == "ray" and self.gpus is None:
            return {**out, "num_gpus": float(self.gpus_per_member or 1.0)}
        raise SettingsError(
            f"the {self.backend!r} backend cannot place members on GPUs by gpus="
            f"{self.gpus!r}: use backend='local', or on Ray gpus_per_member alone (Ray "
            "chooses the devices)"
        )
