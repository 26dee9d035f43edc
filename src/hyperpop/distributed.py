"""PyTorch data parallelism inside a member of several processes (``processes_per_member=N``).

Each of a member's N processes is started with the environment ``torchrun`` gives (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) and ``HYPERPOP_DIST_TIMEOUT``.
In a trainable's ``setup``:

>>> import hyperpop.torch as hpt                                  # doctest: +SKIP
>>> hpt.init_distributed()          # gloo on CPUs, nccl on GPUs  # doctest: +SKIP
>>> self.model = make_model().to(hpt.device())                    # doctest: +SKIP
>>> self.ddp = hpt.wrap_ddp(self.model)   # train through self.ddp # doctest: +SKIP

The convention for checkpoints is DDP's: every rank calls ``save()`` (a sharded model gathers
its full state in a collective), rank 0's state is the member's checkpoint, and every rank
loads that full state (after an exploit, the donor's). Save the *unwrapped* model
(``self.model`` above, whose parameters the DDP wrapper shares), so that a checkpoint loads
into a plain model in a single process; :func:`full_state_dict` and
:func:`load_full_state_dict` do this for DDP and FSDP alike.

Outside a group (``WORLD_SIZE`` unset or 1) every function here is a no-op: the same trainable
runs as one process.

This module needs PyTorch; :mod:`hyperpop.torch` re-exports its functions.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "device",
    "full_state_dict",
    "init_distributed",
    "is_distributed",
    "load_full_state_dict",
    "local_rank",
    "rank",
    "split_batch",
    "unwrap",
    "world_size",
    "wrap_ddp",
    "wrap_fsdp",
]

#: seconds a collective waits for its peers when ``HYPERPOP_DIST_TIMEOUT`` is not set
DEFAULT_TIMEOUT = 300.0


def world_size() -> int:
    """The number of processes of this member (1 outside a group)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank in its member's group (0 outside a group)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on this machine (``LOCAL_RANK``; 0 outside a group)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """Whether the process group is initialised (by :func:`init_distributed` or the user)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def device() -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` when GPUs are visible (every rank sees its
    member's GPUs, one per rank), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank() % max(1, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(backend: str | None = None, timeout: float | None = None) -> bool:
    """Initialise the default process group from the environment, once per process.

    Args:
        backend: ``"gloo"``, ``"nccl"``...; default: nccl when GPUs are visible, else gloo.
        timeout: seconds a collective waits for a peer before it raises (a rank that died or
            hangs then fails the interval instead of blocking its peers forever); default:
            ``HYPERPOP_DIST_TIMEOUT`` (the run's ``step_timeout``, else 300 s).

    Returns:
        True in a group of several processes (initialised now or before), False outside one.
    """
    if world_size() <= 1:
        return False
    if is_distributed():
        return True
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    seconds = timeout or float(os.environ.get("HYPERPOP_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if backend == "nccl":
        torch.cuda.set_device(device())
    torch.distributed.init_process_group(
        backend=backend,
        rank=rank(),
        world_size=world_size(),
        timeout=datetime.timedelta(seconds=seconds),
    )
    return True


def wrap_ddp(model: nn.Module, **kwargs: Any) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (on GPUs with this
    rank's device), or ``model`` itself outside a group. Keep a reference to ``model``: its
    parameters are the wrapper's, and its ``state_dict()`` has no ``module.`` prefix."""
    if not is_distributed():
        return model
    if torch.cuda.is_available():
        kwargs.setdefault("device_ids", [device()])
    return nn.parallel.DistributedDataParallel(model, **kwargs)


def wrap_fsdp(model: nn.Module, **kwargs: Any) -> nn.Module:
    """``model`` with its parameters sharded over the ranks, or ``model`` itself outside a
    group: ``torch.distributed.fsdp.fully_shard`` (FSDP2, PyTorch 2.6 or later; on CPUs too,
    sharding ``model`` in place) where this PyTorch has it, else the older
    :class:`~torch.distributed.fsdp.FullyShardedDataParallel` wrapper (PyTorch 1.12 or later,
    GPUs only). ``kwargs`` go to either. Save and load it with :func:`full_state_dict` and
    :func:`load_full_state_dict`.

    Raises:
        RuntimeError: this PyTorch has no FSDP.
    """
    if not is_distributed():
        return model
    try:
        from torch.distributed.fsdp import fully_shard

        return fully_shard(model, **kwargs)  # type: ignore[return-value, unused-ignore]
    except ImportError:
        pass
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError as e:  # pragma: no cover - depends on the torch version
        raise RuntimeError(f"this PyTorch ({torch.__version__}) has no FSDP: {e}") from None
    if torch.cuda.is_available():
        kwargs.setdefault("device_id", device())
    return FullyShardedDataParallel(model, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP or FSDP wrapper (``model`` itself if it is not wrapped)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def _sharded(model: nn.Module) -> bool:
    return type(model).__name__ == "FullyShardedDataParallel" or hasattr(model, "_get_fsdp_state")


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """The full (unsharded, unprefixed) state dict of ``model``, on the CPU: call it on every
    rank (FSDP gathers the shards in a collective); rank 0's is the one to save (other ranks
    of a sharded model get an empty dict)."""
    if _sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_model_state_dict(model, options=options))
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def load_full_state_dict(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Load a full state dict (from :func:`full_state_dict` or a single process) into
    ``model`` on every rank, wrapped or not, sharded or not."""
    if _sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        set_model_state_dict(model, dict(state), options=StateDictOptions(full_state_dict=True))
        return
    unwrap(model).load_state_dict(state)


def split_batch(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's share of a global minibatch: the ``rank()``-th of ``world_size()``
    near-equal contiguous chunks of each tensor (all of it outside a group). With every rank
    drawing the same global minibatches (the same seed), the group trains at the global batch
    size, as one process would."""
    n, r = world_size(), rank()
    if n <= 1:
        return tensors
    return tuple(torch.tensor_split(t, n)[r] for t in tensors)
