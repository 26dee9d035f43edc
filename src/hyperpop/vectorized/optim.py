"""Per-member optimisers on stacked tensors: SGD (momentum, weight decay, Nesterov), Adam and
AdamW with ``torch.optim``'s semantics, each member with its own hyperparameters as tensors; and
what a checkpoint needs to look like ``torch.optim``'s own (the parameter group's entries)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hyperpop.trainable import TrainableError

__all__ = [
    "DEFAULTS",
    "OPTIMIZERS",
    "OPTIMIZER_KEYS",
    "group_template",
    "step",
    "torch_optimizer",
]

#: Config keys read as optimiser hyperparameters (config key -> optimiser hyperparameter).
OPTIMIZER_KEYS: dict[str, str] = {
    "lr": "lr",
    "learning_rate": "lr",
    "momentum": "momentum",
    "weight_decay": "weight_decay",
    "beta1": "beta1",
    "beta2": "beta2",
    "eps": "eps",
}

#: the optimisers a :class:`~hyperpop.vectorized.VectorizedTrainable` may name
OPTIMIZERS = ("sgd", "adam", "adamw")
#: each optimiser's hyperparameters and their values where neither the config nor the trainable
#: gives them (``torch.optim``'s defaults)
DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    },
    "adamw": {
        "lr": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 1e-2,
    },
}


def broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member vector ``[K]`` shaped to broadcast against a stacked ``[K, ...]`` tensor."""
    return v.view((v.shape[0],) + (1,) * (like.dim() - 1))


def write(target: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> None:
    """``target[:] = value``, only for the members ``mask`` marks (None: all)."""
    if mask is None:
        target.copy_(value)
    else:
        target.copy_(torch.where(broadcast(mask, target), value, target))


def step(
    kind: str,
    nesterov: bool,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: list[dict[str, torch.Tensor]],
    opt_steps: torch.Tensor,
    hp: dict[str, torch.Tensor],
    mask: torch.Tensor | None = None,
) -> None:
    """One ``kind`` step (``"sgd"``, ``"adam"``, ``"adamw"``) for every member at once, in
    place, with ``torch.optim``'s semantics.

    ``params``, ``grads`` and ``states`` (``momentum_buffer``, or ``exp_avg`` and
    ``exp_avg_sq``) are stacked ``[K, ...]``; ``opt_steps`` counts each member's steps; ``hp``
    holds per-member vectors ``[K]`` (float64); ``mask`` leaves members untouched.
    """
    with torch.no_grad():
        if mask is not None:
            old_steps = opt_steps.clone()
        opt_steps += 1
        if mask is not None:
            opt_steps.copy_(torch.where(mask, opt_steps, old_steps))
        lr = hp["lr"]
        wd = hp["weight_decay"]
        if kind == "sgd":
            mom = hp["momentum"]
            for p, gr, st in zip(params, grads, states):
                dt = p.dtype
                buf = st["momentum_buffer"]
                d = gr + broadcast(wd.to(dt), p) * p
                new_buf = broadcast(mom.to(dt), p) * buf + d
                upd = d + broadcast(mom.to(dt), p) * new_buf if nesterov else new_buf
                new_p = p - broadcast(lr.to(dt), p) * upd
                write(buf, new_buf, mask)
                write(p, new_p, mask)
            return
        b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
        steps = opt_steps
        bc1 = 1 - b1**steps
        bc2_sqrt = torch.sqrt(1 - b2**steps)
        step_size = lr / bc1
        for p, gr, st in zip(params, grads, states):
            dt = p.dtype
            m, v = st["exp_avg"], st["exp_avg_sq"]
            x = p
            if kind == "adamw":
                x = p * broadcast((1 - lr * wd).to(dt), p)
                d = gr
            else:
                d = gr + broadcast(wd.to(dt), p) * p
            new_m = m + broadcast((1 - b1).to(dt), p) * (d - m)
            new_v = v * broadcast(b2.to(dt), p) + broadcast((1 - b2).to(dt), p) * d * d
            denom = new_v.sqrt() / broadcast(bc2_sqrt.to(dt), p) + broadcast(eps.to(dt), p)
            new_p = x - broadcast(step_size.to(dt), p) * new_m / denom
            write(m, new_m, mask)
            write(v, new_v, mask)
            write(p, new_p, mask)


def torch_optimizer(kind: str, module: nn.Module, nesterov: bool) -> torch.optim.Optimizer:
    kind = kind.lower()
    params = list(module.parameters())
    if kind == "sgd":
        # momentum > 0 at construction so Nesterov is accepted; apply() sets the real value
        return torch.optim.SGD(
            params, lr=1e-3, momentum=0.9 if nesterov else 0.0, nesterov=nesterov
        )
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=1e-3)
    raise TrainableError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")


def group_template(kind: str, nesterov: bool) -> dict[str, Any]:
    common = {
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": None,
    }
    if kind == "sgd":
        return {
            "lr": 1e-3,
            "momentum": 0.0,
            "dampening": 0,
            "weight_decay": 0.0,
            "nesterov": nesterov,
            **common,
        }
    return {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": False,
        **common,
        "capturable": False,
        "decoupled_weight_decay": kind == "adamw",
    }
