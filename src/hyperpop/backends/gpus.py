"""GPU placement for local workers: which devices exist, and which worker gets which.

Nothing here imports PyTorch (or any CUDA library): the driver finds the GPUs from
``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L`` and hands each worker process its share through
its own ``CUDA_VISIBLE_DEVICES``, set in the worker's environment before it starts. Device ids
are what ``CUDA_VISIBLE_DEVICES`` takes: indices as ``nvidia-smi`` numbers them (workers get
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers them the same), or ``GPU-``/``MIG-`` UUIDs.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "GpuSpec",
    "assign_gpus",
    "gpu_memory",
    "nvidia_smi",
    "placement",
    "visible_gpus",
]

#: what ``gpus=`` accepts: ``None``/``"all"`` (every visible GPU), a count, ``"0,1"``, or ids
GpuSpec = None | int | str | Sequence[int | str]

_UUID = re.compile(r"^(GPU|MIG)-[0-9A-Za-z-]+$")
_SMI_TIMEOUT = 10.0


def _is_id(text: str) -> bool:
    return text.isdigit() or bool(_UUID.match(text))


def _parse_visible(value: str) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it: ids up to the first invalid one."""
    out: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if not _is_id(part):
            break
        out.append(part)
    return out


def nvidia_smi(*args: str) -> list[str]:
    """The non-empty lines ``nvidia-smi ARGS`` prints (none if it is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=_SMI_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line for line in done.stdout.splitlines() if line.strip()]


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this machine shows the driver, without importing PyTorch.

    Args:
        environ: the environment to read (default: ``os.environ``).

    Returns:
        The ids in ``CUDA_VISIBLE_DEVICES`` if it is set (``""`` or ``"-1"``: none), else the
        indices that ``nvidia-smi -L`` lists (none if it is missing).
    """
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return _parse_visible(env["CUDA_VISIBLE_DEVICES"])
    out = []
    for line in nvidia_smi("-L"):
        m = re.match(r"^GPU (\d+):", line)
        if m:
            out.append(m.group(1))
    return out


def gpu_memory() -> dict[str, int]:
    """Total memory in bytes of each GPU ``nvidia-smi`` lists, by index and by UUID (empty
    where there is no ``nvidia-smi``)."""
    out: dict[str, int] = {}
    for line in nvidia_smi("--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            continue
        try:
            mib = int(float(parts[2]))
        except ValueError:
            continue
        out[parts[0]] = out[parts[1]] = mib * 2**20
    return out


def _requested(gpus: GpuSpec, discover: Callable[[], Sequence[str]]) -> list[str]:
    """The device ids that ``gpus=`` names (``[]``: no placement)."""
    if isinstance(gpus, bool):
        raise ValueError(_BAD_SPEC.format(gpus))
    if gpus is None or (isinstance(gpus, str) and gpus.strip().lower() == "all"):
        return _every(discover)
    if isinstance(gpus, numbers.Integral):
        return _first(gpus, discover)
    return _named(gpus, discover)


_BAD_SPEC = "gpus must be a count, 'all', or device ids such as [0, 1], got {!r}"


def _every(discover: Callable[[], Sequence[str]]) -> list[str]:
    """Every visible GPU (``gpus=None`` or ``"all"``)."""
    found = [str(g) for g in discover()]
    if not found:
        raise ValueError(
            "GPUs were asked for but none is visible (CUDA_VISIBLE_DEVICES is empty or "
            "unset and nvidia-smi -L lists none); check the drivers, or leave gpus and "
            "gpus_per_member out to train on CPU workers"
        )
    return found


def _first(gpus: numbers.Integral, discover: Callable[[], Sequence[str]]) -> list[str]:
    """The first ``gpus`` visible GPUs (``gpus=n``)."""
    n = int(gpus)
    if n < 0:
        raise ValueError(f"gpus must be >= 0 (a count of GPUs), got {gpus!r}")
    if n == 0:
        return []
    found = [str(g) for g in discover()]
    asks = f"gpus={n} asks for {'a GPU' if n == 1 else f'{n} GPUs'}"
    if not found:
        raise ValueError(
            f"{asks} but none is visible (CUDA_VISIBLE_DEVICES is empty or unset and "
            "nvidia-smi -L lists none); check the drivers, or leave gpus out (or gpus=0) "
            "to train on CPU workers"
        )
    if len(found) < n:
        names = ", ".join(repr(g) if not g.isdigit() else g for g in found)
        raise ValueError(
            f"{asks} but {len(found)} {'is' if len(found) == 1 else 'are'} visible "
            f"({', '.join(found)}); ask for at most {len(found)}, or name the ones to use "
            f"(gpus=[{names}])"
        )
    return found[:n]


def _named(gpus: object, discover: Callable[[], Sequence[str]]) -> list[str]:
    """The devices ``gpus`` names (``"0,1"``, ``[0, 1]``, UUIDs), each visible and named once."""
    if isinstance(gpus, str):
        ids = [p.strip() for p in gpus.split(",")]
    elif isinstance(gpus, Sequence):
        ids = [str(g).strip() for g in gpus]
    else:
        raise ValueError(_BAD_SPEC.format(gpus))
    if not ids or ids == [""]:
        raise ValueError(
            f"gpus={gpus!r} names no device; name some (gpus=[0, 1]), or leave gpus out (or "
            "gpus=0) for CPU workers"
        )
    bad = [i for i in ids if not _is_id(i)]
    if bad:
        raise ValueError(
            f"gpus={gpus!r}: {bad[0]!r} is not a device id; use indices as nvidia-smi lists "
            "them (0, 1, ...) or GPU-/MIG- UUIDs"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"gpus={gpus!r} names a device twice; to put several members on one GPU, use "
            "gpus_per_member=0.5 (two per GPU) or smaller"
        )
    found = [str(g) for g in discover()]
    unknown = [i for i in ids if i.isdigit() and found and i not in found]
    if unknown:
        raise ValueError(
            f"gpus={gpus!r}: GPU {unknown[0]} is not visible (visible: {', '.join(found)}); "
            "name visible devices"
        )
    return ids


def _members_per_gpu(gpus_per_member: float) -> tuple[int, int]:
    """(members per GPU, GPUs per member) for ``gpus_per_member``; one of them is 1."""
    if isinstance(gpus_per_member, bool) or not isinstance(gpus_per_member, numbers.Real):
        raise ValueError(
            f"gpus_per_member must be a number such as 1, 0.5 or 2, got {gpus_per_member!r}"
        )
    f = float(gpus_per_member)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"gpus_per_member must be > 0, got {gpus_per_member!r}")
    if f >= 1:
        if f != int(f):
            raise ValueError(
                f"gpus_per_member={gpus_per_member!r}: above 1 it must be a whole number of "
                "GPUs (2, 3, ...)"
            )
        return 1, int(f)
    k = round(1 / f)
    if abs(k * f - 1) > 0.02:
        raise ValueError(
            f"gpus_per_member={gpus_per_member!r} does not split a GPU evenly; use 1/k "
            "(0.5, 0.25, 1/3, ...) to put k members on each GPU"
        )
    return k, 1


def assign_gpus(
    ids: Sequence[str], gpus_per_member: float, workers: int | None
) -> list[tuple[str, ...]]:
    """Each worker's devices: ``ids`` shared out by ``gpus_per_member``.

    With a fraction ``1/k``, each GPU takes ``k`` workers, dealt round-robin (with fewer
    workers than ``k * len(ids)`` they spread over the GPUs); with a whole ``g``, each worker
    takes ``g`` GPUs of its own.

    Args:
        ids: the device ids to use.
        gpus_per_member: 1, a fraction ``1/k``, or a whole number of GPUs.
        workers: how many workers (None: as many as fit).

    Returns:
        One tuple of device ids per worker.

    Raises:
        ValueError: ``workers`` do not fit on ``ids``, or ``gpus_per_member`` is invalid.
    """
    per_gpu, per_member = _members_per_gpu(gpus_per_member)
    if per_member > len(ids):
        raise ValueError(
            f"gpus_per_member={gpus_per_member:g} needs {per_member} GPUs per worker, but only "
            f"{len(ids)} {'is' if len(ids) == 1 else 'are'} given ({', '.join(ids)})"
        )
    slots: list[tuple[str, ...]]
    if per_gpu > 1:
        fits = len(ids) * per_gpu
        slots = [(ids[i % len(ids)],) for i in range(fits)]
    else:
        fits = len(ids) // per_member
        slots = [tuple(ids[i * per_member : (i + 1) * per_member]) for i in range(fits)]
        if fits * per_member < len(ids):
            warnings.warn(
                f"gpus_per_member={per_member} uses {fits * per_member} of the {len(ids)} GPUs "
                f"({', '.join(ids[fits * per_member :])} left idle)",
                stacklevel=3,
            )
    if workers is None:
        return slots
    if workers > fits:
        raise ValueError(
            f"workers={workers} do not fit on {len(ids)} GPU{'s' if len(ids) != 1 else ''} "
            f"({', '.join(ids)}) at gpus_per_member={gpus_per_member:g}: at most {fits}; use "
            "fewer workers, more GPUs, or a smaller gpus_per_member (0.5 puts two on a GPU)"
        )
    return slots[:workers]


def placement(
    gpus: GpuSpec,
    gpus_per_member: float | None,
    workers: int | None,
    discover: Callable[[], Sequence[str]] | None = None,
) -> list[tuple[str, ...]] | None:
    """Each worker's devices for ``LocalBackend(gpus=..., gpus_per_member=...)``.

    GPUs are asked for when ``gpus`` is given (other than ``0``) or ``gpus_per_member`` is;
    ``gpus=None`` then means every visible GPU, and ``gpus_per_member`` defaults to 1.

    Args:
        gpus: ``None``/``"all"``, a count, ``"0,1"``, or a list of device ids.
        gpus_per_member: 1, a fraction ``1/k`` (``k`` members per GPU), or a whole number.
        workers: the number of workers asked for (None: as many as the GPUs take).
        discover: returns the visible device ids (default: :func:`visible_gpus`).

    Returns:
        One tuple of device ids per worker, or None when no GPU is asked for.

    Raises:
        ValueError: GPUs are asked for and none is visible, or the settings do not fit.
    """
    if gpus is None and gpus_per_member is None:
        return None
    if isinstance(gpus, numbers.Integral) and not isinstance(gpus, bool) and gpus == 0:
        if gpus_per_member is not None:
            raise ValueError(
                f"gpus=0 means CPU workers, but gpus_per_member={gpus_per_member!r} asks for "
                "GPUs; drop one of them"
            )
        return None
    ids = _requested(gpus, discover or visible_gpus)
    return assign_gpus(ids, 1.0 if gpus_per_member is None else gpus_per_member, workers)
