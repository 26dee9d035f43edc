"""Do: backends that run trainables (``local`` processes, ``ray`` actors, a ``simulated``
clock, ``vectorized`` stacked models), and the registry that names them."""

from __future__ import annotations

import importlib
from typing import Any

from hyperpop.backends.base import Backend, Task, TaskResult

__all__ = ["BACKENDS", "Backend", "Task", "TaskResult", "backend_class", "get_backend"]

#: each backend's name and where its class is (imported when it is asked for, so Ray and
#: PyTorch load only for the backends that need them)
_REGISTRY: dict[str, tuple[str, str, str]] = {
    "local": ("hyperpop.backends.local", "LocalBackend", ""),
    "ray": (
        "hyperpop.backends.ray",
        "RayBackend",
        "the ray backend needs Ray: pip install 'hyperpop[ray]'",
    ),
    "simulated": ("hyperpop.backends.simulated", "SimulatedBackend", ""),
    "vectorized": ("hyperpop.backends.vectorized", "VectorizedBackend", ""),
}

#: the backends a run may name
BACKENDS = tuple(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The class of the backend called ``name``.

    Raises:
        ValueError: no backend has that name (the message lists those that do).
        ImportError: the backend needs an extra that is not installed (the message says which).
    """
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        known = ", ".join(repr(n) for n in BACKENDS)
        raise ValueError(
            f"backend must be {known} or a Backend instance, got {name!r} (unknown backend "
            f"{name!r})"
        )
    module, attr, needs = entry
    try:
        cls: type[Backend] = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        if not needs:
            raise
        raise ImportError(f"{needs} ({e})") from None
    return cls


def get_backend(
    backend: str | Backend, workers: int | str | None = None, **options: Any
) -> Backend:
    """A backend: an instance as it is, or the backend called ``backend`` built with
    ``workers`` (None: its default; ``"auto"``: Ray's, following the cluster) and its
    ``options``."""
    if isinstance(backend, Backend):
        if options:
            raise ValueError(
                "options are for a backend named by a string; a Backend instance is used as it is"
            )
        return backend
    cls = backend_class(backend)
    return cls(**options) if workers is None else cls(workers, **options)  # type: ignore[call-arg]
