"""PyTorch helpers: save and load training state, apply new hyperparameters in place.

This module needs PyTorch (``pip install "hyperpop[torch]"``); nothing in hyperpop's core imports
it.

The pitfall it exists for (ray#62173): restoring an optimiser with ``load_state_dict`` also
restores the learning rate, momentum and so on stored in its ``param_groups``, silently undoing the
hyperparameters PBT just explored. hyperpop calls ``load(state)`` and **then** ``apply(config)``;
:func:`apply_to_optimizer` is what ``apply`` should call: it writes the new values into every
parameter group in place, leaving the optimiser's state (momentum buffers, Adam moments, step
counts) untouched.

>>> import hyperpop.torch as hpt
>>> hpt.apply_to_optimizer(optimizer, {"lr": 0.01, "momentum": 0.9})  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import numbers
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"hyperpop.torch needs PyTorch: pip install 'hyperpop[torch]' ({e})"
    ) from None

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from hyperpop.distributed import *  # noqa: F403 - DDP/FSDP in a member of several processes
from hyperpop.population.members import config_at
from hyperpop.trainable import Trainable

__all__ = [
    "DEFAULT_MAPPING",
    "ScheduleLR",
    "reinitialize",
    "shrink_perturb",
    "TorchTrainable",
    "apply_to_optimizer",
    "load_state",
    "minibatches",
    "save_state",
    "to_cpu",
]

#: Where a config key goes in a parameter group: a key, or ``(key, index)`` for one element of a
#: tuple-valued entry such as Adam's ``betas``.
GroupKey = str | tuple[str, int]

#: Config keys that :func:`apply_to_optimizer` maps by default (each only where the optimiser's
#: parameter groups have the entry: ``momentum`` is skipped for Adam, ``betas`` for SGD).
DEFAULT_MAPPING: dict[str, GroupKey] = {
    "lr": "lr",
    "learning_rate": "lr",
    "momentum": "momentum",
    "dampening": "dampening",
    "nesterov": "nesterov",
    "weight_decay": "weight_decay",
    "betas": "betas",
    "beta1": ("betas", 0),
    "beta2": ("betas", 1),
    "eps": "eps",
    "alpha": "alpha",
    "lr_decay": "lr_decay",
    "rho": "rho",
    "centered": "centered",
}


def set_entry(group: dict[str, Any], key: str, value: Any, index: int | None = None) -> None:
    """Set a parameter group's entry ``key`` (or item ``index`` of a tuple entry such as
    ``betas``) to ``value``, in place: a tensor entry keeps its tensor."""
    old = group[key]
    if index is not None:
        group[key] = (*old[:index], float(value), *old[index + 1 :])
    elif isinstance(old, torch.Tensor):
        # a tensor learning rate (capturable / compiled optimisers): keep the tensor, new value
        with torch.no_grad():
            old.fill_(float(value))
    else:
        group[key] = _plain(value, old)


def _plain(value: Any, old: Any) -> Any:
    # numpy scalars become Python numbers; a flag stays a flag
    if isinstance(old, bool):
        return bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def apply_to_optimizer(
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    mapping: Mapping[str, GroupKey] | None = None,
    *,
    scheduler: Any = None,
) -> dict[str, Any]:
    """Write hyperparameters from ``config`` into every parameter group of ``optimizer``.

    Only the groups' hyperparameter entries change; the optimiser's per-parameter state
    (momentum buffers, Adam's moments and step counts) is kept, so training continues where
    it was, with the new values.

    Args:
        optimizer: any ``torch.optim.Optimizer``.
        config: the member's config; keys that the mapping does not name are ignored.
        mapping: config key -> parameter-group key (or ``(key, index)`` for an element of a
            tuple such as ``betas``). Default: :data:`DEFAULT_MAPPING`, which skips entries
            an optimiser does not have. With an explicit mapping, a named config key that is
            present in ``config`` but missing from the groups is an error.
        scheduler: an LR scheduler to keep in step: its ``base_lrs`` and the groups'
            ``initial_lr`` take the new learning rate, so it scales from the new value.

    Returns:
        The values set, by parameter-group key (``{"lr": 0.01, "betas": (0.9, 0.99)}``).

    Raises:
        KeyError: an explicit mapping names a parameter-group entry the optimiser lacks.
    """
    strict = mapping is not None
    mapping = DEFAULT_MAPPING if mapping is None else mapping
    applied: dict[str, Any] = {}
    for name, target in mapping.items():
        if name not in config:
            continue
        value = config[name]
        key, index = (target, None) if isinstance(target, str) else target
        for group in optimizer.param_groups:
            if key not in group:
                if strict:
                    raise KeyError(
                        f"config key {name!r} maps to param_groups[...][{key!r}], which "
                        f"{type(optimizer).__name__} does not have (its entries: "
                        f"{sorted(k for k in group if k != 'params')})"
                    )
                break
            set_entry(group, key, value, index)
            applied[key] = group[key]
    if scheduler is not None and "lr" in applied:
        lr = applied["lr"]
        lr = float(lr) if isinstance(lr, torch.Tensor) else lr
        for group in optimizer.param_groups:
            if "initial_lr" in group:
                group["initial_lr"] = lr
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    return applied


def _state_of(obj: Any) -> Any:
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    return obj


def to_cpu(tree: Any) -> Any:
    """``tree`` with every tensor on another device (``cuda``, ``mps``...) copied to the CPU,
    so that a state saved anywhere loads anywhere, a CPU-only machine included.

    Dicts, lists and tuples are walked (rebuilt only where something moved: a state already on
    the CPU comes back as it is, with no copy); a module state dict keeps its ``_metadata``.
    ``load_state_dict`` puts the values back on the device of the model or optimiser that
    loads them.
    """
    if isinstance(tree, torch.Tensor):
        return tree if tree.device.type == "cpu" else tree.detach().cpu()
    if isinstance(tree, dict):
        items = {k: to_cpu(v) for k, v in tree.items()}
        if all(items[k] is v for k, v in tree.items()):
            return tree
        out = type(tree)(items) if type(tree) in (dict, OrderedDict) else dict(items)
        if hasattr(tree, "_metadata"):
            out._metadata = tree._metadata  # type: ignore[attr-defined]  # state dicts carry it
        return out
    if isinstance(tree, (list, tuple)):
        values = [to_cpu(v) for v in tree]
        if all(a is b for a, b in zip(values, tree)):
            return tree
        if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple
            return type(tree)(*values)
        return type(tree)(values) if type(tree) in (list, tuple) else list(values)
    return tree


def save_state(copy_tensors: bool = False, cpu: bool = True, **objects: Any) -> dict[str, Any]:
    """A picklable snapshot of models, optimisers, schedulers and plain values.

    Args:
        copy_tensors: deep-copy the result (needed only if the caller keeps it in memory
            while training goes on; hyperpop pickles the state right away, so the default
            skips the copy).
        cpu: move tensors on other devices to the CPU (:func:`to_cpu`), so the checkpoint
            loads on any machine, with or without that device.
        **objects: anything with ``state_dict()`` (stored as its state dict) or plain
            picklable values (stored as they are), by name.

    Returns:
        ``{name: state}``, to pass to :func:`load_state`.
    """
    state = {name: _state_of(obj) for name, obj in objects.items()}
    if cpu:
        state = to_cpu(state)
    return copy.deepcopy(state) if copy_tensors else state


def load_state(state: Mapping[str, Any], **objects: Any) -> dict[str, Any]:
    """Restore objects saved with :func:`save_state` (``load_state_dict`` on each, in place).

    Args:
        state: what :func:`save_state` returned.
        **objects: the live objects to restore, by the names they were saved under.

    Returns:
        The saved entries not restored into an object (plain values such as a step counter).

    Raises:
        KeyError: an object is named that the state does not hold.
    """
    for name, obj in objects.items():
        if name not in state:
            raise KeyError(f"the saved state has no {name!r} (it holds {sorted(state)})")
        obj.load_state_dict(state[name])
    return {k: v for k, v in state.items() if k not in objects}


def minibatches(
    *tensors: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Iterate over in-memory tensors in minibatches: a ``DataLoader`` over a ``TensorDataset``
    that indexes each batch at once instead of stacking rows.

    The batch size is read on every call, so it can change between intervals.

    Args:
        *tensors: tensors with the same first dimension.
        batch_size: rows per batch.
        shuffle: draw a random permutation first.
        generator: the random generator for the permutation (seed it for reproducibility;
            without one, torch's global generator seeds it).
        drop_last: skip a last, smaller batch.

    Returns:
        An iterator of tuples, one tensor per input tensor.

    Raises:
        ValueError: the tensors' first dimensions differ, or ``batch_size`` is below 1.
    """
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        sizes = [t.shape[0] for t in tensors]
        raise ValueError(f"minibatches() needs tensors with the same first dimension, got {sizes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = TensorDataset(*tensors)
    order = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
    # batch_size=None: the sampler yields whole index lists, the dataset slices each tensor
    # once per batch, and collate_fn=tuple hands its tuple on unchanged
    sampler = BatchSampler(order, batch_size, drop_last)
    return iter(DataLoader(data, sampler=sampler, batch_size=None, collate_fn=tuple))


def _fresh_parameters(module: torch.nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def reinitialize(model: torch.nn.Module, names: Sequence[str]) -> None:
    """Re-initialise the named submodules of ``model`` in place (``reset_parameters`` of each
    layer inside them), e.g. ``reinitialize(model, ["head"])`` for a fresh output layer.

    Raises:
        KeyError: a name is not a submodule of ``model``.
    """
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules:
            raise KeyError(
                f"{name!r} is not a submodule of the model; its submodules: "
                f"{', '.join(n for n in modules if n) or '(none)'}"
            )
        _fresh_parameters(modules[name])


@torch.no_grad()
def shrink_perturb(model: torch.nn.Module, shrink: float = 0.4, noise: float = 0.1) -> None:
    """Shrink and perturb (Ash & Adams, 2020) in place: every parameter becomes
    ``shrink * p + noise * fresh``, where ``fresh`` is a new initialisation of the same layer.
    Keeps much of what was learned while restoring the plasticity of a fresh model."""
    fresh = copy.deepcopy(model)
    _fresh_parameters(fresh)
    for p, q in zip(model.parameters(), fresh.parameters()):
        p.mul_(shrink).add_(q, alpha=noise)


class TorchTrainable(Trainable):
    """A :class:`~hyperpop.Trainable` for a PyTorch model and optimiser.

    Subclasses implement :meth:`build` (create ``self.model`` and ``self.optimizer``, and
    optionally ``self.scheduler``) and :meth:`train`. Saving, loading and applying new
    hyperparameters are done here: ``save`` stores the state dicts plus whatever
    :meth:`extra_state` returns, ``load`` restores them, and ``apply`` writes the config into the
    optimiser's parameter groups through :attr:`mapping` (after a load, so the new values win).

    Attributes:
        mapping: config key -> parameter-group key for :func:`apply_to_optimizer` (None: the
            default mapping).
        seed: ``torch.manual_seed`` before :meth:`build` is called with ``config["seed"]`` if
            the config has one, else this value (None: no seeding).
    """

    mapping: Mapping[str, GroupKey] | None = None
    seed: int | None = 0
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None

    def build(self, config: dict[str, Any]) -> None:
        """Create ``self.model`` and ``self.optimizer`` (and ``self.scheduler``) for ``config``."""
        raise NotImplementedError("a TorchTrainable must implement build(config)")

    def setup(self, config: dict[str, Any]) -> None:
        """Seed, build, and apply the config."""
        seed = config.get("seed", self.seed)
        if seed is not None:
            torch.manual_seed(int(seed))
        self.config = dict(config)
        self.steps = 0
        self.build(self.config)
        self.apply(self.config)

    def apply(self, config: dict[str, Any]) -> None:
        """Take new hyperparameters in place; the optimiser keeps its moments."""
        self.config = dict(config)
        apply_to_optimizer(self.optimizer, self.config, self.mapping, scheduler=self.scheduler)

    def extra_state(self) -> dict[str, Any]:
        """Plain values to save beside the state dicts (default: the step counter)."""
        return {"steps": self.steps}

    def load_extra_state(self, extra: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        self.steps = int(extra.get("steps", 0))

    def _objects(self) -> dict[str, Any]:
        objects: dict[str, Any] = {"model": self.model, "optimizer": self.optimizer}
        if self.scheduler is not None:
            objects["scheduler"] = self.scheduler
        return objects

    def save(self) -> dict[str, Any]:
        """State dicts of the model, optimiser (and scheduler), :meth:`extra_state`, and the
        random state (torch's CPU generator and every ``torch.Generator`` attribute), so that
        a member restored from its checkpoint trains on exactly as it would have in memory.
        Tensors are saved on the CPU (:func:`to_cpu`): a state trained on a GPU loads on any
        device, and :meth:`load` puts it back on the model's."""
        return save_state(**self._objects(), extra=self.extra_state(), rng=self._rng_state())

    def load(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`save` (``apply`` follows and sets the hyperparameters)."""
        rest = load_state(state, **self._objects())
        self.load_extra_state(rest.get("extra", {}))
        if rest.get("rng") is not None:
            self._load_rng_state(rest["rng"])

    def reset(self, how: str) -> None:
        """Partial rejuvenation: ``"shrink_perturb"`` (:func:`shrink_perturb` of the model),
        or ``"reinit:<module>,<module>"`` (:func:`reinitialize` those submodules). The
        optimiser's state for the reset parameters is dropped."""
        if how == "shrink_perturb":
            shrink_perturb(self.model)
        elif how.startswith("reinit:"):
            reinitialize(self.model, [n for n in how[len("reinit:") :].split(",") if n])
        else:
            raise ValueError(
                f"TorchTrainable.reset knows 'shrink_perturb' and 'reinit:<module>,...', "
                f"not {how!r}; override reset(how) for your own"
            )
        self.optimizer.state.clear()

    def _rng_state(self) -> dict[str, Any]:
        generators = {
            name: g.get_state() for name, g in vars(self).items() if isinstance(g, torch.Generator)
        }
        return {"torch": torch.get_rng_state(), "generators": generators}

    def _load_rng_state(self, rng: Mapping[str, Any]) -> None:
        torch.set_rng_state(rng["torch"].cpu())  # a state decoded onto a GPU: back on the CPU
        for name, g_state in rng.get("generators", {}).items():
            g = getattr(self, name, None)
            if isinstance(g, torch.Generator):
                g.set_state(g_state.cpu())


def _config_fn(schedule: Any) -> Any:
    """``step -> config`` from a recorded schedule: a ``MemberResult``, its ``schedule`` list
    (``{"step", "config"}`` entries, each holding from its step on), or such a function."""
    if callable(schedule):
        return schedule
    entries = getattr(schedule, "schedule", schedule)
    entries = sorted(({"step": int(e["step"]), "config": e["config"]} for e in entries),
                     key=lambda e: e["step"])  # fmt: skip
    if not entries:
        raise ValueError("the schedule is empty: pass a member's recorded schedule")
    return functools.partial(config_at, entries)


def _lookup(config: Mapping[str, Any], path: str) -> Any:
    value: Any = config
    for part in path.split("/"):
        value = value[part]
    return value


class ScheduleLR(torch.optim.lr_scheduler.LRScheduler):
    """A learning-rate scheduler that follows a schedule recorded by PBT, in a plain training
    loop with no hyperpop in it.

    Call ``scheduler.step()`` once per hyperpop training step (once per ``train()`` call of the
    run, e.g. once per epoch): before the first call the optimiser trains with the schedule's
    values for step 1, after ``k`` calls with those for step ``k + 1``.

    Args:
        optimizer: the optimiser to drive.
        schedule: ``result.best`` (a ``MemberResult``), its ``schedule`` list, or a function
            ``step -> config`` such as ``result.best.config_at``.
        lr: where the learning rate is in a config (``"/"`` for nested keys, e.g.
            ``"opt/lr"``).
        others: other parameter-group entries to follow, as ``{group key: config path}``,
            e.g. ``{"momentum": "momentum", "weight_decay": "weight_decay"}``.

    Example:
        >>> sched = ScheduleLR(opt, result.best, others={"momentum": "momentum"})  # doctest: +SKIP
        >>> for epoch in range(result.best.step):  # doctest: +SKIP
        ...     train_one_epoch(model, opt)
        ...     sched.step()
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Any,
        *,
        lr: str = "lr",
        others: Mapping[str, str] | None = None,
        last_epoch: int = -1,
    ):
        self.config_at = _config_fn(schedule)
        self.lr_path = lr
        self.others = dict(others or {})
        try:
            _lookup(self.config_at(1), lr)
        except (KeyError, TypeError):
            raise KeyError(
                f"the schedule's configs have no {lr!r}; pass lr= the path of the learning "
                "rate (e.g. 'opt/lr')"
            ) from None
        super().__init__(optimizer, last_epoch)

    def config(self) -> dict[str, Any]:
        """The config the schedule holds for the step about to be trained."""
        return self.config_at(self.last_epoch + 1)

    def get_lr(self) -> list[float | torch.Tensor]:  # LRScheduler's hook
        config = self.config()
        for group in self.optimizer.param_groups:
            for key, path in self.others.items():
                set_entry(group, key, _lookup(config, path))
        return [float(_lookup(config, self.lr_path))] * len(self.optimizer.param_groups)
