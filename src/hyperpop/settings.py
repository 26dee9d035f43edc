"""The settings of a run, each declared once: one frozen, validated object, recorded in its
``run_started`` event.

Every field of :class:`RunSettings` carries its :class:`Setting` (what it must be, its help
line, the shorthands a user may give, how it is recorded and read back, its command-line
option). Validation, :meth:`RunSettings.to_dict` / :meth:`RunSettings.from_dict` (with every
default an older log needs) and the options of ``hyperpop run`` and ``hyperpop resume`` all come
from those declarations; :data:`TABLE` lists them by name. A bad value is a
:class:`~hyperpop.errors.SettingsError` in one format: ``NAME must be EXPECTED, got VALUE; FIX``.
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

__all__ = ["AUTO", "DEFAULT_BUDGET", "TABLE", "Cli", "RunSettings", "Setting", "check_auto"]

#: the budget of a run that names none: 100 training steps per member
DEFAULT_BUDGET = Steps(100)
#: ``workers="auto"``: on Ray, as many workers as the cluster holds, following it
AUTO = "auto"

_KEY = "hyperpop.setting"
_FIELD_DEFAULT: Any = object()  # Setting.old's "as the field's default"


def must(name: str, expected: str, got: Any, fix: str = "") -> SettingsError:
    """The one format of a settings error: ``NAME must be EXPECTED, got GOT[; FIX]``."""
    return SettingsError(f"{name} must be {expected}, got {got!r}" + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class Cli:
    """A setting's option on the command line (``hyperpop run``; also ``hyperpop resume`` with
    ``resume``, for a setting a resumed run may change).

    Attributes:
        flags: the option's names (``("--population", "-p")``); a switch names both sides
            (``("--synchronous/--asynchronous",)``) and has ``type`` bool.
        type: int, float, str, bool, or a tuple of the values allowed.
        to_value: what the option's value means in Python (``--steps 12``: ``hp.Steps(12)``);
            None: the value itself.
        default: the default in words, for ``--help`` ("one per CPU core").
    """

    flags: tuple[str, ...]
    type: Any = str
    metavar: str | None = None
    to_value: Callable[[Any], Any] | None = None
    resume: bool = False
    default: str = ""

    def value(self, given: Any) -> Any:
        """The setting's value for the option's ``given`` value."""
        return given if self.to_value is None else self.to_value(given)


@dataclass(frozen=True)
class Setting:
    """One setting, declared once, in the metadata of its :class:`RunSettings` field.

    Attributes:
        expected: what a value must be, as the error line says it.
        valid: whether a value (after ``given``) is one.
        help: one line for ``--help`` and the docs.
        fix: what to do, appended to the error line.
        given: turns what a user may pass (an int budget, a strategy's name) into the value;
            returns what it cannot turn as it is (then ``valid`` refuses it). It is applied to
            values already turned too, so it leaves those as they are.
        encode: the value as recorded in the ``run_started`` event (JSON).
        decode: the recorded form back to the value.
        old: the value of a log from before the setting was recorded (default: the field's
            default); a recorded None that ``valid`` refuses reads the same.
        cli: the command-line option; None for a setting given in Python only, with the
            reason in ``api_only``.
    """

    expected: str
    valid: Callable[[Any], bool]
    help: str
    fix: str = ""
    given: Callable[[Any], Any] | None = None
    encode: Callable[[Any], Any] | None = None
    decode: Callable[[Any], Any] | None = None
    old: Any = _FIELD_DEFAULT
    cli: Cli | None = None
    api_only: str = ""

    def value(self, name: str, given: Any) -> Any:
        """``given`` turned and checked: the setting's value, or one line saying what is wrong."""
        value = self.given(given) if self.given is not None else given
        if not self.valid(value):
            raise must(name, self.expected, given, self.fix)
        return value


REQUIRED: Any = dataclasses.MISSING


def declare(
    default: Any, expected: str, valid: Callable[[Any], bool], help: str, **more: Any
) -> Any:
    """A :class:`RunSettings` field with its :class:`Setting`; ``default`` is the value, what
    makes it (a class or a function), or :data:`REQUIRED`."""
    metadata = {_KEY: Setting(expected, valid, help, **more)}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


# --- what values may be ----------------------------------------------------------------------
def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _int(v) and v >= 1


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf


def _optional(valid: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or valid(v)


def _is(*types: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, types)


def _checked(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``make``, whose own checks raise ValueError or TypeError, raising a SettingsError."""

    def call(value: Any) -> Any:
        try:
            return make(value)
        except (ValueError, TypeError) as e:
            raise SettingsError(str(e)) from None

    return call


# --- shorthands and records of the richer settings ----------------------------------------
def _budgets(budget: Any) -> Any:
    if budget is None:
        return (DEFAULT_BUDGET,)
    if _int(budget):
        return (_checked(Steps)(budget),)
    if isinstance(budget, Budget):
        return (budget,)
    if isinstance(budget, (str, bytes)) or not isinstance(budget, Sequence):
        return budget
    for b in budget:
        if not isinstance(b, Budget):
            raise must("budget entries", "hp.Steps, hp.WallTime or hp.Target", b)
    if not budget:
        raise must(
            "budget", "at least one stopping criterion", budget, "leave it out for 100 steps"
        )
    return tuple(budget)


def _ready(ready: Any, burn_in: Any = None) -> Any:
    """A ready point from steps or a ``Ready``; ``burn_in`` (an argument of hp.run) overrides
    its burn-in."""
    if burn_in is not None and not _int(burn_in):
        raise must("burn_in", "an int (steps) or None", burn_in)
    if _int(ready):
        ready = _checked(lambda steps: Ready(steps=steps))(ready)
    if isinstance(ready, Ready) and burn_in is not None:
        return _checked(lambda r: dataclasses.replace(r, burn_in=burn_in))(ready)
    return ready


def _gpus(gpus: Any) -> Any:
    if isinstance(gpus, Sequence) and not isinstance(gpus, (str, bytes)):
        return tuple(gpus)
    return gpus


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


def _workers(given: str) -> int | str:
    """``--workers N`` or ``--workers auto``."""
    text = given.strip().lower()
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise must("--workers", "a number or 'auto'", given) from None


def check_auto(workers: object, backend: str) -> None:
    """``workers="auto"`` is for the Ray backend only (the others have a fixed number).

    Raises:
        SettingsError: one line naming the fix.
    """
    if workers == AUTO and backend != "ray":
        raise SettingsError(
            f"workers='auto' follows a Ray cluster as nodes join and leave; the {backend!r} "
            "backend trains on a fixed number: use backend='ray', or give workers a number"
        )


def _steps(n: int) -> Steps:
    """``--steps N``: a budget of N training steps per member."""
    if n < 1:
        raise must("--steps", "a positive number of training steps per member", n)
    return Steps(n)


# --- the settings ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything that decides how a run trains, validated, in one frozen object.

    Build it with :meth:`create` from the arguments of :func:`hyperpop.run`, where every
    setting is documented. ``workers`` is None for "as many as the backend has" (one per CPU
    core locally, the cluster's slots on Ray), or :data:`AUTO` on Ray (following the cluster).
    """

    metric: str = declare(REQUIRED,
        "the name of a metric the trainable reports", lambda v: isinstance(v, str) and v != "",
        "The reported metric to optimise.", cli=Cli(("--metric",), metavar="NAME"))  # fmt: skip
    mode: str = declare("max",
        "'max' or 'min'", lambda v: v in ("max", "min"), "Maximise or minimise the metric.",
        cli=Cli(("--mode",), ("max", "min")))  # fmt: skip
    population: int = declare(8,
        "a positive int", _positive_int, "Number of members.",
        cli=Cli(("--population", "-p"), int))  # fmt: skip
    workers: int | str | None = declare(None,
        "a positive int (members training at once) or 'auto' (Ray: follow the cluster)",
        _optional(lambda v: _positive_int(v) or v == AUTO),
        "Members training at once ('auto' on Ray: as many as the cluster holds).",
        fix="leave it out for one per CPU core",
        cli=Cli(("--workers", "-w"), str, "N|auto", to_value=_workers, resume=True,
                default="one per CPU core"))  # fmt: skip
    budget: tuple[Budget, ...] = declare((DEFAULT_BUDGET,),
        "hp.Steps, hp.WallTime, hp.Target, an int or a list of them",
        lambda v: isinstance(v, tuple) and bool(v) and all(isinstance(b, Budget) for b in v),
        "Training steps per member (hp.Steps; in Python also hp.WallTime, hp.Target).",
        given=_budgets, encode=lambda v: [b.to_dict() for b in v],
        decode=lambda d: tuple(budget_from_dict(b) for b in d),
        cli=Cli(("--steps",), int, to_value=_steps))  # fmt: skip
    ready: Ready = declare(Ready,
        "an int (steps) or hp.Ready(steps=..., seconds=..., burn_in=...)", _is(Ready),
        "Training steps between ready points.",
        given=_ready, encode=Ready.to_dict, decode=lambda d: Ready(**d),
        cli=Cli(("--ready",), int, "STEPS"))  # fmt: skip
    exploit: ExploitStrategy = declare(lambda: make_exploit("truncation"),
        "an exploit strategy's name or an ExploitStrategy", _is(ExploitStrategy),
        "Exploit strategy: truncation, tournament, ttest, none...",
        given=_checked(make_exploit), encode=lambda s: s.describe(),
        decode=lambda d: _strategy(make_exploit, d),
        cli=Cli(("--exploit",), metavar="NAME"))  # fmt: skip
    explore: ExploreStrategy = declare(lambda: make_explore("perturb"),
        "an explore strategy's name or an ExploreStrategy", _is(ExploreStrategy),
        "Explore strategy: perturb, resample, pb2, none...",
        given=_checked(make_explore), encode=lambda s: s.describe(),
        decode=lambda d: _strategy(make_explore, d),
        cli=Cli(("--explore",), metavar="NAME"))  # fmt: skip
    synchronous: bool = declare(False,
        "True or False", _is(bool), "Decide by generations, or asynchronously.",
        cli=Cli(("--synchronous/--asynchronous",), bool))  # fmt: skip
    rejuvenate: Rejuvenate | None = declare(None,
        "hp.Rejuvenate(...), a patience or None", _optional(_is(Rejuvenate)),
        "Reset a member's weights after this many ready points without improvement.",
        given=_checked(Rejuvenate.of), encode=lambda r: r.to_dict() if r else None,
        decode=Rejuvenate.of, cli=Cli(("--rejuvenate",), int, "PATIENCE"))  # fmt: skip
    score_window: int = declare(1,
        "a positive int (reports averaged into a score)", _positive_int,
        "Rank members by the mean of their last N reports.",
        cli=Cli(("--score-window",), int, "N"))  # fmt: skip
    max_lead: int | None = declare(4,
        "a positive int or None", _optional(_positive_int),
        "Asynchronous: a member waits rather than run this many intervals ahead.",
        cli=Cli(("--max-lead",), int, "N"))  # fmt: skip
    deterministic: bool = declare(False,
        "True or False", _is(bool),
        "Asynchronous: handle intervals in a fixed order (a seeded run repeats itself).",
        cli=Cli(("--deterministic/--as-they-arrive",), bool))  # fmt: skip
    max_failures: int = declare(3,
        "an int >= 0", lambda v: _int(v) and v >= 0,
        "Retries of a member whose trainable raised.",
        cli=Cli(("--max-failures",), int, "N"))  # fmt: skip
    step_timeout: float | None = declare(None,
        "a positive number of seconds", _optional(_positive_number),
        "Seconds one interval may take before its worker is killed and it is retried.",
        fix="or None: no limit",
        cli=Cli(("--step-timeout",), float, "SECONDS", resume=True))  # fmt: skip
    seed: int | None = declare(0,
        "an int or None", _optional(_int), "Seed of the sampling and the decisions.",
        old=None, cli=Cli(("--seed",), int))  # fmt: skip
    backend: str = declare("local",
        "a backend name", lambda v: isinstance(v, str) and v != "", "Where members train.",
        cli=Cli(("--backend",), ("local", "ray"), resume=True))  # fmt: skip
    gpus: int | str | tuple[int | str, ...] | None = declare(None,
        "None, 'all', a count or a list of device ids", _optional(_is(int, str, tuple)),
        "GPUs to train on: 'all' or device ids (0,1).",
        given=_gpus, encode=lambda g: list(g) if isinstance(g, tuple) else g, decode=_gpus,
        cli=Cli(("--gpus",), metavar="IDS"))  # fmt: skip
    gpus_per_member: float | None = declare(None,
        "a positive number (1, a fraction such as 0.5, or 2)", _optional(_positive_number),
        "Each member's share of a GPU (0.5: two members per GPU).",
        fix="or None: no GPU placement",
        cli=Cli(("--gpus-per-member",), float, "SHARE"))  # fmt: skip
    processes_per_member: int = declare(1,
        "a positive int (processes that train one member together, as DDP ranks)",
        _positive_int, "Processes (DDP ranks) that train each member.",
        fix="leave it out for 1",
        cli=Cli(("--processes-per-member",), int, "N", resume=True))  # fmt: skip

    def __post_init__(self) -> None:
        for name, s in TABLE.items():
            value = getattr(self, name)
            valid = s.value(name, value)
            if valid is not value:
                object.__setattr__(self, name, valid)
        self._together()

    def _together(self) -> None:
        """The checks of settings that depend on each other."""
        check_auto(self.workers, self.backend)
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
    def create(cls, *, burn_in: int | None = None, **given: Any) -> RunSettings:
        """The settings from what a user passed to :func:`hyperpop.run`, shorthands included
        (an int budget or ready point, strategy names, a patience); ``burn_in`` overrides the
        ready point's.

        Raises:
            SettingsError: one line naming the setting, the value and the fix.
        """
        unknown = sorted(set(given) - set(TABLE))
        if unknown:
            raise SettingsError(f"unknown settings {unknown}; see help(hyperpop.run)")
        if burn_in is not None:
            given["ready"] = _ready(given.get("ready", Ready()), burn_in)
        return cls(**given)

    @classmethod
    def check(cls, **given: Any) -> None:
        """Check single settings given as they are (None: not given), e.g. what
        :func:`hyperpop.resume` changes, before anything is opened.

        Raises:
            SettingsError: one line naming the setting, the value and the fix.
        """
        for name, value in given.items():
            if value is not None:
                TABLE[name].value(name, value)

    def replace(self, **changes: Any) -> RunSettings:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form recorded in the ``run_started`` event."""
        out = {}
        for name, s in TABLE.items():
            value = getattr(self, name)
            out[name] = value if s.encode is None else s.encode(value)
        return out

    @classmethod
    def from_dict(
        cls,
        d: Mapping[str, Any],
        *,
        exploit: ExploitStrategy | None = None,
        explore: ExploreStrategy | None = None,
    ) -> RunSettings:
        """Read recorded settings back (a store written by an older version lacks some: they
        get the value those versions had, :attr:`Setting.old`). Custom strategies that cannot
        be rebuilt by name are passed in again.

        Raises:
            RunError: the run used a custom strategy that is neither passed nor registered.
        """
        passed = {"exploit": exploit, "explore": explore}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            s: Setting = f.metadata[_KEY]
            raw = d.get(f.name)
            if passed.get(f.name) is not None:
                values[f.name] = passed[f.name]
            elif f.name not in d or (raw is None and not s.valid(None)):
                values[f.name] = _old(f, s)
            else:
                values[f.name] = raw if s.decode is None else s.decode(raw)
        return cls(**values)

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


def _old(f: dataclasses.Field[Any], s: Setting) -> Any:
    """The value of a setting that a log does not record (None for one with no default)."""
    if s.old is not _FIELD_DEFAULT:
        return s.old
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


#: every setting by name, in the order of the record
TABLE: dict[str, Setting] = {f.name: f.metadata[_KEY] for f in dataclasses.fields(RunSettings)}
