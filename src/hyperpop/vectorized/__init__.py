"""A population as one stacked model: many small PyTorch members trained at once.

A :class:`VectorizedTrainable` describes one member (its model, its loss on a batch, its data and
its optimiser) and which hyperparameters are per-member numbers. Run it with
``backend="vectorized"`` and hyperpop stacks every member's parameters and optimiser state along a
leading member dimension (``torch.func.stack_module_state``), runs forward and backward for all of
them at once (``torch.func.vmap`` over ``functional_call``), and applies a per-member SGD, Adam or
AdamW step written on the stacked tensors, with each member's learning rate, momentum, betas, eps
and weight decay as tensors. An exploit is an index copy inside the stacked tensors.

The same class is an ordinary :class:`~hyperpop.Trainable` too: the local and Ray backends, replay
and ``hp.resume`` run it member by member with ``torch.optim``, and a checkpoint written by the
vectorized backend is the state the plain trainable saves (model and optimiser state dicts), so
either can load the other's.

The package holds :mod:`~hyperpop.vectorized.trainable` (what the user writes),
:mod:`~hyperpop.vectorized.engine` (:class:`StackedPopulation`, what the backend trains),
:mod:`~hyperpop.vectorized.lane` (a module copy and the step of one chunk on it: chunks on
different lanes train at the same time), :mod:`~hyperpop.vectorized.probe` (the timings and
activation sizes the backend chooses its chunks from) and :mod:`~hyperpop.vectorized.optim`
(the stacked SGD, Adam and AdamW). It needs PyTorch; nothing in hyperpop's core imports it.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401 - a clear message before the submodules need it
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"hyperpop.vectorized needs PyTorch: pip install 'hyperpop[torch]' ({e})"
    ) from None

from hyperpop.vectorized.engine import StackedPopulation
from hyperpop.vectorized.optim import OPTIMIZER_KEYS
from hyperpop.vectorized.trainable import (
    Members,
    ShapeError,
    VectorizedTrainable,
    dropout,
)

__all__ = [
    "OPTIMIZER_KEYS",
    "Members",
    "ShapeError",
    "StackedPopulation",
    "VectorizedTrainable",
    "dropout",
]
