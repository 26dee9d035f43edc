"""Typed search-space parameters and the :class:`Space` that holds them.

A parameter knows how to sample from its prior (which is also how explore resamples it), perturb a
value by a factor while staying inside its bounds, and map a value to and from the unit interval.
A :class:`Space` is a (possibly nested) dict of parameters and constants; configs it produces have
the same nesting.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Choice",
    "Constant",
    "Float",
    "Int",
    "Parameter",
    "Space",
    "SpaceError",
    "choice",
    "loguniform",
    "qloguniform",
    "flatten_config",
    "randint",
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
        """Draw a value from the prior."""
        raise NotImplementedError

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


def _number(x: Any, what: str, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise SpaceError(f"parameter {name!r}: {what} must be a number, got {x!r}")
    if not math.isfinite(float(x)):
        raise SpaceError(f"parameter {name!r}: {what} must be finite, got {x!r}")
    return float(x)


def _storable(v: Any) -> bool:
    """Whether ``v`` comes back from the run's log (JSON, tuples kept) equal and of its type."""
    if v is None or isinstance(v, (bool, int, str)):
        return True
    if isinstance(v, float):
        return not math.isnan(v)  # NaN equals nothing, not even itself
    if isinstance(v, (list, tuple)):
        return all(_storable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _storable(x) for k, x in v.items()) and not (
            len(v) == 1 and next(iter(v)) in ("__float__", "__tuple__")  # the log's own markers
        )
    return False


def _check_storable(v: Any, what: str) -> None:
    if not _storable(v):
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

    def sample(self, rng: np.random.Generator) -> float:
        return self.from_unit(float(rng.random()))

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
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
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

    def sample(self, rng: np.random.Generator) -> int:
        return self.from_unit(float(rng.random()))

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
            lo, hi = (
                math.log(self.low - 0.5 if self.low > 0.5 else self.low),
                math.log(self.high + 0.5),
            )
            return float(min(max((math.log(float(value)) - lo) / (hi - lo), 0.0), 1.0))
        return (float(value) - self.low + 0.5) / (self.high - self.low + 1)

    def from_unit(self, u: float) -> int:
        u = float(min(max(u, 0.0), 1.0))
        if self.log:
            lo = math.log(self.low - 0.5 if self.low > 0.5 else self.low)
            hi = math.log(self.high + 0.5)
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
            _check_storable(o, f"parameter {name!r}: option")

    def _index(self, value: Any) -> int:
        for i, o in enumerate(self.options):
            if o == value:
                return i
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
        return any(o == value for o in self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "options": list(self.options), "ordered": self.ordered}


@dataclass(frozen=True)
class Constant(Parameter):
    """A fixed value carried in every config."""

    value: Any
    searchable = False

    def validate(self, name: str) -> None:
        _check_storable(self.value, f"parameter {name!r}: constant")

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
    opts = tuple(_py(o) for o in options)
    for i, o in enumerate(opts):
        _check_storable(o, "choice(): option")
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


_SEP = "/"


class Space:
    """A search space: a nested dict of parameters and constants.

    Paths into nested dicts are written ``"outer/inner"``. Values that are not parameters
    become constants; a value of an unknown type (a set, a function...) is an error.
    """

    def __init__(self, definition: Mapping[str, Any] | Space):
        if isinstance(definition, Space):
            self._params: dict[str, Parameter] = dict(definition._params)
            return
        if not isinstance(definition, Mapping):
            raise SpaceError(
                f"a search space is a dict of parameters, got {type(definition).__name__}"
            )
        self._params = {}
        self._flatten(definition, "")
        if not self._params:
            raise SpaceError("the search space is empty")

    def _flatten(self, d: Mapping[str, Any], prefix: str) -> None:
        for key, value in d.items():
            if not isinstance(key, str) or not key or _SEP in key:
                raise SpaceError(
                    f"parameter names must be non-empty strings without {_SEP!r}, got {key!r}"
                )
            path = prefix + key
            if isinstance(value, Mapping):
                if not value:
                    raise SpaceError(f"parameter {path!r}: an empty nested dict")
                self._flatten(value, path + _SEP)
                continue
            if isinstance(value, Parameter):
                param = value
            elif value is None or isinstance(value, (bool, int, float, str)):
                param = Constant(value)
            elif isinstance(value, (list, tuple)) and _storable(value):
                # a tuple stays a tuple (the log keeps it one), a list a list
                param = Constant(tuple(value) if isinstance(value, tuple) else list(value))
            else:
                raise SpaceError(
                    f"parameter {path!r}: unknown type {type(value).__name__}; use "
                    "hp.uniform, hp.loguniform, hp.randint, hp.qloguniform, hp.choice "
                    "or a plain constant"
                )
            param.validate(path)
            self._params[path] = param

    # --- introspection -------------------------------------------------------------------
    @property
    def parameters(self) -> dict[str, Parameter]:
        """Flat mapping of path to parameter (constants included)."""
        return dict(self._params)

    @property
    def searchable(self) -> list[str]:
        """Paths of the parameters with a unit-cube dimension, in a fixed order."""
        return [p for p, v in self._params.items() if v.searchable]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, path: str) -> Parameter:
        return self._params[path]

    def __repr__(self) -> str:
        return f"Space({self._params!r})"

    # --- configs -------------------------------------------------------------------------
    def flatten(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Flat ``{path: value}`` view of a nested config."""
        out: dict[str, Any] = {}
        for path in self._params:
            node: Any = config
            for part in path.split(_SEP):
                if not isinstance(node, Mapping) or part not in node:
                    raise SpaceError(f"config has no value for parameter {path!r}")
                node = node[part]
            out[path] = node
        return out

    def unflatten(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        """Nested config from a flat ``{path: value}`` mapping."""
        out: dict[str, Any] = {}
        for path, value in flat.items():
            parts = path.split(_SEP)
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return out

    def flatten_partial(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Flat ``{path: value}`` view of a config that may leave parameters out.

        Raises:
            SpaceError: the config has a key that is not a parameter of the space (a typo).
        """
        out: dict[str, Any] = {}

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for key, value in node.items():
                path = f"{prefix}{key}"
                if path in self._params:
                    out[path] = value
                elif isinstance(value, Mapping) and any(
                    p.startswith(path + _SEP) for p in self._params
                ):
                    walk(value, path + _SEP)
                else:
                    raise SpaceError(
                        f"config key {path!r} is not in the search space (its keys: "
                        f"{', '.join(repr(p) for p in self._params)}); check the spelling"
                    )

        walk(config, "")
        return out

    def merge(self, config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with the values of ``changes`` (a partial config) put in, validated.

        Raises:
            SpaceError: a key of ``changes`` is not a parameter, or a value lies outside it.
        """
        flat = self.flatten(config)
        for path, value in self.flatten_partial(changes).items():
            if isinstance(self._params[path], Float) and isinstance(value, (int, float)):
                value = float(value)  # an int given for a real number (lr=1)
            elif isinstance(self._params[path], Float):
                raise SpaceError(f"parameter {path!r}: {value!r} is not a number")
            flat[path] = value
        out = self.unflatten(flat)
        self.validate_config(out)
        return out

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Raise :class:`SpaceError` if a config value lies outside its parameter."""
        for path, value in self.flatten(config).items():
            if not self._params[path].contains(value):
                raise SpaceError(f"parameter {path!r}: value {value!r} is outside the space")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A config drawn from the prior."""
        return self.unflatten({p: _py(v.sample(rng)) for p, v in self._params.items()})

    def perturb(
        self,
        config: Mapping[str, Any],
        rng: np.random.Generator,
        *,
        factors: Sequence[float] = (0.8, 1.2),
        resample_probability: float = 0.25,
    ) -> dict[str, Any]:
        """PBT's explore step: each parameter is resampled with ``resample_probability``,
        else multiplied by a factor drawn from ``factors`` (within its bounds)."""
        flat = self.flatten(config)
        out = {}
        for path, param in self._params.items():
            value = flat[path]
            if not param.searchable:
                out[path] = value
            elif rng.random() < resample_probability:
                out[path] = _py(param.sample(rng))
            else:
                factor = float(factors[int(rng.integers(len(factors)))])
                out[path] = _py(param.perturb(value, factor, rng))
        return self.unflatten(out)

    def to_unit(self, config: Mapping[str, Any]) -> np.ndarray:
        """The config's searchable values as a point of the unit cube."""
        flat = self.flatten(config)
        return np.array([self._params[p].to_unit(flat[p]) for p in self.searchable], dtype=float)

    def from_unit(self, u: Sequence[float]) -> dict[str, Any]:
        """The config at a point of the unit cube (constants filled in)."""
        names = self.searchable
        if len(u) != len(names):
            raise SpaceError(f"expected a point with {len(names)} coordinates, got {len(u)}")
        flat = {}
        it = iter(u)
        for path, param in self._params.items():
            flat[path] = _py(param.from_unit(next(it) if param.searchable else 0.5))
        return self.unflatten(flat)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-serialisable description, flat by path."""
        return {p: v.to_dict() for p, v in self._params.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, Any]]) -> Space:
        """Rebuild a space from :meth:`to_dict` output."""
        space = cls.__new__(cls)
        space._params = {}
        for path, spec in d.items():
            param = parameter_from_dict(spec)
            param.validate(path)
            space._params[path] = param
        return space


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat ``{"outer/inner": value}`` (no space needed)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(flatten_config(v, f"{prefix}{k}{_SEP}"))
        else:
            out[prefix + k] = v
    return out


def _py(v: Any) -> Any:
    """Numpy scalars to plain Python values (configs must be JSON-serialisable)."""
    if isinstance(v, np.generic):
        return v.item()
    return v
