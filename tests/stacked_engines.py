"""A vectorized trainable's stacked engine filled with members, shared by the vectorized tests."""

from __future__ import annotations

from typing import Any


def stacked_engine(spec: Any, configs: list[dict], fresh: list[dict] | None = None) -> Any:
    """``spec``'s stacked engine with one member per config: slot ``i`` starts from fresh
    weights for ``fresh[i]`` (default: ``configs[i]``) and trains with ``configs[i]``."""
    eng = spec.stacked(dict(configs[0]))
    eng.grow(len(configs))
    for slot, config in enumerate(configs):
        eng.fresh(slot, (fresh or configs)[slot])
        eng.set_config(slot, config)
    return eng
