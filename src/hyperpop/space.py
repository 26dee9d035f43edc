"""The search :class:`Space`: a (possibly nested) dict of parameters and constants; configs it
produces have the same nesting. The parameters themselves are in :mod:`hyperpop.parameters`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hyperpop.parameters import (
    Choice,
    Constant,
    Float,
    Int,
    Parameter,
    SpaceError,
    choice,
    loguniform,
    parameter_from_dict,
    qloguniform,
    randint,
    storable,
    to_python,
    uniform,
)

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
    "unflatten_config",
    "parameter_from_dict",
    "randint",
    "uniform",
]


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
            elif isinstance(value, (list, tuple)) and storable(value):
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
        """Nested config from a flat ``{path: value}`` mapping (see :func:`unflatten_config`)."""
        return unflatten_config(flat)

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
            param = self._params[path]
            if isinstance(value, bool) and not param.contains(value):
                raise SpaceError(_bool_value(path, param, value))
            if isinstance(param, Float) and isinstance(value, (int, float)):
                value = float(value)  # an int given for a real number (lr=1)
            elif isinstance(param, Float):
                raise SpaceError(f"parameter {path!r}: {value!r} is not a number")
            flat[path] = value
        out = self.unflatten(flat)
        self.validate_config(out)
        return out

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Raise :class:`SpaceError` if a config value lies outside its parameter."""
        for path, value in self.flatten(config).items():
            param = self._params[path]
            if not param.contains(value):
                if isinstance(value, (bool, np.bool_)):
                    raise SpaceError(_bool_value(path, param, value))
                raise SpaceError(f"parameter {path!r}: value {value!r} is outside the space")

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A config drawn from the prior."""
        return self.unflatten({p: to_python(v.sample(rng)) for p, v in self._params.items()})

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
                out[path] = to_python(param.sample(rng))
            else:
                factor = float(factors[int(rng.integers(len(factors)))])
                out[path] = to_python(param.perturb(value, factor, rng))
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
            flat[path] = to_python(param.from_unit(next(it) if param.searchable else 0.5))
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


def _bool_value(path: str, param: Parameter, value: Any) -> str:
    """The refusal of a bool given where the parameter means a number (or another option)."""
    if isinstance(param, Choice):
        fix = f"give one of the options {list(param.options)!r}"
    else:
        fix = f"give a number (e.g. {int(value)!r}) instead"
    return f"parameter {path!r}: {value!r} is a bool, not a value of this parameter; {fix}"


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat ``{"outer/inner": value}`` (no space needed)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping):
            out.update(flatten_config(v, f"{prefix}{k}{_SEP}"))
        else:
            out[prefix + k] = v
    return out


def unflatten_config(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat ``{"outer/inner": value}`` config nested again (no space needed)."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        parts = path.split(_SEP)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
