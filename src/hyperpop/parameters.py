"""Typed search-space parameters: each knows how to sample from its prior (which is also how
explore resamples it), perturb a value by a factor while staying inside its bounds, and map a
value to and from the unit interval. :class:`hyperpop.space.Space` holds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Choice",
    "Constant",
    "Float",
    "Int",
    "Parameter",
    "SpaceError",
    "check_storable",
    "choice",
    "loguniform",
    "parameter_from_dict",
    "qloguniform",
    "randint",
    "storable",
    "to_python",
    "uniform",
]


class SpaceError(ValueError):
    """An invalid search-space definition or config."""


class Parameter:
    """Base class of a search-space dimension."""

    #: whether the parameter has a dimension in the unit cube (constants do not)
    searchable: bool = True

    def validate(self, name: str) -> None:
        """Raise :class:`SpaceError` naming ``name`` if the definition is invalid."""

    def sample(self, rng: np.random.Generator) -> Any:
        """Draw a value from the prior (by default uniform in the unit interval, mapped back)."""
        return self.from_unit(float(rng.random()))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        """Move ``value`` by ``factor`` (e.g. 0.8 or 1.2), staying inside the bounds."""
        raise NotImplementedError

    def to_unit(self, value: Any) -> float:
        """Map a value to [0, 1]."""
        raise NotImplementedError

    def from_unit(self, u: float) -> Any:
        """Map a point of [0, 1] back to a value."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a legal value of this parameter."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (see :func:`parameter_from_dict`)."""
        raise NotImplementedError


def _bool_bound(x: Any, what: str, name: str, kind: str) -> None:
    """Refuse a bool bound (``True`` is 1 to Python, but never meant as a number here)."""
    if isinstance(x, (bool, np.bool_)):
        raise SpaceError(
            f"parameter {name!r}: {what} must be {kind}, got the bool {x!r}; "
            f"write a number (e.g. {int(x)!r} or {float(x)!r}) or use choice([True, False])"
        )


def _number(x: Any, what: str, name: str) -> float:
    _bool_bound(x, what, name, "a number")
    if not isinstance(x, (int, float, np.integer, np.floating)):
        raise SpaceError(f"parameter {name!r}: {what} must be a number, got {x!r}")
    if not math.isfinite(float(x)):
        raise SpaceError(f"parameter {name!r}: {what} must be finite, got {x!r}")
    return float(x)


def storable(v: Any) -> bool:
    """Whether ``v`` comes back from the run's log (JSON, tuples kept) equal and of its type."""
    if v is None or isinstance(v, (bool, int, str)):
        return True
    if isinstance(v, float):
        return not math.isnan(v)  # NaN equals nothing, not even itself
    if isinstance(v, (list, tuple)):
        return all(storable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and storable(x) for k, x in v.items()) and not (
            len(v) == 1 and next(iter(v)) in ("__float__", "__tuple__")  # the log's own markers
        )
    return False


def check_storable(v: Any, what: str) -> None:
    if not storable(v):
        raise SpaceError(
            f"{what} {v!r} cannot be stored in the run's log and would come back changed on "
            "resume; use numbers, strings, bools, None, or lists, tuples and dicts of them "
            "(e.g. choice(['adam', 'sgd']) and map the name to the object in your trainable)"
        )


@dataclass(frozen=True)
class Float(Parameter):
    """A real number in ``[low, high]``, uniform or log-uniform."""

    low: float
    high: float
    log: bool = False

    def validate(self, name: str) -> None:
        low, high = _number(self.low, "low", name), _number(self.high, "high", name)
        if low >= high:
            raise SpaceError(
                f"parameter {name!r}: low ({low:g}) must be below high ({high:g}); "
                "swap them or use a constant"
            )
        if self.log and low <= 0:
            raise SpaceError(
                f"parameter {name!r}: a log scale needs low > 0, got low={low:g}; "
                "use uniform() for ranges that include zero"
            )

    def _logscale(self) -> bool:
        # a range too narrow for the logarithm to tell its ends apart maps linearly
        return self.log and math.log(self.low) < math.log(self.high)

    def _fwd(self, v: float) -> float:
        return math.log(v) if self._logscale() else v

    def _inv(self, v: float) -> float:
        return math.exp(v) if self._logscale() else v

    def _clip(self, v: float) -> float:
        return float(min(max(v, self.low), self.high))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> float:
        v = float(value)
        if self.log or (self.low >= 0 and v > 0):
            return self._clip(v * factor)
        # A range through zero (or a value at zero): shift by the same share of the range
        # (written so that a range as wide as the floats allow does not overflow).
        return self._clip(v + ((factor - 1.0) * self.high - (factor - 1.0) * self.low))

    def to_unit(self, value: Any) -> float:
        lo, hi, v = self._fwd(self.low), self._fwd(self.high), self._fwd(float(value))
        width = hi - lo
        if math.isinf(width):  # e.g. uniform(-1e308, 1e308): the halves do not overflow
            u = (v / 2 - lo / 2) / (hi / 2 - lo / 2)
        else:
            u = (v - lo) / width
        return float(min(max(u, 0.0), 1.0))

    def from_unit(self, u: float) -> float:
        lo, hi = self._fwd(self.low), self._fwd(self.high)
        u = float(min(max(u, 0.0), 1.0))
        # lo·(1−u) + hi·u rather than lo + u·(hi − lo): hi − lo overflows for the widest ranges
        return self._clip(self._inv(lo * (1.0 - u) + hi * u))

    def contains(self, value: Any) -> bool:
        if isinstance(value, (bool, np.bool_)):
            return False  # True is 1.0 to Python, never a real number meant here
        try:
            return self.low <= float(value) <= self.high
        except (TypeError, ValueError):
            return False

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Int(Parameter):
    """An integer in ``[low, high]`` (both inclusive), uniform or log-uniform."""

    low: int
    high: int
    log: bool = False

    def validate(self, name: str) -> None:
        for what, v in (("low", self.low), ("high", self.high)):
            _bool_bound(v, what, name, "an int")
            if not isinstance(v, (int, np.integer)):
                raise SpaceError(f"parameter {name!r}: {what} must be an int, got {v!r}")
        if self.low >= self.high:
            raise SpaceError(
                f"parameter {name!r}: low ({self.low}) must be below high ({self.high}); "
                "swap them or use a constant"
            )
        if self.log and self.low <= 0:
            raise SpaceError(f"parameter {name!r}: a log scale needs low >= 1, got low={self.low}")

    def _clip(self, v: float) -> int:
        return int(min(max(round(v), self.low), self.high))

    def _log_bounds(self) -> tuple[float, float]:
        """The log scale's ends: half an integer beyond each bound (a low of 0.5 or less stays)."""
        return math.log(self.low - 0.5 if self.low > 0.5 else self.low), math.log(self.high + 0.5)

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> int:
        v = int(value)
        if self.log or (self.low >= 0 and v > 0):
            new = self._clip(v * factor)
        else:
            new = self._clip(v + (factor - 1.0) * (self.high - self.low))
        if new == v and factor != 1.0:  # small ints must still move by one
            new = self._clip(v + (1 if factor > 1.0 else -1))
        return new

    def to_unit(self, value: Any) -> float:
        if self.log:
            lo, hi = self._log_bounds()
            return float(min(max((math.log(float(value)) - lo) / (hi - lo), 0.0), 1.0))
        return (float(value) - self.low + 0.5) / (self.high - self.low + 1)

    def from_unit(self, u: float) -> int:
        u = float(min(max(u, 0.0), 1.0))
        if self.log:
            lo, hi = self._log_bounds()
            return self._clip(math.exp(lo + u * (hi - lo)))
        return int(min(self.low + math.floor(u * (self.high - self.low + 1)), self.high))

    def contains(self, value: Any) -> bool:
        return (
            isinstance(value, (int, np.integer))
            and not isinstance(value, bool)
            and bool(self.low <= value <= self.high)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": int(self.low), "high": int(self.high), "log": self.log}


@dataclass(frozen=True)
class Choice(Parameter):
    """One of ``options``. Ordered choices perturb to a neighbour; unordered ones resample."""

    options: tuple[Any, ...]
    ordered: bool = False

    def validate(self, name: str) -> None:
        if len(self.options) == 0:
            raise SpaceError(f"parameter {name!r}: choice() needs at least one option")
        for o in self.options:
            check_storable(o, f"parameter {name!r}: option")

    def _index(self, value: Any) -> int:
        # the option of the value's own type first: ``False == 0`` and ``1 == 1.0`` in Python,
        # yet ``choice([False, 0])`` holds two options
        equal = [i for i, o in enumerate(self.options) if o == value]
        for i in equal:
            if type(self.options[i]) is type(value):
                return i
        if equal:
            return equal[0]
        raise SpaceError(f"value {value!r} is not one of the options {list(self.options)}")

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        n = len(self.options)
        if n == 1:
            return self.options[0]
        if not self.ordered:
            return self.sample(rng)
        i = self._index(value)
        j = i + (1 if factor > 1.0 else -1)
        if j < 0 or j >= n:  # at an end: bounce to the only neighbour
            j = i - (1 if factor > 1.0 else -1)
        return self.options[j]

    def to_unit(self, value: Any) -> float:
        return (self._index(value) + 0.5) / len(self.options)

    def from_unit(self, u: float) -> Any:
        n = len(self.options)
        return self.options[min(int(float(min(max(u, 0.0), 1.0)) * n), n - 1)]

    def contains(self, value: Any) -> bool:
        # a bool matches only a bool option: True == 1, yet choice([1, 2]) never means True
        flag = isinstance(value, (bool, np.bool_))
        return any(o == value and isinstance(o, bool) == flag for o in self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "options": list(self.options), "ordered": self.ordered}


@dataclass(frozen=True)
class Constant(Parameter):
    """A fixed value carried in every config."""

    value: Any
    searchable = False

    def validate(self, name: str) -> None:
        check_storable(self.value, f"parameter {name!r}: constant")

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        return self.value

    def to_unit(self, value: Any) -> float:
        return 0.5

    def from_unit(self, u: float) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return value == self.value

    def to_dict(self) -> dict[str, Any]:
        return {"type": "constant", "value": self.value}


def uniform(low: float, high: float) -> Float:
    """A real number drawn uniformly from ``[low, high]``."""
    return Float(low, high, log=False)


def loguniform(low: float, high: float) -> Float:
    """A positive real number drawn uniformly in log space from ``[low, high]``."""
    return Float(low, high, log=True)


def randint(low: int, high: int) -> Int:
    """An integer drawn uniformly from ``[low, high]``, both inclusive."""
    return Int(low, high, log=False)


def qloguniform(low: int, high: int) -> Int:
    """An integer drawn uniformly in log space from ``[low, high]`` (e.g. a hidden size)."""
    return Int(low, high, log=True)


def choice(options: Sequence[Any], *, ordered: bool | None = None) -> Choice:
    """One of ``options``.

    Args:
        options: the values to choose from.
        ordered: whether neighbouring options are close (perturb moves to a neighbour).
            Defaults to True when every option is a number, else False.
    """
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
        raise SpaceError(f"choice() takes a list of options, got {options!r}")
    opts = tuple(to_python(o) for o in options)
    for i, o in enumerate(opts):
        check_storable(o, "choice(): option")
        if any(type(p) is type(o) and p == o for p in opts[:i]):
            raise SpaceError(
                f"choice(): option {o!r} is given twice in {list(opts)!r}; give each option "
                "once (weighting by repetition is not supported)"
            )
    if ordered is None:
        ordered = len(opts) > 0 and all(
            isinstance(o, (int, float)) and not isinstance(o, bool) for o in opts
        )
    return Choice(opts, ordered=ordered)


def parameter_from_dict(d: Mapping[str, Any]) -> Parameter:
    """Rebuild a parameter from :meth:`Parameter.to_dict` output."""
    kind = d.get("type")
    if kind == "float":
        return Float(d["low"], d["high"], log=bool(d.get("log", False)))
    if kind == "int":
        return Int(int(d["low"]), int(d["high"]), log=bool(d.get("log", False)))
    if kind == "choice":
        return Choice(tuple(d["options"]), ordered=bool(d.get("ordered", False)))
    if kind == "constant":
        return Constant(d["value"])
    raise SpaceError(f"unknown parameter type {kind!r} in {dict(d)!r}")


def to_python(v: Any) -> Any:
    """Numpy scalars to plain Python values (configs must be JSON-serialisable)."""
    if isinstance(v, np.generic):
        return v.item()
    return v
