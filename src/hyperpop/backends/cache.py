"""How much a worker may keep in memory: the size of a member's state, and a byte budget.

A worker keeps the trainables of members it trained so that a member that trains there again
goes on without reloading its checkpoint. Each held member costs about the size of its saved
state (its weights and optimiser state), on the device the model lives on. The budget bounds
the sum of those sizes per worker; by default (``"auto"``) it is :data:`AUTO_SHARE` of the
memory the worker has: its share of its GPUs' memory, or of the machine's memory on CPU.
"""

from __future__ import annotations

import numbers
import os
import pickle
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import cloudpickle

__all__ = [
    "AUTO_SHARE",
    "FALLBACK_COUNT",
    "ByteBudget",
    "auto_budget",
    "machine_memory",
    "parse_bytes",
    "state_nbytes",
]

#: what ``cache_bytes=`` accepts: ``"auto"``, ``None`` (no byte limit), bytes, or ``"512MB"``
ByteBudget = None | int | float | str

#: under ``cache_bytes="auto"``, held members' states may take this share of a worker's memory
AUTO_SHARE = 0.25

#: where no memory size can be found, ``"auto"`` keeps this many members per worker instead
FALLBACK_COUNT = 8

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(value: ByteBudget, name: str = "cache_bytes") -> int | None:
    """A byte count from ``value``: an int, or a string such as ``"512MB"`` or ``"2GiB"``.

    Returns None for None (no limit). ``"auto"`` is not handled here (see :func:`auto_budget`).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a byte count such as 2**30 or '1GB', got {value!r}")
    if isinstance(value, numbers.Real):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 bytes, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(
        f"{name}={value!r} is not a size; use 'auto', None (no limit), a number of bytes, or "
        "a string such as '512MB' or '2GiB'"
    )


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a smaller container limit
    (cgroup); None where neither can be read."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        total = None
    limit = _cgroup_limit()
    if total is None or total <= 0:
        return limit
    return min(total, limit) if limit is not None else total


def auto_budget(
    devices: Sequence[str] | None,
    gpus_per_member: float | None,
    workers: int,
    gpu_memory: Mapping[str, int],
) -> int | None:
    """The ``"auto"`` byte budget of one worker: :data:`AUTO_SHARE` of its memory.

    Args:
        devices: the worker's GPUs (None: a CPU worker).
        gpus_per_member: the worker's share of each of its GPUs (below 1: shared GPUs).
        workers: how many workers share the machine's memory.
        gpu_memory: total bytes per GPU id (from ``nvidia-smi``; may be empty).

    Returns:
        Bytes, or None if the memory cannot be found (the caller falls back to a count).
    """
    if devices:
        sizes = [gpu_memory.get(d) for d in devices]
        if all(s is not None for s in sizes):
            share = min(1.0, float(gpus_per_member or 1.0))
            return int(AUTO_SHARE * share * sum(s for s in sizes if s is not None))
    total = machine_memory()
    if total is None:
        return None
    return int(AUTO_SHARE * total / max(1, workers))


def state_nbytes(state: Any, _depth: int = 0) -> int:
    """About how many bytes ``state`` holds: tensors' and arrays' ``nbytes`` (torch, numpy),
    the length of strings and bytes, containers walked, anything else by its pickled size."""
    nbytes = getattr(state, "nbytes", None)
    if isinstance(nbytes, numbers.Integral) and not isinstance(state, type):
        return int(nbytes)
    if isinstance(state, (bytes, bytearray, memoryview, str)):
        return len(state)
    if state is None or isinstance(state, (bool, numbers.Number)):
        return sys.getsizeof(state)
    if _depth < 50:
        if isinstance(state, Mapping):
            return sum(
                state_nbytes(k, _depth + 1) + state_nbytes(v, _depth + 1) for k, v in state.items()
            )
        if isinstance(state, (list, tuple, set, frozenset)):
            return sum(state_nbytes(v, _depth + 1) for v in state)
    try:
        return len(cloudpickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001 - an estimate; encode() reports unpicklable states
        return sys.getsizeof(state)
