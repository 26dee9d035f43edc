"""A lane of the stacked engine: one copy of the member's module, the functions ``vmap``-ed over
it (a batch's loss, the forward that ``batches`` may call, the evaluation) and the training step
of one chunk of members on it.

``functional_call`` puts a member's tensors into the module while it runs, so two threads cannot
share a module: chunks that train at the same time (the vectorized backend's parallel chunks)
each take a lane of their own. A lane holds no member state; the engine hands it a chunk's
stacked tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from hyperpop.vectorized.optim import step as optimizer_step
from hyperpop.vectorized.trainable import Members, VectorizedTrainable, split_loss

__all__ = ["Chunk", "Lane", "Tensors"]

#: a chunk's stacked tensors by name: parameters, buffers
Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Chunk:
    """The stacked tensors of the members a lane trains together (row ``i`` is member ``i`` of
    the chunk), taken from the engine by :meth:`~hyperpop.vectorized.StackedPopulation.chunk`.

    Attributes:
        params: the parameters (a step updates them in place).
        buffers: the buffers.
        states: the optimiser's state per parameter (updated in place).
        opt_steps: each member's optimiser step count (updated in place).
        hp: the trainable's hyperparameters as float32 (what ``loss`` and ``evaluate`` get).
        opt_hp: the optimiser's hyperparameters.
    """

    params: Tensors
    buffers: Tensors
    states: dict[str, Tensors]
    opt_steps: torch.Tensor
    hp: Tensors
    opt_hp: Tensors


class Lane:
    """One module copy and its ``vmap``-ed functions: trains one chunk at a time.

    Args:
        spec: the trainable (its ``loss``, ``evaluate`` and ``batches``).
        module: the module this lane runs members' tensors through (not shared with another
            lane).
        kind: the optimiser (``"sgd"``, ``"adam"``, ``"adamw"``).
    """

    def __init__(self, spec: VectorizedTrainable, module: nn.Module, kind: str):
        self.spec, self.module, self.kind = spec, module, kind
        #: lanes training at the same time (each evaluates its share of ``evaluate_members``)
        self.sharing = 1
        self._vloss = vmap(self._member_loss, randomness="different")
        self._veval = vmap(self._member_eval, randomness="different")
        self._vforward = vmap(self._member_forward, randomness="different")

    def copy(self) -> Lane:
        """A lane of its own for another thread (a deep copy of the module)."""
        return Lane(self.spec, copy.deepcopy(self.module), self.kind)

    # --- one member, vmap-ed over the chunk --------------------------------------------------
    def _member_loss(self, p: Any, b: Any, batch: Any, hp: Any) -> Any:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, (p, b), args, kwargs)

        loss, aux = split_loss(self.spec.loss(model, batch, hp))
        return loss, aux

    def _member_eval(self, p: Any, b: Any, hp: Any) -> Any:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, (p, b), args, kwargs)

        return {k: torch.as_tensor(v) for k, v in self.spec.evaluate(model, hp).items()}

    def _member_forward(self, p: Any, b: Any, *inputs: Any) -> Any:
        return functional_call(self.module, (p, b), inputs)

    def forward(self, params: Tensors, buffers: Tensors) -> Callable[..., Any]:
        """Every member's model on its own inputs (what ``Members.model`` runs)."""

        def run(*inputs: torch.Tensor) -> Any:
            return self._vforward(params, buffers, *inputs)

        return run

    # --- training ------------------------------------------------------------------------------
    def batch(
        self, chunk: Chunk, batch: Any, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward, backward and the optimiser step of one batch for every member of the chunk,
        in place (``params`` require grad); each member's loss and extra metrics."""
        params = chunk.params
        names = list(params)
        tensors = [params[n] for n in names]
        loss, aux = self._vloss(params, chunk.buffers, batch, chunk.hp)
        grads = torch.autograd.grad(loss.sum(), tensors, allow_unused=True)
        with torch.no_grad():
            grads_ = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
            optimizer_step(
                self.kind,
                self.spec.nesterov,
                tensors,
                grads_,
                [chunk.states[n] for n in names],
                chunk.opt_steps,
                chunk.opt_hp,
                mask,
            )
        return loss, aux

    def step(
        self,
        chunk: Chunk,
        generators: Sequence[torch.Generator],
        mask: torch.Tensor | None,
        steps: Sequence[int],
        shared_seeds: Sequence[int],
    ) -> dict[str, torch.Tensor]:
        """One training step (a pass over the step's batches, then the evaluation) for every
        member of the chunk, member ``i`` at its training step ``steps[i]`` with its own
        generator; each metric as a ``[k]`` float64 tensor."""
        k = chunk.opt_steps.shape[0]
        members = Members(
            k,
            chunk.hp,
            generators[0],
            self.forward(chunk.params, chunk.buffers),
            steps[0],
            generators=generators,
            steps=steps,
            shared_seeds=shared_seeds,
        )
        sums: dict[str, torch.Tensor] = {}
        count = 0
        self.module.train()
        for batch in self.spec.batches(members):
            loss, aux = self.batch(chunk, batch, mask)
            with torch.no_grad():
                for name, value in {"loss": loss, **aux}.items():
                    value = value.detach().to(torch.float64)
                    sums[name] = sums[name] + value if name in sums else value
            count += 1
        metrics = {n: v / max(count, 1) for n, v in sums.items()}
        evaluated: dict[str, torch.Tensor] = {}
        if type(self.spec).evaluate is not VectorizedTrainable.evaluate:
            self.module.eval()
            try:
                with torch.no_grad():
                    evaluated = self.evaluate(chunk.params, chunk.buffers, chunk.hp, k)
            finally:
                self.module.train()
        metrics.update({n: v.detach().to(torch.float64).reshape(k) for n, v in evaluated.items()})
        return metrics

    def evaluate(
        self, params: Tensors, buffers: Tensors, hp: Tensors, k: int
    ) -> dict[str, torch.Tensor]:
        """The trainable's ``evaluate`` for ``k`` members, ``evaluate_members`` per call
        (shared between the lanes training at once): evaluation data is often larger than a
        training batch, and its activations for every member at once would set the process's
        peak memory."""
        chunk = max(1, int(self.spec.evaluate_members or k) // self.sharing)
        parts: list[dict[str, torch.Tensor]] = []
        for a in range(0, k, chunk):
            b = min(k, a + chunk)
            part = self._veval(
                {n: v[a:b] for n, v in params.items()},
                {n: v[a:b] for n, v in buffers.items()},
                {n: v[a:b] for n, v in hp.items()},
            )
            parts.append({n: v.detach().to(torch.float64).reshape(b - a) for n, v in part.items()})
        return {n: torch.cat([p[n] for p in parts]) for n in parts[0]} if parts else {}
