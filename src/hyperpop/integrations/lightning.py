"""PBT-train a PyTorch Lightning ``LightningModule`` with its ``Trainer`` under hyperpop.

Needs ``pip install "hyperpop[lightning]"``. The module works with ``lightning`` (``import
lightning.pytorch as L``) and with the older ``pytorch_lightning`` package.

>>> from hyperpop.integrations.lightning import LightningTrainable
>>> trainable = LightningTrainable.wrap(LitDigits, epochs=1)  # doctest: +SKIP
>>> hp.run(trainable, space, metric="val_acc", mode="max", budget=hp.Steps(20))  # doctest: +SKIP

How an interval runs: every ``train()`` call is one ``Trainer.fit`` of ``epochs`` epochs (or
``steps`` optimiser steps) that resumes from the member's last Lightning checkpoint, which is kept
in memory (a checkpoint-IO plugin, no files): weights, optimisers, LR schedulers, loop counters
and callback states come back exactly as Lightning restores them. Explored hyperparameters reach
training two ways: every config key the module (or data module) keeps in ``hparams`` is written
there before the fit (``configure_optimizers`` and the dataloaders read it), and, once the fit has
restored the optimiser, the learning rate, momentum, weight decay and friends are written into
every optimiser's ``param_groups`` in place, so a restored checkpoint never brings back the
donor's old values (ray#62173, ray#36660).

In a member of several processes (``processes_per_member=N``) the Trainer defaults to
``strategy="ddp"`` with ``devices=N`` over the processes hyperpop started (Lightning sees
``LOCAL_RANK`` and launches none); ``trainer_kwargs`` may name another strategy (e.g.
``"fsdp"``). Every rank keeps the fit's checkpoint; rank 0's is the member's.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from hyperpop.integrations import _common
from hyperpop.torch import (
    DEFAULT_MAPPING,
    GroupKey,
    apply_to_optimizer,
    reinitialize,
    shrink_perturb,
    to_cpu,
)
from hyperpop.trainable import Trainable, TrainableError

try:
    import lightning.pytorch  # noqa: F401 - the package a LightningModule most likely comes from
except ImportError as e:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        raise ImportError(
            f"hyperpop.integrations.lightning needs PyTorch Lightning: "
            f"pip install 'hyperpop[lightning]' ({e})"
        ) from None

__all__ = ["LightningTrainable"]

_KEY = "hyperpop://member"  # the in-memory checkpoint's name for the IO plugin

#: Trainer settings hyperpop uses unless ``trainer_kwargs`` says otherwise: quiet, no files, one
#: device (a worker trains one member; several devices would start a distributed run).
TRAINER_DEFAULTS: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
    "num_sanity_val_steps": 0,
    "devices": 1,
}


def group_defaults() -> dict[str, Any]:
    """Trainer settings in a member of several processes: Lightning's DDP over the group's
    processes (``WORLD_SIZE`` > 1), on CPUs or on the GPUs the member was given."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return {}
    return {
        "strategy": "ddp",
        "devices": int(os.environ.get("LOCAL_WORLD_SIZE", world)),
        "num_nodes": max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE", world))),
    }


@contextlib.contextmanager
def _group_env_kept() -> Iterator[None]:
    """Lightning's teardown deletes ``WORLD_SIZE`` (its own launcher set it); in a member of
    several processes hyperpop set it, and the next interval's fit needs it again."""
    kept = {k: os.environ[k] for k in ("WORLD_SIZE", "LOCAL_WORLD_SIZE") if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(kept)


_OWNED = ("max_epochs", "max_steps", "min_epochs", "min_steps", "max_time")

_NOISE = (  # warnings that say nothing to a PBT user
    r".*does not have many workers.*",
    r".*resuming from a checkpoint that ended before the epoch ended.*",
    r".*LeafSpec.*",
    r".*GPU available but not used.*",
    r".*is smaller than the logging interval.*",
)


def _package_of(module: Any) -> Any:
    """``lightning.pytorch`` or ``pytorch_lightning``: whichever ``module`` belongs to."""
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            pl = importlib.import_module(name)
        except ImportError:
            continue
        if isinstance(module, pl.LightningModule):
            return pl
    raise TrainableError(
        f"build() returned {type(module).__name__}, not a LightningModule; return the module "
        "(or (module, datamodule)) to train"
    )


@contextlib.contextmanager
def _quiet(pl: Any, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    names = [pl.__name__, "lightning.fabric", "lightning_fabric"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


_CLASSES: dict[str, tuple[type, type]] = {}


def _classes(pl: Any) -> tuple[type, type]:
    """The checkpoint-IO plugin and the hook callback, made once per Lightning package."""
    if pl.__name__ in _CLASSES:
        return _CLASSES[pl.__name__]
    io_base = importlib.import_module(pl.__name__ + ".plugins.io").CheckpointIO

    class MemoryCheckpointIO(io_base):  # type: ignore[misc, valid-type]
        """Checkpoints in a dict instead of files."""

        def __init__(self) -> None:
            super().__init__()
            self.store: dict[str, dict[str, Any]] = {}

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            self.store[str(path)] = checkpoint

        def load_checkpoint(self, path, map_location=None, weights_only=None):
            return self.store[str(path)]

        def remove_checkpoint(self, path):
            self.store.pop(str(path), None)

    class Hook(pl.Callback):
        """Applies the config once the fit has restored the optimisers; notes validations."""

        def __init__(self, owner: LightningTrainable) -> None:
            self.owner = owner
            self.validated_at: int | None = None

        def on_train_start(self, trainer, pl_module):
            self.owner._apply_to_optimizers(trainer)

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.validated_at = trainer.global_step

    _CLASSES[pl.__name__] = (MemoryCheckpointIO, Hook)
    return _CLASSES[pl.__name__]


def _overridden(obj: Any, name: str, base: type) -> bool:
    method = getattr(type(obj), name, None)
    return method is not None and method is not getattr(base, name, None)


def _float_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value.detach().cpu())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class LightningTrainable(Trainable):
    """A :class:`~hyperpop.Trainable` that trains a ``LightningModule`` with a ``Trainer``.

    Use :meth:`wrap` for a module class (or a function of the config) as it is, or subclass and
    override :meth:`build`. One ``train()`` call is ``interval_epochs`` epochs (or
    ``interval_steps`` optimiser steps) of ``Trainer.fit``, then a validation if the fit's last
    step was not validated; the metrics are the trainer's ``callback_metrics`` (what the module
    logged with ``self.log``) plus ``epoch`` and ``global_step``.

    Attributes:
        module_factory: the ``LightningModule`` class (called with the config keys its
            ``__init__`` accepts) or a function ``config -> module``.
        datamodule_factory: the same for a ``LightningDataModule``; None: the module has its
            own dataloaders.
        interval_epochs: epochs per interval (the default: 1).
        interval_steps: optimiser steps per interval instead of epochs.
        trainer_kwargs: ``Trainer`` arguments over :data:`TRAINER_DEFAULTS` (quiet, no logger, no
            checkpoint files, one device); ``max_epochs`` and friends are hyperpop's.
        mapping: config key -> ``param_groups`` key for the optimisers (None:
            :data:`hyperpop.torch.DEFAULT_MAPPING`).
        build_keys: config keys used only to build the module (never applied in place).
        seed: ``torch.manual_seed`` before :meth:`build`, ``config["seed"]`` if the config has one
            (None: no seeding).
        quiet: silence Lightning's info logs and its warnings that do not apply here.
    """

    module_factory: Callable[..., Any] | None = None
    datamodule_factory: Callable[..., Any] | None = None
    interval_epochs: int | None = None
    interval_steps: int | None = None
    trainer_kwargs: Mapping[str, Any] = {}
    mapping: Mapping[str, GroupKey] | None = None
    build_keys: tuple[str, ...] = ()
    seed: int | None = 0
    quiet: bool = True

    module: Any
    datamodule: Any
    trainer: Any = None

    @classmethod
    def wrap(
        cls,
        module: Callable[..., Any],
        *,
        datamodule: Callable[..., Any] | None = None,
        epochs: int | None = None,
        steps: int | None = None,
        trainer_kwargs: Mapping[str, Any] | None = None,
        mapping: Mapping[str, GroupKey] | None = None,
        build_keys: tuple[str, ...] = (),
        seed: int | None = 0,
        name: str | None = None,
    ) -> type[LightningTrainable]:
        """A trainable class for ``module`` (a ``LightningModule`` class or ``config -> module``).

        Args:
            module: the module class (gets the config keys its ``__init__`` accepts) or a function
                of the config that returns a module.
            datamodule: the same for a ``LightningDataModule`` (optional).
            epochs: epochs per interval (default 1).
            steps: optimiser steps per interval, instead of epochs.
            trainer_kwargs: extra ``Trainer`` arguments (e.g. ``{"accelerator": "cpu"}``).
            mapping: config key -> optimiser ``param_groups`` key.
            build_keys: config keys used only when building the module.
            seed: the default seed before each member is built.
            name: the class name (default: the module's name + ``"Trainable"``).

        Returns:
            A :class:`LightningTrainable` subclass to pass to ``hp.run``.
        """
        if not callable(module):
            raise TypeError(f"wrap() needs a LightningModule class or a function, got {module!r}")
        _check_interval(epochs, steps)
        _check_trainer_kwargs(trainer_kwargs or {})
        attrs = {
            "module_factory": staticmethod(module),
            "datamodule_factory": staticmethod(datamodule) if datamodule is not None else None,
            "interval_epochs": epochs,
            "interval_steps": steps,
            "trainer_kwargs": dict(trainer_kwargs or {}),
            "mapping": mapping,
            "build_keys": tuple(build_keys),
            "seed": seed,
        }
        return _common.subclass(
            cls, name or f"{getattr(module, '__name__', 'Lightning')}Trainable", attrs
        )

    # --- the hooks a subclass may override -----------------------------------------------------

    def build(self, config: dict[str, Any]) -> Any:
        """Create the module (and data module) for ``config``: ``module`` or
        ``(module, datamodule)``. The default calls the factories."""
        if self.module_factory is None:
            raise TrainableError(
                f"{type(self).__name__} has no module: use LightningTrainable.wrap(ModuleClass) "
                "or override build(config) to return the LightningModule"
            )
        module = _common.call_with_config(self.module_factory, config)
        if self.datamodule_factory is None:
            return module
        return module, _common.call_with_config(self.datamodule_factory, config)

    # --- the Trainable API ---------------------------------------------------------------------

    def setup(self, config: dict[str, Any]) -> None:
        """Seed, build the module, and apply the config."""
        _check_interval(self.interval_epochs, self.interval_steps)
        _check_trainer_kwargs(self.trainer_kwargs)
        _common.seed(config, self.seed)
        built = self.build(dict(config))
        self.module, self.datamodule = built if isinstance(built, tuple) else (built, None)
        self._pl = _package_of(self.module)
        self._io_class, self._hook_class = _classes(self._pl)
        self._ckpt: dict[str, Any] | None = None
        self._checked = False
        self.trainer = None
        self.apply(dict(config))

    def apply(self, config: dict[str, Any]) -> None:
        """Write ``config`` into the module's (and data module's) ``hparams``; the optimisers
        take it when the next fit has restored them (before its first step)."""
        self.config = dict(config)
        for target in (self.module, self.datamodule):
            hparams = getattr(target, "hparams", None)
            if hparams is None:
                continue
            for key, value in self.config.items():
                if key in hparams:
                    hparams[key] = value

    def train(self) -> dict[str, float]:
        """One interval: fit ``interval_epochs`` epochs (or ``interval_steps`` steps) from the
        member's last state, validate if the fit's last step was not, return the metrics."""
        ckpt = self._ckpt if self._ckpt is not None and "loops" in self._ckpt else None
        resumable = ckpt is not None
        epoch = int(ckpt.get("epoch", 0)) if ckpt is not None else 0
        step = int(ckpt.get("global_step", 0)) if ckpt is not None else 0
        kwargs = {**TRAINER_DEFAULTS, **group_defaults(), **self.trainer_kwargs}
        if self.interval_steps is not None:
            kwargs.update(max_steps=step + self.interval_steps, max_epochs=-1)
        else:
            kwargs.update(max_epochs=epoch + (self.interval_epochs or 1), max_steps=-1)
        io = self._io_class()
        hook = self._hook_class(self)
        kwargs["plugins"] = [*_as_list(kwargs.get("plugins")), io]
        kwargs["callbacks"] = [*_as_list(kwargs.get("callbacks")), hook]
        if ckpt is not None:
            ckpt["state_dict"] = self.module.state_dict()  # the module's weights win (reset, load)
            io.store[_KEY] = ckpt
        with _quiet(self._pl, self.quiet), _group_env_kept():
            self.trainer = trainer = self._pl.Trainer(**kwargs)
            trainer.fit(
                self.module, datamodule=self.datamodule, ckpt_path=_KEY if resumable else None
            )
            metrics = _float_metrics(trainer.callback_metrics)
            if hook.validated_at != trainer.global_step and self._validates():
                trainer.validate(self.module, datamodule=self.datamodule, verbose=False)
                metrics.update(_float_metrics(trainer.callback_metrics))
            trainer.save_checkpoint(_KEY)
        self._ckpt = io.store.pop(_KEY, None)
        if self._ckpt is None:  # a rank other than 0 of a group: Lightning wrote no checkpoint
            self._ckpt = trainer._checkpoint_connector.dump_checkpoint(False)
        metrics.update(epoch=float(trainer.current_epoch), global_step=float(trainer.global_step))
        return metrics

    def save(self) -> dict[str, Any]:
        """The member's Lightning checkpoint (weights, optimisers, schedulers, loops, callbacks)
        and torch's random state, with every tensor on the CPU (it loads on any device)."""
        state = dict(self._ckpt) if self._ckpt is not None else {}
        state["state_dict"] = self.module.state_dict()
        state["hyperpop_rng"] = _common.rng_state()
        return to_cpu(state)

    def load(self, state: Mapping[str, Any]) -> None:
        """Take a state from :meth:`save` (possibly another member's): the weights at once, the
        optimisers and schedulers when the next fit restores them; ``apply`` follows."""
        if not isinstance(state, Mapping) or "state_dict" not in state:
            raise TrainableError(
                "LightningTrainable.load() needs a state saved by LightningTrainable.save() "
                f"(a dict with 'state_dict'), got {type(state).__name__}"
            )
        self.module.load_state_dict(state["state_dict"])
        self._ckpt = {k: v for k, v in state.items() if k != "hyperpop_rng"}
        _common.load_rng_state(state.get("hyperpop_rng"))

    def reset(self, how: str) -> None:
        """Partial rejuvenation: ``"shrink_perturb"`` or ``"reinit:<module>,..."`` (as
        :class:`hyperpop.torch.TorchTrainable`); the optimisers' moments are dropped."""
        if how == "shrink_perturb":
            shrink_perturb(self.module)
        elif how.startswith("reinit:"):
            reinitialize(self.module, [n for n in how[len("reinit:") :].split(",") if n])
        else:
            raise ValueError(
                f"LightningTrainable.reset knows 'shrink_perturb' and 'reinit:<module>,...', "
                f"not {how!r}; override reset(how) for your own"
            )
        for opt_state in (self._ckpt or {}).get("optimizer_states", []):
            opt_state["state"] = {}

    def cleanup(self) -> None:
        """Drop the trainer and the checkpoint."""
        self.trainer = None
        self._ckpt = None

    # --- inside a fit ----------------------------------------------------------------------------

    def _apply_to_optimizers(self, trainer: Any) -> None:
        """Write the config into every optimiser (and keep its scheduler in step)."""
        mapping = DEFAULT_MAPPING if self.mapping is None else self.mapping
        lr_keys = [k for k, target in mapping.items() if target == "lr" and k in self.config]
        rest = {k: v for k, v in self.config.items() if k not in lr_keys}
        reached = set(self.build_keys)
        for target in (self.module, self.datamodule):
            reached |= set(getattr(target, "hparams", None) or ())
        for optimizer in trainer.optimizers:
            schedulers = [
                c.scheduler
                for c in trainer.lr_scheduler_configs
                if getattr(c.scheduler, "optimizer", None) is optimizer
            ]
            for key in lr_keys:
                _common.set_learning_rate(optimizer, self.config[key], *schedulers[:1])
            apply_to_optimizer(optimizer, rest, self.mapping)
            group = optimizer.param_groups[0]
            reached |= set(lr_keys)
            reached |= {
                k for k, t in mapping.items() if (t if isinstance(t, str) else t[0]) in group
            }
        if not self._checked:
            self._checked = True
            _common.check_reached(
                self.config,
                reached,
                owner=type(self).__name__,
                fixes="keep them in the module's hparams (call self.save_hyperparameters() in "
                "__init__ and read self.hparams), name them in build_keys if they only shape the "
                "model, or override apply(config) and extend build_keys",
            )

    def _validates(self) -> bool:
        pl = self._pl
        if not _overridden(self.module, "validation_step", pl.LightningModule):
            return False
        if _overridden(self.module, "val_dataloader", pl.LightningModule):
            return True
        dm = self.datamodule
        return dm is not None and _overridden(dm, "val_dataloader", pl.LightningDataModule)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_interval(epochs: int | None, steps: int | None) -> None:
    if epochs is not None and steps is not None:
        raise ValueError("give an interval in epochs or in steps, not both")
    for name, value in (("epochs", epochs), ("steps", steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"the interval's {name} must be a whole number >= 1, got {value!r}")


def _check_trainer_kwargs(kwargs: Mapping[str, Any]) -> None:
    owned = sorted(set(kwargs) & set(_OWNED))
    if owned:
        raise ValueError(
            f"trainer_kwargs sets {', '.join(owned)}: hyperpop decides how long each member "
            "trains (the interval is epochs= or steps=, the total is the run's budget); "
            "drop them"
        )
