"""What the Lightning and Transformers adapters share: the learning rate set under a running
scheduler, the random state, and the check that every explored key reaches something."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from hyperpop.torch import set_entry
from hyperpop.trainable import TrainableError

#: config keys that only seed a member (``TorchTrainable`` reads ``config["seed"]`` the same way)
SEED_KEY = "seed"


def subclass(cls: type, name: str, attrs: dict[str, Any]) -> Any:
    """A subclass of ``cls`` called ``name`` with the class attributes ``attrs`` (what the
    ``wrap`` factories return: a trainable class that worker processes can rebuild)."""
    made = type(name, (cls,), attrs)
    made.__qualname__ = name
    return made


def unwrap(obj: Any, attr: str) -> Any:
    """The object a wrapper holds (accelerate's ``AcceleratedOptimizer.optimizer``,
    ``AcceleratedScheduler.scheduler``), or ``obj`` itself."""
    inner = getattr(obj, attr, None)
    return obj if inner is None or inner is obj else inner


def set_learning_rate(optimizer: Any, lr: float, scheduler: Any = None) -> None:
    """Make ``lr`` the base learning rate of every parameter group, in place.

    Without a scheduler each group's ``lr`` becomes ``lr``. Under a scheduler the schedule keeps
    its position: its ``base_lrs`` (and the groups' ``initial_lr``) become ``lr`` and each group's
    current rate is ``lr`` times the schedule's current factor (``lr_lambda(last_epoch)`` for a
    ``LambdaLR``, else the group's current rate over its old base), so a warmup or decay goes on
    from where it was, scaled to the new value.
    """
    lr = float(lr)
    optimizer = unwrap(optimizer, "optimizer")
    sched = unwrap(scheduler, "scheduler") if scheduler is not None else None
    bases = list(getattr(sched, "base_lrs", []) or [])
    lambdas = getattr(sched, "lr_lambdas", None)
    for i, group in enumerate(optimizer.param_groups):
        factor = 1.0
        if isinstance(sched, torch.optim.lr_scheduler.LambdaLR) and lambdas:
            factor = float(lambdas[i](sched.last_epoch))
        elif i < len(bases) and float(bases[i]) > 0:
            factor = float(group["lr"]) / float(bases[i])
        set_entry(group, "lr", lr * factor)
        if "initial_lr" in group:
            group["initial_lr"] = lr
    if sched is not None and bases:
        sched.base_lrs = [lr for _ in bases]
    if sched is not None and hasattr(sched, "_last_lr"):
        sched._last_lr = [float(g["lr"]) for g in optimizer.param_groups]


def rng_state() -> dict[str, Any]:
    """torch's CPU random state (saved with a member so a restored member draws on as before)."""
    return {"torch": torch.get_rng_state()}


def load_rng_state(state: Mapping[str, Any] | None) -> None:
    """Restore what :func:`rng_state` returned (nothing if ``state`` is None)."""
    if state is not None and state.get("torch") is not None:
        torch.set_rng_state(state["torch"])


def seed(config: Mapping[str, Any], default: int | None) -> None:
    """``torch.manual_seed(config["seed"])``, else ``default`` (None: no seeding)."""
    value = config.get(SEED_KEY, default)
    if value is not None:
        torch.manual_seed(int(value))


def call_with_config(factory: Callable[..., Any], config: Mapping[str, Any]) -> Any:
    """Build an object from ``config``: a class gets the config keys its ``__init__`` accepts
    as keywords (all of them if it takes ``**kwargs``); any other callable gets ``config``."""
    if not isinstance(factory, type):
        return factory(dict(config))
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return factory(**config)
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return factory(**{k: v for k, v in config.items() if k in names})


def check_reached(
    config: Mapping[str, Any], reached: Iterable[str], *, owner: str, fixes: str
) -> None:
    """Raise when a config key reaches nothing that ``apply`` sets (it would be explored in name
    only: an exploit would copy the donor's value in the log but not in training).

    Args:
        config: the member's config.
        reached: the keys that something takes in place.
        owner: the trainable's name, for the message.
        fixes: what the user can do, for the message.
    """
    missing = sorted(set(config) - set(reached) - {SEED_KEY})
    if missing:
        raise TrainableError(
            f"{owner}: config key(s) {', '.join(repr(k) for k in missing)} reach nothing that "
            f"hyperpop can set in place after an exploit; {fixes}"
        )
