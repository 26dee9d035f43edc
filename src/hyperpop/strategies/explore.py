"""Explore strategies: perturb (with resampling), resample, and none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hyperpop.population import MemberState
from hyperpop.strategies.base import Context, ExploreStrategy

__all__ = ["NoExplore", "Perturb", "Resample"]


class Perturb(ExploreStrategy):
    """Multiply each hyperparameter by a random factor, or resample it from the prior.

    Values stay inside their bounds; integers stay integers; ordered choices move to a
    neighbour and unordered ones resample.

    Args:
        factors: the factors to draw from (default 0.8 and 1.2, as in Jaderberg et al. 2017).
        resample_probability: chance that a parameter is resampled instead of perturbed.
    """

    name = "perturb"

    def __init__(self, factors: Sequence[float] = (0.8, 1.2), resample_probability: float = 0.25):
        if not factors or any(f <= 0 for f in factors):
            raise ValueError(f"perturbation factors must be positive numbers, got {factors!r}")
        if not 0.0 <= resample_probability <= 1.0:
            raise ValueError(f"resample_probability must be in [0, 1], got {resample_probability}")
        self.factors = tuple(float(f) for f in factors)
        self.resample_probability = float(resample_probability)

    def explore(
        self, config: dict[str, Any], member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any]:
        return ctx.space.perturb(
            config,
            ctx.rng,
            factors=self.factors,
            resample_probability=self.resample_probability,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "factors": list(self.factors),
            "resample_probability": self.resample_probability,
        }


class Resample(ExploreStrategy):
    """Draw every hyperparameter afresh from its prior."""

    name = "resample"

    def explore(
        self, config: dict[str, Any], member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any]:
        return ctx.space.sample(ctx.rng)


class NoExplore(ExploreStrategy):
    """Keep the donor's hyperparameters unchanged (exploit only)."""

    name = "none"

    def explore(
        self, config: dict[str, Any], member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any]:
        return config
