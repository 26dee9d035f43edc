"""Values for people and for JSON: one formatter (:func:`fmt`) and one JSON-safe conversion
(:func:`num`, :func:`json_safe`)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt", "is_number", "json_safe", "num"]


def num(v: Any) -> Any:
    """A JSON-safe value: NaN and infinities become None, floats keep 7 significant digits."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return float(f"{v:.7g}")
    return v


def json_safe(obj: Any) -> Any:
    """``obj`` with every float made JSON-safe by :func:`num`, through dicts, lists and tuples
    (tuples become lists)."""
    if isinstance(obj, float):
        return num(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def fmt(v: Any, *, digits: int = 4, missing: str = "-") -> str:
    """A value for people to read: floats to ``digits`` significant digits, ``nan`` and
    ``inf`` spelled out, ``missing`` for None."""
    if v is None:
        return missing
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a plottable number (an int or a float, not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)
