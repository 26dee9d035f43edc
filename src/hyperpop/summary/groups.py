"""Sub-populations and roles: a member's group under the run's exploit strategy (MF-PBT's
sub-populations, FIRE-PBT's roles), asked of the rule the strategy registered."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hyperpop.population import Population

__all__ = ["GROUP_RULES", "group_of", "groups", "has_groups"]


#: a member's group (its sub-population or role) by exploit strategy name: ``rule(settings,
#: member)`` returns its label. Filled in by the strategies, which sit above the read side: an
#: ExploitStrategy that overrides ``group_label`` registers a rule that asks the strategy
#: rebuilt from the recorded settings. A strategy with no rule has no groups.
GROUP_RULES: dict[str, Callable[[Mapping[str, Any], int], str | None]] = {}


def group_of(settings: Mapping[str, Any], member: int) -> str | None:
    """Member ``member``'s group label under the exploit strategy recorded in ``settings``
    (``"mf 1/2 (every 1)"``, ``"greedy"``, ``"parent"``, ``"evaluator"``), or None for a
    strategy without groups."""
    exploit = settings.get("exploit")
    rule = GROUP_RULES.get(str(exploit.get("name"))) if isinstance(exploit, Mapping) else None
    return None if rule is None else rule(settings, member)


def has_groups(settings: Mapping[str, Any]) -> bool:
    """Whether the run's exploit strategy splits the population into groups."""
    exploit = settings.get("exploit")
    return isinstance(exploit, Mapping) and str(exploit.get("name")) in GROUP_RULES


def groups(pop: Population) -> dict[int, str]:
    """Each member's group label by id (empty for a strategy without groups)."""
    if not has_groups(pop.settings):
        return {}
    labels = {i: group_of(pop.settings, i) for i in sorted(pop.members)}
    return {i: g for i, g in labels.items() if g is not None}
