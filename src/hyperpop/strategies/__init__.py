"""Decide: exploit and explore strategies (pure logic over the population state)."""

from __future__ import annotations

from typing import Any

from hyperpop.strategies.base import Context, ExploitStrategy, ExploreStrategy
from hyperpop.strategies.exploit import NoExploit, Tournament, Truncation
from hyperpop.strategies.explore import NoExplore, Perturb, Resample

__all__ = [
    "Context",
    "ExploitStrategy",
    "ExploreStrategy",
    "NoExploit",
    "NoExplore",
    "Perturb",
    "Resample",
    "Tournament",
    "Truncation",
    "make_exploit",
    "make_explore",
]

EXPLOIT: dict[str, Any] = {"truncation": Truncation, "tournament": Tournament, "none": NoExploit}
EXPLORE: dict[str, Any] = {"perturb": Perturb, "resample": Resample, "none": NoExplore}


def make_exploit(spec: str | ExploitStrategy | None) -> ExploitStrategy:
    """An exploit strategy from a name (``truncation``, ``tournament``, ``none``) or instance."""
    if spec is None:
        return NoExploit()
    if isinstance(spec, ExploitStrategy):
        return spec
    if isinstance(spec, str) and spec in EXPLOIT:
        return EXPLOIT[spec]()
    raise ValueError(
        f"unknown exploit strategy {spec!r}; use one of {sorted(EXPLOIT)} or an "
        "ExploitStrategy instance"
    )


def make_explore(spec: str | ExploreStrategy | None) -> ExploreStrategy:
    """An explore strategy from a name (``perturb``, ``resample``, ``none``) or instance."""
    if spec is None:
        return NoExplore()
    if isinstance(spec, ExploreStrategy):
        return spec
    if isinstance(spec, str) and spec in EXPLORE:
        return EXPLORE[spec]()
    raise ValueError(
        f"unknown explore strategy {spec!r}; use one of {sorted(EXPLORE)} or an "
        "ExploreStrategy instance"
    )
