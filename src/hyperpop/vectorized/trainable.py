"""What the user writes: :class:`VectorizedTrainable`, one member of a stacked population (its
model, its loss on a batch, its data, its optimiser), also an ordinary trainable that plain
backends run member by member with ``torch.optim``; :class:`Members`, what its ``batches`` sees;
and :func:`dropout` with a per-member probability."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hyperpop.trainable import Trainable, TrainableError
from hyperpop.vectorized.optim import (
    DEFAULTS,
    OPTIMIZER_KEYS,
    OPTIMIZERS,
    torch_optimizer,
)

if TYPE_CHECKING:
    from hyperpop.vectorized.engine import StackedPopulation

__all__ = ["Members", "ShapeError", "VectorizedTrainable", "dropout"]

#: config keys that may differ between members without being tensors (used once, at setup)
INIT_ONLY = ("seed",)


class ShapeError(TrainableError):
    """A hyperparameter that must be the same for every stacked member differs between them."""


def dropout(x: torch.Tensor, p: torch.Tensor | float, training: bool = True) -> torch.Tensor:
    """Dropout whose probability may be a per-member tensor (``F.dropout`` needs a float).

    Use it in a model's ``forward`` with ``p`` passed in from the loss (``model(x, hp["p"])``).
    """
    if not training:
        return x
    keep = 1.0 - p
    return x * (torch.rand_like(x) < keep).to(x.dtype) / keep


class Members:
    """What :meth:`VectorizedTrainable.batches` sees: the members being trained together.

    Attributes:
        size: how many members (1 when a plain backend trains one member).
        hp: the per-member hyperparameters, each a tensor of shape ``[size]``.
        generator: a random generator for the step (the first member's own in a stacked
            call). Draws of shape ``[size, ...]`` from it depend on which members train
            together, which a resumed asynchronous run changes: draw per member from
            :attr:`generators` where a resume must decide exactly as the uninterrupted run.
        generators: each member's own generator, seeded by hyperpop from the member (its id
            and its training step) only, never from the members beside it.
        step: the training step of the first member (for schedules in the data).
        steps: each member's training step.
    """

    def __init__(
        self,
        size: int,
        hp: dict[str, torch.Tensor],
        generator: torch.Generator,
        forward: Callable[..., Any],
        step: int = 0,
        *,
        generators: Sequence[torch.Generator] | None = None,
        steps: Sequence[int] | None = None,
        shared_seeds: Sequence[int] | None = None,
    ):
        self.size, self.hp, self.generator, self.step = size, hp, generator, step
        self.generators = list(generators) if generators is not None else [generator] * size
        self.steps = list(steps) if steps is not None else [step] * size
        #: per member, the seed of the data order that members at its step share (None: one
        #: order from :attr:`generator`)
        self.shared_seeds = None if shared_seeds is None else list(shared_seeds)
        self._own = generators is not None
        self._forward = forward

    def model(self, *inputs: torch.Tensor) -> Any:
        """Run every member's model on its own inputs (leading dimension ``size``), no grad."""
        with torch.no_grad():
            return self._forward(*inputs)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform draws of shape ``[size, *shape]``, row ``i`` from member ``i``'s own
        generator (the same whichever members train beside it)."""
        if not self._own:
            return torch.rand(self.size, *shape, generator=self.generator)
        return torch.stack([torch.rand(*shape, generator=g) for g in self.generators])

    def orders(self, n: int, shared: bool) -> Callable[[], torch.Tensor]:
        """Draws data orders of ``n`` rows, one pass each call: ``[n]`` where every member
        takes the same order, else ``[size, n]``, row ``i`` member ``i``'s. ``shared``: one
        order for the members at the same step (all of them when they are in step)."""
        if not shared:
            return lambda: torch.argsort(self.rand(n), dim=1)
        seeds = self.shared_seeds
        if seeds is None:
            return lambda: torch.randperm(n, generator=self.generator)
        gens = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(seeds)}
        if len(gens) == 1:
            (g,) = gens.values()
            return lambda: torch.randperm(n, generator=g)

        def per_step() -> torch.Tensor:
            perms = {s: torch.randperm(n, generator=g) for s, g in gens.items()}
            return torch.stack([perms[s] for s in seeds])

        return per_step


class VectorizedTrainable(Trainable):
    """One member of a population that the vectorized backend trains as one stacked model.

    Subclasses implement :meth:`build_model`, :meth:`loss` and either :meth:`data` (tensors that
    hyperpop cuts into minibatches) or :meth:`batches` (any per-member batches, e.g. rollouts);
    optionally :meth:`evaluate`. One training step (one report) is a pass over the step's batches
    followed by :meth:`evaluate`.

    Attributes:
        optimizer: ``"sgd"`` (momentum, weight decay, optional Nesterov), ``"adam"`` or
            ``"adamw"``; their hyperparameters come from the config (keys in
            :data:`OPTIMIZER_KEYS`: ``lr``, ``momentum``, ``weight_decay``, ``beta1``, ``beta2``,
            ``eps``) or :attr:`optimizer_defaults`.
        optimizer_defaults: values for optimiser hyperparameters the config leaves out.
        nesterov: Nesterov momentum for SGD (the same for every member).
        hyperparameters: further config keys handed to :meth:`loss`, :meth:`evaluate` and
            :meth:`batches` as per-member tensors (dropout probability, loss coefficients...).
            Every other config key must be the same for all members (it may change shapes).
        batch_size: rows per minibatch when hyperpop cuts :meth:`data`.
        batches_per_step: minibatches per training step (None: one pass over :meth:`data`).
        shuffle: ``"member"`` (each member its own data order) or ``"shared"`` (one order
            for the members at the same step).
        seed: seeds the initial weights (``config["seed"]`` wins) and the data order.
        evaluate_members: members per :meth:`evaluate` call (None: all at once); bounds the
            memory that evaluation activations take when the evaluation data is large (4:
            the digits CNN's 400 validation images cost about 50 MiB more than one member
            at a time, and evaluate as fast as 8).
    """

    optimizer: str = "sgd"
    optimizer_defaults: Mapping[str, float] = {}
    nesterov: bool = False
    hyperparameters: Sequence[str] = ()
    batch_size: int = 32
    batches_per_step: int | None = None
    shuffle: str = "member"
    seed: int | None = 0
    evaluate_members: int | None = 4
    _device: torch.device | str = "cpu"

    # --- what the user writes -------------------------------------------------------------
    def build_model(self, config: dict[str, Any]) -> nn.Module:
        """One member's model, freshly initialised (hyperpop seeds the RNG first)."""
        raise NotImplementedError("a VectorizedTrainable must implement build_model(config)")

    def data(self, config: dict[str, Any]) -> torch.Tensor | Sequence[torch.Tensor] | Any:
        """Training tensors with the same first dimension, cut into minibatches by hyperpop;
        or a re-iterable loader (e.g. a ``DataLoader``) whose batches every member shares."""
        raise NotImplementedError(
            "a VectorizedTrainable must implement data(config) -> tensors, or batches(members)"
        )

    def loss(
        self, model: Callable[..., Any], batch: Any, hp: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        """One member's scalar loss on one batch, optionally with extra metrics.

        Args:
            model: call it like the module (``model(x)``); it runs this member's parameters.
            batch: this member's batch (what :meth:`batches` yields, without the member dim).
            hp: this member's :attr:`hyperparameters` as 0-d tensors.

        Returns:
            The loss, or ``(loss, {"name": 0-d tensor})``: the metrics are averaged over the
            step's batches and reported beside ``loss``.
        """
        raise NotImplementedError("a VectorizedTrainable must implement loss(model, batch, hp)")

    def evaluate(
        self, model: Callable[..., Any], hp: Mapping[str, torch.Tensor]
    ) -> Mapping[str, torch.Tensor]:
        """Metrics after each step (the model is in eval mode, no grad); 0-d tensors."""
        return {}

    def batches(self, members: Members) -> Iterator[Any]:
        """The step's batches, each a tensor or tuple of tensors with a leading member dim.

        Default: minibatches of :attr:`batch_size` rows from :meth:`data`, one pass (or
        :attr:`batches_per_step` batches), in each member's own order or a shared one. Override
        it for generated data such as reinforcement-learning rollouts (``members.model(obs)``
        runs every member's policy).
        """
        tensors = self._tensors()
        if tensors and not isinstance(tensors[0], torch.Tensor):  # a loader: shared order
            yield from self._loader_batches(tensors[0], members.size)
            return
        n = tensors[0].shape[0]
        bs = int(self.batch_size)
        count = self.batches_per_step or math.ceil(n / bs)
        k = members.size
        device = tensors[0].device
        draw = members.orders(n, self.shuffle == "shared")
        order: torch.Tensor | None = None
        pos = n
        for _ in range(count):
            if pos >= n:
                order = draw().to(device)
                pos = 0
            assert order is not None
            if order.dim() == 1:  # one order for every member
                idx = order[pos : pos + bs]
                yield tuple(t[idx].expand(k, *t[idx].shape) for t in tensors)
            else:
                idx = order[:, pos : pos + bs]
                yield tuple(t[idx] for t in tensors)
            pos += bs

    # --- shared helpers -------------------------------------------------------------------
    def _loader_batches(self, loader: Any, k: int) -> Iterator[Any]:
        count = self.batches_per_step
        done = 0
        while count is None or done < count:
            for batch in loader:
                yield tree_map(lambda t: t.to(self._device).expand(k, *t.shape), batch)
                done += 1
                if count is not None and done >= count:
                    return
            if count is None:
                return
            if done == 0:
                raise TrainableError("the loader returned by data() yielded no batch")

    def _tensors(self) -> tuple[Any, ...]:
        cached = getattr(self, "_data_cache", None)
        if cached is None:
            d = self.data(self.config)
            if not isinstance(d, (torch.Tensor, tuple, list)):  # a loader (re-iterable)
                self._data_cache = (d,)
                return self._data_cache
            cached = (d,) if isinstance(d, torch.Tensor) else tuple(d)
            if not cached or any(t.shape[0] != cached[0].shape[0] for t in cached):
                raise TrainableError("data() must return tensors with the same first dimension")
            device = getattr(self, "_device", None)
            if device is not None:
                cached = tuple(t.to(device) for t in cached)
            self._data_cache = cached
        return cached

    def _optimizer_values(self, config: Mapping[str, Any]) -> dict[str, float]:
        kind = self.optimizer.lower()
        if kind not in OPTIMIZERS:
            raise TrainableError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        values = dict(DEFAULTS[kind])
        values.update({k: float(v) for k, v in self.optimizer_defaults.items()})
        for key, target in OPTIMIZER_KEYS.items():
            if key in config and target in values:
                values[target] = float(config[key])
        return values

    def _hp_keys(self) -> list[str]:
        return list(self.hyperparameters)

    def _init_seed(self, config: Mapping[str, Any]) -> int | None:
        seed = config.get("seed", self.seed)
        return None if seed is None else int(seed)

    # --- the plain Trainable (one member, torch.optim) --------------------------------------
    def setup(self, config: dict[str, Any]) -> None:
        """Build this member's model and a ``torch.optim`` optimiser (plain backends)."""
        self.config = dict(config)
        seed = self._init_seed(config)
        if seed is not None:
            torch.manual_seed(seed)
        self.module = self.build_model(self.config)
        self.opt = torch_optimizer(self.optimizer, self.module, self.nesterov)
        self.steps = 0
        self.apply(self.config)

    def apply(self, config: dict[str, Any]) -> None:
        """Write the optimiser hyperparameters into the ``torch.optim`` groups."""
        self.config = dict(config)
        values = self._optimizer_values(self.config)
        for group in self.opt.param_groups:
            for key, value in values.items():
                if key in ("beta1", "beta2"):
                    betas = list(group["betas"])
                    betas[0 if key == "beta1" else 1] = value
                    group["betas"] = tuple(betas)
                else:
                    group[key] = value

    def train(self) -> dict[str, float]:
        """One step for this member alone (the same code path as the stacked one, ``K = 1``)."""
        module = self.module
        hp = {k: torch.tensor(float(self.config[k])) for k in self._hp_keys()}
        hp1 = {k: v.unsqueeze(0) for k, v in hp.items()}
        g = torch.Generator().manual_seed(step_seed(self._init_seed(self.config), self.steps))

        def forward(*inputs: torch.Tensor) -> Any:
            out = module(*(x[0] for x in inputs))
            return tree_map(lambda t: t.unsqueeze(0), out)

        members = Members(1, hp1, g, forward, self.steps)
        sums: dict[str, float] = {}
        count = 0
        module.train()
        for batch in self.batches(members):
            one = tree_map(lambda t: t[0], batch)
            loss, aux = split_loss(self.loss(module, one, hp))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            count += 1
            for name, value in {"loss": loss, **aux}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        self.steps += 1
        metrics = {k: v / max(count, 1) for k, v in sums.items()}
        module.eval()
        with torch.no_grad():
            metrics.update({k: float(v) for k, v in self.evaluate(module, hp).items()})
        module.train()
        return metrics

    def save(self) -> dict[str, Any]:
        """``{"model": state_dict, "optimizer": state_dict, "extra": {"steps": n}}``, with the
        tensors on the CPU (as the vectorized backend saves a slot), so it loads anywhere."""
        model = self.module.state_dict()  # a fresh dict: its values may be replaced
        for name, value in model.items():
            model[name] = value.cpu()
        opt = self.opt.state_dict()  # its per-parameter dicts are the optimiser's own: copy
        opt["state"] = {
            i: {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
            for i, entry in opt["state"].items()
        }
        return {"model": model, "optimizer": opt, "extra": {"steps": self.steps}}

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by :meth:`save` or by the vectorized backend."""
        self.module.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.steps = int(state.get("extra", {}).get("steps", 0))

    # --- the stacked engine ------------------------------------------------------------------
    def stacked(
        self, config: dict[str, Any], device: str | torch.device = "cpu"
    ) -> StackedPopulation:
        """The engine the vectorized backend trains with (shapes taken from ``config``)."""
        from hyperpop.vectorized.engine import StackedPopulation

        return StackedPopulation(self, config, device)


def split_loss(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TrainableError("loss() must return a tensor or (tensor, {name: tensor})")
        return out[0], dict(out[1])
    return out, {}


def tree_map(fn: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return tree


def step_seed(seed: int | None, step: int) -> int:
    """The seed of a plain member's generator at ``step`` (and of the order that stacked
    members at ``step`` share)."""
    return ((seed or 0) * 1_000_003 + step * 7919 + 17) % (2**62)


def member_seed(seed: int | None, member: int, step: int) -> int:
    """The seed of stacked member ``member``'s own generator at its training step ``step``:
    a function of the member alone, not of the members trained beside it."""
    x = (step_seed(seed, step) + (member + 1) * 0x9E3779B97F4A7C15) % 2**64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % 2**64
    return (x ^ (x >> 31)) % (2**62)
