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

This module needs PyTorch; nothing in hyperpop's core imports it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

try:
    import torch
    from torch import nn
    from torch.func import functional_call, stack_module_state, vmap
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"hyperpop.vectorized needs PyTorch: pip install 'hyperpop[torch]' ({e})"
    ) from None

from hyperpop.trainable import Trainable, TrainableError

__all__ = [
    "OPTIMIZER_KEYS",
    "Members",
    "ShapeError",
    "StackedPopulation",
    "VectorizedTrainable",
    "dropout",
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

_OPTIMIZERS = ("sgd", "adam", "adamw")
_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2},
}
#: config keys that may differ between members without being tensors (used once, at setup)
_INIT_ONLY = ("seed",)


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


def _broadcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-member vector ``[K]`` shaped to broadcast against a stacked ``[K, ...]`` tensor."""
    return v.view((v.shape[0],) + (1,) * (like.dim() - 1))


class Members:
    """What :meth:`VectorizedTrainable.batches` sees: the members being trained together.

    Attributes:
        size: how many members (1 when a plain backend trains one member).
        hp: the per-member hyperparameters, each a tensor of shape ``[size]``.
        generator: the random generator for data order (seeded by hyperpop).
        step: the training step of the first member (for schedules in the data).
    """

    def __init__(
        self,
        size: int,
        hp: dict[str, torch.Tensor],
        generator: torch.Generator,
        forward: Callable[..., Any],
        step: int = 0,
    ):
        self.size, self.hp, self.generator, self.step = size, hp, generator, step
        self._forward = forward

    def model(self, *inputs: torch.Tensor) -> Any:
        """Run every member's model on its own inputs (leading dimension ``size``), no grad."""
        with torch.no_grad():
            return self._forward(*inputs)


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
        shuffle: ``"member"`` (each member its own data order) or ``"shared"`` (one order).
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
        k, g = members.size, members.generator
        device = tensors[0].device
        order: torch.Tensor | None = None
        pos = n
        for _ in range(count):
            if pos >= n:
                if self.shuffle == "shared":
                    order = torch.randperm(n, generator=g).to(device)
                else:
                    order = torch.argsort(torch.rand(k, n, generator=g), dim=1).to(device)
                pos = 0
            assert order is not None
            if self.shuffle == "shared":
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
                yield _tree_map(lambda t: t.to(self._device).expand(k, *t.shape), batch)
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
        if kind not in _OPTIMIZERS:
            raise TrainableError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        values = dict(_DEFAULTS[kind])
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
        self.opt = _torch_optimizer(self.optimizer, self.module, self.nesterov)
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
        g = torch.Generator().manual_seed(_step_seed(self._init_seed(self.config), self.steps))

        def forward(*inputs: torch.Tensor) -> Any:
            out = module(*(x[0] for x in inputs))
            return _tree_map(lambda t: t.unsqueeze(0), out)

        members = Members(1, hp1, g, forward, self.steps)
        sums: dict[str, float] = {}
        count = 0
        module.train()
        for batch in self.batches(members):
            one = _tree_map(lambda t: t[0], batch)
            loss, aux = _split(self.loss(module, one, hp))
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
        return StackedPopulation(self, config, device)


def _torch_optimizer(kind: str, module: nn.Module, nesterov: bool) -> torch.optim.Optimizer:
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
    raise TrainableError(f"optimizer must be one of {_OPTIMIZERS}, got {kind!r}")


def _group_template(kind: str, nesterov: bool) -> dict[str, Any]:
    common = {"maximize": False, "foreach": None, "differentiable": False, "fused": None}
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


def _split(out: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TrainableError("loss() must return a tensor or (tensor, {name: tensor})")
        return out[0], dict(out[1])
    return out, {}


def _tree_map(fn: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_tree_map(fn, v) for v in tree)
    return tree


def _step_seed(seed: int | None, step: int) -> int:
    return ((seed or 0) * 1_000_003 + step * 7919 + 17) % (2**62)


class StackedPopulation:
    """Every held member's parameters, buffers, optimiser state and hyperparameters, stacked.

    Slot ``i`` of every tensor belongs to one member. The vectorized backend decides which member
    lives in which slot; this class trains slots, copies slots into slots (an exploit), writes
    hyperparameters, and converts a slot to and from the plain trainable's state.
    """

    def __init__(
        self, spec: VectorizedTrainable, config: dict[str, Any], device: str | torch.device
    ):
        self.spec = spec
        self.device = torch.device(device)
        self.kind = spec.optimizer.lower()
        if self.kind not in _OPTIMIZERS:
            raise TrainableError(f"optimizer must be one of {_OPTIMIZERS}, got {spec.optimizer!r}")
        spec.config = dict(config)
        spec._device = self.device
        template = spec.build_model(dict(config)).to(self.device)
        self.module = template
        self.param_names = [n for n, _ in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.opt_keys = list(_DEFAULTS[self.kind])
        self.hp_keys = spec._hp_keys()
        self.state_names = ["momentum_buffer"] if self.kind == "sgd" else ["exp_avg", "exp_avg_sq"]
        # the param_groups entry of a torch.optim state_dict, for checkpoints the plain trainable
        # loads (written out: building a torch optimiser here would import torch._dynamo)
        self.group_template = _group_template(self.kind, spec.nesterov)
        self.size = 0
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.opt_steps = torch.zeros(0, dtype=torch.float64, device=self.device)
        self.hp: dict[str, torch.Tensor] = {}
        self.train_steps = torch.zeros(0, dtype=torch.long)
        self.shared = {k: v for k, v in config.items() if k not in self.per_member_keys()}
        self._vloss = vmap(self._member_loss, randomness="different")
        self._veval = vmap(self._member_eval, randomness="different")
        self._vforward = vmap(self._member_forward, randomness="different")

    def per_member_keys(self) -> set[str]:
        """Config keys that may differ between stacked members."""
        return set(OPTIMIZER_KEYS) | set(self.hp_keys) | set(_INIT_ONLY)

    def check_configs(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Refuse configs that differ from the first one in a key that is not per-member.

        Raises:
            ShapeError: naming the keys (e.g. ``batch_size``, a layer width).
        """
        per_member = self.per_member_keys()
        bad: dict[str, set[str]] = {}
        for config in configs:
            keys = (set(config) | set(self.shared)) - per_member
            for key in keys:
                if key not in config or key not in self.shared:
                    bad.setdefault(key, set()).add("missing")
                elif config[key] != self.shared[key]:
                    bad.setdefault(key, {repr(self.shared[key])}).add(repr(config[key]))
        if bad:
            detail = "; ".join(f"{k!r}: {', '.join(sorted(v))}" for k, v in sorted(bad.items()))
            raise ShapeError(
                f"the vectorized backend trains every member as one stacked model, so only "
                f"per-member numbers may differ between members: the optimiser's "
                f"{sorted(k for k, t in OPTIMIZER_KEYS.items() if t in self.opt_keys)} "
                f"and {type(self.spec).__name__}.hyperparameters {sorted(self.hp_keys)}. These "
                f"config keys differ between members: {detail}. Hyperparameters that change "
                "shapes (batch size, layer widths) cannot be stacked: make them constants in the "
                "space, list per-member numbers in `hyperparameters`, or use backend='local'"
            )

    # --- storage ---------------------------------------------------------------------------
    def grow(self, size: int) -> None:
        """Make room for at least ``size`` slots (new slots are zero until written)."""
        if size <= self.size:
            return
        new = size
        extra = new - self.size

        def pad(t: torch.Tensor) -> torch.Tensor:
            z = torch.zeros((extra,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
            return torch.cat([t, z])

        with torch.no_grad():
            if not self.params:
                params, buffers = stack_module_state([self.module])
                self.params = {k: v.detach()[:0].clone() for k, v in params.items()}
                self.buffers = {k: v.detach()[:0].clone() for k, v in buffers.items()}
                self.state = {
                    k: {s: torch.zeros_like(v) for s in self.state_names}
                    for k, v in self.params.items()
                }
                self.hp = {
                    k: torch.zeros(0, dtype=torch.float64, device=self.device)
                    for k in self.opt_keys + self.hp_keys
                }
            self.params = {k: pad(v) for k, v in self.params.items()}
            self.buffers = {k: pad(v) for k, v in self.buffers.items()}
            self.state = {k: {s: pad(v) for s, v in d.items()} for k, d in self.state.items()}
            self.hp = {k: pad(v) for k, v in self.hp.items()}
            self.opt_steps = pad(self.opt_steps)
            self.train_steps = pad(self.train_steps)
        self.size = new

    def fresh(self, slot: int, config: Mapping[str, Any]) -> None:
        """A newly initialised member in ``slot`` (seeded like the plain trainable's setup)."""
        seed = self.spec._init_seed(config)
        if seed is not None:
            torch.manual_seed(seed)
        module = self.spec.build_model(dict(config)).to(self.device)
        with torch.no_grad():
            for name, p in module.named_parameters():
                self.params[name][slot] = p
                for s in self.state_names:
                    self.state[name][s][slot] = 0
            for name, b in module.named_buffers():
                self.buffers[name][slot] = b
            self.opt_steps[slot] = 0
            self.train_steps[slot] = 0

    def set_config(self, slot: int, config: Mapping[str, Any]) -> None:
        """Write a member's hyperparameters into its slot of the hyperparameter tensors."""
        values = self.spec._optimizer_values(config)
        with torch.no_grad():
            for k in self.opt_keys:
                self.hp[k][slot] = values[k]
            for k in self.hp_keys:
                if k not in config:
                    raise TrainableError(f"hyperparameter {k!r} is not in the config {config}")
                self.hp[k][slot] = float(config[k])

    def copy(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Copy slots ``src`` into slots ``dst`` all at once (reads happen before writes)."""
        if not dst:
            return
        d = torch.tensor(list(dst), device=self.device)
        s = torch.tensor(list(src), device=self.device)
        with torch.no_grad():
            for t in self._all_tensors():
                t[d] = t[s]
            self.train_steps[d.cpu()] = self.train_steps[s.cpu()]

    def _all_tensors(self) -> list[torch.Tensor]:
        out = list(self.params.values()) + list(self.buffers.values())
        out += [v for d in self.state.values() for v in d.values()]
        out.append(self.opt_steps)
        return out

    def save(self, slot: int) -> dict[str, Any]:
        """The plain trainable's state of the member in ``slot`` (copies, not views)."""
        model = {}
        module_sd_names = list(self.module.state_dict().keys())
        stacked = {**self.params, **self.buffers}
        for name in module_sd_names:
            model[name] = stacked[name][slot].detach().clone().cpu()
        group = dict(self.group_template)
        values = {k: float(self.hp[k][slot]) for k in self.opt_keys}
        for k, v in values.items():
            if k in ("beta1", "beta2"):
                continue
            group[k] = v
        if "betas" in group:
            group["betas"] = (values["beta1"], values["beta2"])
        group["params"] = list(range(len(self.param_names)))
        state: dict[int, dict[str, Any]] = {}
        step = float(self.opt_steps[slot])
        # like torch.optim.SGD, no momentum buffers for a member without momentum
        if step > 0 and not (self.kind == "sgd" and values["momentum"] == 0):
            for i, name in enumerate(self.param_names):
                entry = {
                    s: self.state[name][s][slot].detach().clone().cpu() for s in self.state_names
                }
                if self.kind != "sgd":
                    entry = {"step": torch.tensor(step, dtype=torch.float32), **entry}
                state[i] = entry
        return {
            "model": model,
            "optimizer": {"state": state, "param_groups": [group]},
            "extra": {"steps": int(self.train_steps[slot])},
        }

    def load(self, slot: int, state: Mapping[str, Any]) -> None:
        """Write a plain trainable's state (from either backend) into ``slot``."""
        model = state["model"]
        opt = state["optimizer"]
        missing = [n for n in self.param_names + self.buffer_names if n not in model]
        if missing:
            raise TrainableError(f"the checkpoint's model lacks {missing[:5]}")
        with torch.no_grad():
            for name in self.param_names:
                self.params[name][slot] = model[name].to(self.device)
            for name in self.buffer_names:
                self.buffers[name][slot] = model[name].to(self.device)
            steps = 0.0
            for i, name in enumerate(self.param_names):
                entry = opt["state"].get(i, {})
                for s in self.state_names:
                    value = entry.get(s)
                    self.state[name][s][slot] = 0 if value is None else value.to(self.device)
                if "step" in entry:
                    steps = float(entry["step"])
            if self.kind == "sgd" and opt["state"]:
                steps = 1.0  # SGD records no step count; only "has stepped" matters
            self.opt_steps[slot] = steps
            self.train_steps[slot] = int(state.get("extra", {}).get("steps", 0))

    # --- training --------------------------------------------------------------------------
    def _member_loss(self, p: Any, b: Any, batch: Any, hp: Any) -> Any:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, (p, b), args, kwargs)

        loss, aux = _split(self.spec.loss(model, batch, hp))
        return loss, aux

    def _member_eval(self, p: Any, b: Any, hp: Any) -> Any:
        def model(*args: Any, **kwargs: Any) -> Any:
            return functional_call(self.module, (p, b), args, kwargs)

        return {k: torch.as_tensor(v) for k, v in self.spec.evaluate(model, hp).items()}

    def _member_forward(self, p: Any, b: Any, *inputs: Any) -> Any:
        return functional_call(self.module, (p, b), inputs)

    def train(
        self,
        slots: Sequence[int],
        steps: Sequence[int | None],
        seconds: Sequence[float | None],
        seed: int,
    ) -> list[list[dict[str, float]]]:
        """Train ``slots`` together: slot ``i`` for ``steps[i]`` steps (or ``seconds[i]``).

        ``seed`` (with the step) seeds the data order. Returns each slot's metrics, one dict per
        step trained.
        """
        k = len(slots)
        full = list(slots) == list(range(self.size))
        idx = torch.tensor(list(slots), device=self.device)
        with torch.no_grad():
            if full:
                params = self.params
                buffers = self.buffers
                state = self.state
                opt_steps = self.opt_steps
                hp_all = self.hp
            else:
                params = {n: v[idx] for n, v in self.params.items()}
                buffers = {n: v[idx] for n, v in self.buffers.items()}
                state = {n: {s: v[idx] for s, v in d.items()} for n, d in self.state.items()}
                opt_steps = self.opt_steps[idx]
                hp_all = {n: v[idx] for n, v in self.hp.items()}
        for v in params.values():
            v.requires_grad_(True)
        hp = {n: hp_all[n].to(torch.float32) for n in self.hp_keys}
        opt_hp = {n: hp_all[n] for n in self.opt_keys}
        reports: list[list[dict[str, float]]] = [[] for _ in range(k)]
        start = time.perf_counter()
        limit = [math.inf if s is None else int(s) for s in steps]
        deadline = [math.inf if s is None else float(s) for s in seconds]
        done = [False] * k
        step = 0
        first = int(self.train_steps[int(slots[0])]) if k else 0
        g = torch.Generator()
        try:
            while not all(done):
                active = torch.tensor([not d for d in done], device=self.device)
                mask = None if bool(active.all()) else active
                g.manual_seed(_step_seed(self.spec.seed, seed + step))
                metrics = self._one_step(
                    params, buffers, state, opt_steps, hp, opt_hp, g, mask, first + step
                )
                metrics_list = {n: v.tolist() for n, v in metrics.items()}
                step += 1
                elapsed = time.perf_counter() - start
                for i in range(k):
                    if done[i]:
                        continue
                    reports[i].append({n: float(v[i]) for n, v in metrics_list.items()})
                    if len(reports[i]) >= limit[i] or elapsed >= deadline[i]:
                        done[i] = True
        finally:
            for v in params.values():
                v.requires_grad_(False)
        with torch.no_grad():
            counts = torch.tensor([len(r) for r in reports], dtype=torch.long)
            if full:
                self.train_steps[: self.size] += counts
            else:
                for n, v in params.items():
                    self.params[n][idx] = v
                for n, v in buffers.items():
                    self.buffers[n][idx] = v
                for n, d in state.items():
                    for s, v in d.items():
                        self.state[n][s][idx] = v
                self.opt_steps[idx] = opt_steps
                self.train_steps[idx.cpu()] += counts
        return reports

    def _one_step(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        state: dict[str, dict[str, torch.Tensor]],
        opt_steps: torch.Tensor,
        hp: dict[str, torch.Tensor],
        opt_hp: dict[str, torch.Tensor],
        g: torch.Generator,
        mask: torch.Tensor | None,
        step: int,
    ) -> dict[str, torch.Tensor]:
        k = opt_steps.shape[0]
        names = list(params)
        tensors = [params[n] for n in names]

        def forward(*inputs: torch.Tensor) -> Any:
            return self._vforward(params, buffers, *inputs)

        members = Members(k, hp, g, forward, step)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        self.module.train()
        for batch in self.spec.batches(members):
            loss, aux = self._vloss(params, buffers, batch, hp)
            grads = torch.autograd.grad(loss.sum(), tensors, allow_unused=True)
            with torch.no_grad():
                grads_ = [
                    torch.zeros_like(t) if gr is None else gr for t, gr in zip(tensors, grads)
                ]
                self.step_optimizer(
                    tensors, grads_, [state[n] for n in names], opt_steps, opt_hp, mask
                )
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
                    evaluated = self._evaluate(params, buffers, hp, k)
            finally:
                self.module.train()
        metrics.update({n: v.detach().to(torch.float64).reshape(k) for n, v in evaluated.items()})
        return metrics

    # --- measuring (the backend's automatic chunk size) ------------------------------------
    def step_batches(self) -> int:
        """Batches in one training step: exact where hyperpop cuts :meth:`~VectorizedTrainable.data`
        into minibatches, ``batches_per_step`` (or 1) where :meth:`~VectorizedTrainable.batches`
        is the trainable's own."""
        spec = self.spec
        if spec.batches_per_step:
            return int(spec.batches_per_step)
        if type(spec).batches is not VectorizedTrainable.batches:
            return 1
        tensors = spec._tensors()
        if not isinstance(tensors[0], torch.Tensor):  # a loader
            try:
                return max(1, len(tensors[0]))
            except TypeError:
                return 1
        return max(1, math.ceil(tensors[0].shape[0] / int(spec.batch_size)))

    def measure(
        self, slots: Sequence[int], size: int, batches: int = 3, limit: float | None = None
    ) -> float:
        """Seconds per member and batch of training ``size`` members at once: the median of
        ``batches`` timed batches (drawing the batch, forward, backward and the optimiser step)
        after one untimed, on scratch copies of ``slots`` (repeated to fill ``size``).

        Nothing held changes, and the global random state is restored, so a run trains the
        same whatever was measured before it. ``limit``: stop after the batch that takes the
        measurement past this many seconds (the first batch's time counts if it is the only one).
        """
        times: list[float] = []

        def timed(step: Callable[[], None]) -> bool:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
            return limit is None or sum(times) < limit

        self._scratch_steps(slots, size, batches + 1, timed)
        kept = sorted(times[1:] or times)
        return kept[len(kept) // 2] / size

    def activation_bytes(self, slots: Sequence[int], size: int) -> int:
        """Bytes that one batch's forward keeps for the backward pass, per member, measured on
        ``size`` members at once (scratch copies of ``slots``, as :meth:`measure`)."""
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            try:
                storage = t.untyped_storage()
                seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # no plain storage (a tensor subclass)
                pass
            return t

        def hooked(step: Callable[[], None]) -> bool:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                step()
            return True

        self._scratch_steps(slots, size, 1, hooked)
        return sum(seen.values()) // max(size, 1)

    def _scratch_steps(
        self,
        slots: Sequence[int],
        size: int,
        count: int,
        wrap: Callable[[Callable[[], None]], bool],
    ) -> None:
        """Up to ``count`` training steps of one batch each on scratch copies of ``slots``, each
        run through ``wrap`` (False: stop there); the global random state is put back after."""
        if not slots:
            raise ValueError("measuring needs at least one slot to copy")
        idx = torch.tensor([slots[i % len(slots)] for i in range(size)], device=self.device)
        with torch.no_grad():
            params = {n: v[idx] for n, v in self.params.items()}
            buffers = {n: v[idx] for n, v in self.buffers.items()}
            state = {n: {s: v[idx] for s, v in d.items()} for n, d in self.state.items()}
            opt_steps = self.opt_steps[idx]
            hp = {n: self.hp[n][idx].to(torch.float32) for n in self.hp_keys}
            opt_hp = {n: self.hp[n][idx] for n in self.opt_keys}
        names = list(params)
        tensors = [params[n].requires_grad_(True) for n in names]
        states = [state[n] for n in names]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None

        def forward(*inputs: torch.Tensor) -> Any:
            return self._vforward(params, buffers, *inputs)

        members = Members(size, hp, torch.Generator().manual_seed(0), forward, 0)
        batches: Iterator[Any] = iter(())
        self.module.train()
        try:
            for _ in range(count):

                def step() -> None:
                    nonlocal batches
                    batch = next(batches, None)
                    if batch is None:  # the step's batches ran out: a new pass
                        batches = iter(self.spec.batches(members))
                        batch = next(batches)
                    loss, _ = self._vloss(params, buffers, batch, hp)
                    grads = torch.autograd.grad(loss.sum(), tensors, allow_unused=True)
                    with torch.no_grad():
                        grads_ = [
                            torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)
                        ]
                        self.step_optimizer(tensors, grads_, states, opt_steps, opt_hp)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)

                if not wrap(step):
                    break
        finally:
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state_all(cuda_rng)

    def _evaluate(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        hp: dict[str, torch.Tensor],
        k: int,
    ) -> dict[str, torch.Tensor]:
        # a few members per call: evaluation data is often larger than a training batch, and
        # its activations for every member at once would set the process's peak memory
        chunk = max(1, int(self.spec.evaluate_members or k))
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

    def step_optimizer(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        opt_steps: torch.Tensor,
        hp: dict[str, torch.Tensor],
        mask: torch.Tensor | None = None,
    ) -> None:
        """One optimiser step for every member at once, in place (``torch.optim`` semantics).

        ``hp`` holds per-member vectors ``[K]`` (float64); ``mask`` leaves members untouched.
        """
        with torch.no_grad():
            if mask is not None:
                old_steps = opt_steps.clone()
            opt_steps += 1
            if mask is not None:
                opt_steps.copy_(torch.where(mask, opt_steps, old_steps))
            lr = hp["lr"]
            wd = hp["weight_decay"]
            if self.kind == "sgd":
                mom = hp["momentum"]
                for p, gr, st in zip(params, grads, states):
                    dt = p.dtype
                    buf = st["momentum_buffer"]
                    d = gr + _broadcast(wd.to(dt), p) * p
                    new_buf = _broadcast(mom.to(dt), p) * buf + d
                    upd = d + _broadcast(mom.to(dt), p) * new_buf if self.spec.nesterov else new_buf
                    new_p = p - _broadcast(lr.to(dt), p) * upd
                    _write(buf, new_buf, mask)
                    _write(p, new_p, mask)
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
                if self.kind == "adamw":
                    x = p * _broadcast((1 - lr * wd).to(dt), p)
                    d = gr
                else:
                    d = gr + _broadcast(wd.to(dt), p) * p
                new_m = m + _broadcast((1 - b1).to(dt), p) * (d - m)
                new_v = v * _broadcast(b2.to(dt), p) + _broadcast((1 - b2).to(dt), p) * d * d
                denom = new_v.sqrt() / _broadcast(bc2_sqrt.to(dt), p) + _broadcast(eps.to(dt), p)
                new_p = x - _broadcast(step_size.to(dt), p) * new_m / denom
                _write(m, new_m, mask)
                _write(v, new_v, mask)
                _write(p, new_p, mask)


def _write(target: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> None:
    if mask is None:
        target.copy_(value)
    else:
        target.copy_(torch.where(_broadcast(mask, target), value, target))
