"""Decide: exploit and explore strategies (pure logic over the population state)."""

from __future__ import annotations

from typing import Any

from hyperpop.strategies.base import Context, ExploitStrategy, ExploreStrategy
from hyperpop.strategies.exploit import NoExploit, Tournament, Truncation
from hyperpop.strategies.explore import NoExplore, Perturb, Resample
from hyperpop.strategies.firepbt import FIREPBT
from hyperpop.strategies.mfpbt import MFPBT
from hyperpop.strategies.pb2 import PB2
from hyperpop.strategies.reserve import ReservePBT
from hyperpop.strategies.ttest import WelchTTest

__all__ = [
    "Context",
    "ExploitStrategy",
    "ExploreStrategy",
    "FIREPBT",
    "MFPBT",
    "NoExploit",
    "NoExplore",
    "PB2",
    "Perturb",
    "Resample",
    "ReservePBT",
    "Tournament",
    "Truncation",
    "WelchTTest",
    "make_exploit",
    "make_explore",
    "register",
]

EXPLOIT: dict[str, Any] = {
    "truncation": Truncation,
    "tournament": Tournament,
    "ttest": WelchTTest,
    "mfpbt": MFPBT,
    "firepbt": FIREPBT,
    "reserve": ReservePBT,
    "none": NoExploit,
}
EXPLORE: dict[str, Any] = {"perturb": Perturb, "resample": Resample, "pb2": PB2, "none": NoExplore}


def register(cls: type[ExploitStrategy] | type[ExploreStrategy]) -> type:
    """Make a strategy class known by its ``name``, so runs and resumes can name it.

    Use it as a class decorator. The class must build from the keyword arguments its
    ``describe()`` returns (minus ``name``), which is how a resumed run rebuilds it.

    Raises:
        TypeError: if ``cls`` is not an exploit or explore strategy class.
        ValueError: if its name is taken by another class.
    """
    if isinstance(cls, type) and issubclass(cls, ExploitStrategy):
        table = EXPLOIT
    elif isinstance(cls, type) and issubclass(cls, ExploreStrategy):
        table = EXPLORE
    else:
        raise TypeError(
            f"register() takes an ExploitStrategy or ExploreStrategy class, got {cls!r}"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name in ("exploit", "explore"):
        raise ValueError(f"{cls.__name__} needs its own class attribute name = '...'")
    if table.get(name, cls) is not cls:
        raise ValueError(
            f"a strategy named {name!r} is already registered ({table[name].__name__}); "
            "choose another name"
        )
    table[name] = cls
    return cls


def _make(spec: Any, table: dict[str, Any], base: type, kind: str) -> Any:
    """A strategy from ``None`` (the table's ``"none"``), an instance of ``base``, or a name in
    ``table``."""
    if spec is None:
        return table["none"]()
    if isinstance(spec, base):
        return spec
    if isinstance(spec, str) and spec in table:
        return table[spec]()
    raise ValueError(
        f"unknown {kind} strategy {spec!r}; use one of {sorted(table)} or an "
        f"{base.__name__} instance"
    )


def make_exploit(spec: str | ExploitStrategy | None) -> ExploitStrategy:
    """An exploit strategy from a name (``truncation``, ``tournament``, ``ttest``, ``mfpbt``,
    ``firepbt``, ``reserve``, ``none`` or a registered one), an instance, or None (never copy)."""
    return _make(spec, EXPLOIT, ExploitStrategy, "exploit")


def make_explore(spec: str | ExploreStrategy | None) -> ExploreStrategy:
    """An explore strategy from a name (``perturb``, ``resample``, ``pb2``, ``none`` or a
    registered one), an instance, or None (keep the hyperparameters)."""
    return _make(spec, EXPLORE, ExploreStrategy, "explore")
