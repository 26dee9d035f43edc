"""PBT-train a Hugging Face ``transformers.Trainer`` under hyperpop.

Needs ``pip install "hyperpop[transformers]"``.

>>> from hyperpop.integrations.transformers import TransformersTrainable
>>> trainable = TransformersTrainable.wrap(make_trainer, steps=50)  # doctest: +SKIP
>>> hp.run(trainable, space, metric="eval_loss", mode="min", budget=hp.Steps(20))  # doctest: +SKIP

How an interval runs: the member's ``Trainer.train()`` runs once, in a thread of the worker,
for the member's whole life; a callback pauses it every ``steps`` optimiser steps, right after a
log and an evaluation it asks for, and hands their metrics to hyperpop. While it is paused the
optimiser and the learning-rate scheduler are live objects: ``save`` reads their state dicts,
``load`` loads a donor's into them in place, and ``apply`` writes the explored learning rate,
weight decay, warmup, Adam betas and epsilon into the optimiser's ``param_groups`` and the
scheduler (the schedule keeps its position, scaled to the new rate), so nothing restored brings
back a donor's old values (ray#62173). ``TrainingArguments.max_steps`` is the length of the
learning-rate schedule: make it at least the run's budget times ``steps``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hyperpop.integrations import _common
from hyperpop.torch import reinitialize, set_entry, shrink_perturb, to_cpu
from hyperpop.trainable import Trainable, TrainableError

try:
    import transformers
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"hyperpop.integrations.transformers needs transformers: "
        f"pip install 'hyperpop[transformers]' ({e})"
    ) from None

try:
    from transformers.trainer_utils import SaveStrategy

    _SAVE_NO: Any = SaveStrategy.NO
except ImportError:  # pragma: no cover - transformers before 4.47
    from transformers.trainer_utils import IntervalStrategy

    _SAVE_NO = IntervalStrategy.NO

__all__ = ["APPLIED_KEYS", "TransformersTrainable"]

#: config keys applied in place, and the ``TrainingArguments`` field each one also sets
APPLIED_KEYS: dict[str, str] = {
    "learning_rate": "learning_rate",
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "warmup_steps": "warmup_steps",
    "warmup_ratio": "warmup_ratio",
    "adam_beta1": "adam_beta1",
    "adam_beta2": "adam_beta2",
    "adam_epsilon": "adam_epsilon",
    "max_grad_norm": "max_grad_norm",
}

_NOISY_METRICS = ("_runtime", "_per_second", "total_flos")


class _Stop(BaseException):
    """Raised inside the training thread to unwind ``Trainer.train()``."""


class _Session(TrainerCallback):
    """Runs ``trainer.train()`` in a thread that pauses every ``steps`` optimiser steps."""

    def __init__(self, owner: TransformersTrainable, steps: int):
        self.owner, self.steps = owner, steps
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._thread: threading.Thread | None = None
        self._result: tuple[str, Any] = ("none", None)
        self._stop = False
        self.started = False  # the optimiser and scheduler exist
        self.count = 0
        self.metrics: dict[str, float] = {}
        self.closing = False

    # --- the worker's side ---

    def step(self) -> dict[str, float]:
        if self._result[0] in ("error", "end"):
            raise TrainableError("this member's training has ended; set it up again")
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, daemon=True, name="hf-train")
            self._thread.start()
        self._go.release()
        self._done.acquire()
        kind, value = self._result
        if kind == "error":
            raise value
        if kind == "end":
            step = self.owner.trainer.state.global_step
            raise TrainableError(
                f"transformers.Trainer.train() finished at global step {step} (its max_steps); "
                "hyperpop decides when a member stops: set TrainingArguments(max_steps=...) to "
                "at least the run's budget times the interval's steps (it is also the length "
                "of the learning-rate schedule)"
            )
        return value

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stop = True
            self._go.release()
            self._thread.join(timeout=30)

    # --- the training thread's side ---

    def _main(self) -> None:
        self._go.acquire()
        if self._stop:
            return
        try:
            self.owner.trainer.train()
            self._result = ("end", None)
        except _Stop:
            return
        except BaseException as e:  # noqa: BLE001 - handed to the worker's thread
            self._result = ("error", e)
        self._done.release()

    def _pause(self) -> None:
        metrics, self.metrics, self.count, self.closing = self.metrics, {}, 0, False
        metrics["global_step"] = float(self.owner.trainer.state.global_step)
        self._result = ("report", metrics)
        self._done.release()
        self._go.acquire()
        if self._stop:
            raise _Stop

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = True
        self.owner._on_start()

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1
        if self.count >= self.steps:
            self.closing = True
            control.should_log = True
            control.should_evaluate = self.owner.trainer.eval_dataset is not None
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.closing:
            self.metrics.update(_floats(logs or {}))
            if not control.should_evaluate:
                self._pause()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.closing:
            self.metrics.update(_floats(metrics or {}))
            self._pause()


def _floats(logs: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        if any(key.endswith(s) for s in _NOISY_METRICS):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
    return out


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


class TransformersTrainable(Trainable):
    """A :class:`~hyperpop.Trainable` that trains a ``transformers.Trainer``.

    Use :meth:`wrap` with a function ``config -> Trainer`` (the code that builds your trainer,
    with the config's values in its ``TrainingArguments``), or subclass and override
    :meth:`build`. One ``train()`` call is ``interval_steps`` optimiser steps, then a log and
    (with an ``eval_dataset``) an evaluation; the metrics are their values: ``loss`` (the
    interval's mean training loss), ``grad_norm``, ``learning_rate``, ``eval_loss`` and the other
    ``eval_*`` metrics, ``epoch`` and ``global_step``.

    Config keys applied in place: :data:`APPLIED_KEYS`. Any other key must be in
    :attr:`build_keys` (used by :meth:`build` only, e.g. a layer count), or applied by your own
    :meth:`apply` (call ``super().apply(config)``, and list the key in ``build_keys``).

    Attributes:
        trainer_factory: ``config -> transformers.Trainer``.
        interval_steps: optimiser steps per interval.
        build_keys: config keys used only by :meth:`build`.
        seed: ``torch.manual_seed`` before :meth:`build`, ``config["seed"]`` if the config has
            one (None: no seeding).
        quiet: transformers' logging at error level and no printed logs while hyperpop trains.
        trainer_saves: keep the Trainer's own checkpoint saving (``save_strategy``); by default
            it is turned off: hyperpop keeps the checkpoints, and every member's trainer would
            write into the same ``output_dir``.
    """

    trainer_factory: Callable[[dict[str, Any]], Any] | None = None
    interval_steps: int = 50
    build_keys: tuple[str, ...] = ()
    seed: int | None = 0
    quiet: bool = True
    trainer_saves: bool = False

    trainer: Any = None

    @classmethod
    def wrap(
        cls,
        make_trainer: Callable[[dict[str, Any]], Any],
        *,
        steps: int = 50,
        build_keys: tuple[str, ...] = (),
        seed: int | None = 0,
        name: str | None = None,
    ) -> type[TransformersTrainable]:
        """A trainable class for ``make_trainer`` (``config -> transformers.Trainer``).

        Args:
            make_trainer: builds a member's trainer (model, ``TrainingArguments``, datasets).
            steps: optimiser steps per interval.
            build_keys: config keys used only when building (not applied in place).
            seed: the default seed before each member is built.
            name: the class name (default: the function's name + ``"Trainable"``).

        Returns:
            A :class:`TransformersTrainable` subclass to pass to ``hp.run``.
        """
        if not callable(make_trainer):
            raise TypeError(f"wrap() needs a function config -> Trainer, got {make_trainer!r}")
        _check_steps(steps)
        attrs = {
            "trainer_factory": staticmethod(make_trainer),
            "interval_steps": steps,
            "build_keys": tuple(build_keys),
            "seed": seed,
        }
        default = f"{getattr(make_trainer, '__name__', 'Transformers')}Trainable"
        return _common.subclass(cls, name or default, attrs)

    def build(self, config: dict[str, Any]) -> Any:
        """Create the member's ``transformers.Trainer`` for ``config``."""
        if self.trainer_factory is None:
            raise TrainableError(
                f"{type(self).__name__} has no trainer: use TransformersTrainable.wrap(fn) with "
                "fn(config) -> Trainer, or override build(config)"
            )
        return self.trainer_factory(config)

    # --- the Trainable API ---------------------------------------------------------------------

    def setup(self, config: dict[str, Any]) -> None:
        """Seed, build the trainer, and apply the config."""
        _check_steps(self.interval_steps)
        _common.check_reached(
            config,
            set(APPLIED_KEYS) | set(self.build_keys),
            owner=type(self).__name__,
            fixes=f"the keys applied in place are {', '.join(APPLIED_KEYS)}; name others in "
            "build_keys if build(config) uses them (e.g. the model's size), or override "
            "apply(config) to set them and name them in build_keys",
        )
        _common.seed(config, self.seed)
        with _quiet(self.quiet):
            trainer = self.build(dict(config))
        if not isinstance(trainer, transformers.Trainer):
            raise TrainableError(
                f"build() returned {type(trainer).__name__}, not a transformers.Trainer"
            )
        if self.quiet:
            for callback in (PrinterCallback, ProgressCallback):
                trainer.remove_callback(callback)
        if not self.trainer_saves:  # hyperpop keeps the checkpoints; members share output_dir
            trainer.args.save_strategy = _SAVE_NO
        self.trainer = trainer
        self._session = _Session(self, self.interval_steps)
        trainer.add_callback(self._session)
        self._pending: Mapping[str, Any] | None = None
        self.apply(dict(config))

    def apply(self, config: dict[str, Any]) -> None:
        """Write the config into ``TrainingArguments`` and, once training has started, into the
        optimiser's parameter groups and the scheduler, in place."""
        self.config = dict(config)
        args = self.trainer.args
        for key, field in APPLIED_KEYS.items():
            if key in self.config and hasattr(args, field):
                value = self.config[key]
                try:
                    setattr(args, field, value)
                except dataclasses.FrozenInstanceError:  # pragma: no cover - old versions
                    object.__setattr__(args, field, value)
        if self._session.started:
            self._apply_in_place()

    def train(self) -> dict[str, float]:
        """Run ``interval_steps`` optimiser steps; return the interval's logs and evaluation."""
        with _quiet(self.quiet):
            return self._session.step()

    def save(self) -> dict[str, Any]:
        """The model's, optimiser's and scheduler's state dicts, the global step, torch's random
        state (only the model before training has started), every tensor on the CPU."""
        trainer = self.trainer
        state: dict[str, Any] = {
            "model": trainer.model.state_dict(),
            "rng": _common.rng_state(),
        }
        if self._session.started:
            state["optimizer"] = trainer.optimizer.state_dict()
            if trainer.lr_scheduler is not None:
                state["scheduler"] = trainer.lr_scheduler.state_dict()
            state["global_step"] = int(trainer.state.global_step)
        elif self._pending is not None:  # loaded, not trained yet: keep what was loaded
            state.update({k: v for k, v in self._pending.items() if k not in state})
        return to_cpu(state)

    def load(self, state: Mapping[str, Any]) -> None:
        """Take a state from :meth:`save` (possibly another member's): the weights at once, the
        optimiser and scheduler now if training has started, else when it starts."""
        if not isinstance(state, Mapping) or "model" not in state:
            raise TrainableError(
                "TransformersTrainable.load() needs a state saved by "
                f"TransformersTrainable.save() (a dict with 'model'), got {type(state).__name__}"
            )
        self.trainer.model.load_state_dict(state["model"])
        _common.load_rng_state(state.get("rng"))
        self._pending = state
        if self._session.started:
            self._load_training_state()

    def reset(self, how: str) -> None:
        """Partial rejuvenation: ``"shrink_perturb"`` or ``"reinit:<module>,..."`` of the model
        (as :class:`hyperpop.torch.TorchTrainable`); the optimiser's moments are dropped."""
        model = self.trainer.model
        if how == "shrink_perturb":
            shrink_perturb(model)
        elif how.startswith("reinit:"):
            reinitialize(model, [n for n in how[len("reinit:") :].split(",") if n])
        else:
            raise ValueError(
                f"TransformersTrainable.reset knows 'shrink_perturb' and 'reinit:<module>,...', "
                f"not {how!r}; override reset(how) for your own"
            )
        if self._session.started:
            _common.unwrap(self.trainer.optimizer, "optimizer").state.clear()
        elif self._pending is not None:
            self._pending = {k: v for k, v in self._pending.items() if k != "optimizer"}

    def cleanup(self) -> None:
        """Stop the training thread."""
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()

    # --- in place ------------------------------------------------------------------------------

    def _on_start(self) -> None:
        """Training has begun: the optimiser and scheduler exist."""
        if self._pending is not None:
            self._load_training_state()
        self._apply_in_place()

    def _load_training_state(self) -> None:
        state, self._pending = self._pending, None
        trainer = self.trainer
        if state is None:
            return
        if "optimizer" in state:
            trainer.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state and trainer.lr_scheduler is not None:
            trainer.lr_scheduler.load_state_dict(state["scheduler"])
        if "global_step" in state:
            trainer.state.global_step = int(state["global_step"])
            if hasattr(trainer, "_globalstep_last_logged"):  # the next log averages from here
                trainer._globalstep_last_logged = trainer.state.global_step

    def _apply_in_place(self) -> None:
        config, trainer = self.config, self.trainer
        optimizer = _common.unwrap(trainer.optimizer, "optimizer")
        _set_schedule(optimizer, _common.unwrap(trainer.lr_scheduler, "scheduler"), config)
        if "weight_decay" in config:
            decay = _decay_groups(trainer, optimizer)
            for i, group in enumerate(optimizer.param_groups):
                if i in decay:
                    set_entry(group, "weight_decay", float(config["weight_decay"]))
        for key, (name, index) in _ADAM.items():
            if key in config:
                for group in optimizer.param_groups:
                    if name in group:
                        set_entry(group, name, float(config[key]), index)


#: the Adam settings a config may explore: the parameter group's entry each one sets, and
#: which item of it (None: the whole entry)
_ADAM: dict[str, tuple[str, int | None]] = {
    "adam_beta1": ("betas", 0),
    "adam_beta2": ("betas", 1),
    "adam_epsilon": ("eps", None),
}


def _set_schedule(optimizer: Any, scheduler: Any, config: Mapping[str, Any]) -> None:
    """The config's learning rate and warmup, in the optimiser and its scheduler."""
    warmup = "warmup_steps" in config or "warmup_ratio" in config
    if warmup:
        _set_warmup(scheduler, config)
    lr = config.get("learning_rate", config.get("lr"))
    if lr is not None:
        _common.set_learning_rate(optimizer, lr, scheduler)
    elif warmup:
        _common.set_learning_rate(optimizer, scheduler.base_lrs[0], scheduler)


def _decay_groups(trainer: Any, optimizer: Any) -> set[int]:
    """Indices of the parameter groups with weight decay (transformers leaves biases and norm
    weights without it)."""
    names = getattr(trainer, "get_decay_parameter_names", None)
    if names is None:  # pragma: no cover - old versions
        return {i for i, g in enumerate(optimizer.param_groups) if g.get("weight_decay", 0) > 0}
    model = trainer.model
    decay = {id(p) for n, p in model.named_parameters() if n in set(names(model))}
    return {
        i
        for i, g in enumerate(optimizer.param_groups)
        if g["params"] and id(g["params"][0]) in decay
    }


def _set_warmup(scheduler: Any, config: Mapping[str, Any]) -> None:
    """Give the scheduler's warmup its new length (transformers' schedules are ``LambdaLR``s of
    ``functools.partial``s with a ``num_warmup_steps`` keyword)."""
    lambdas = getattr(scheduler, "lr_lambdas", None) or []
    warm = [
        i
        for i, f in enumerate(lambdas)
        if isinstance(f, functools.partial) and "num_warmup_steps" in f.keywords
    ]
    if not warm:
        raise TrainableError(
            f"the config explores the warmup, but the learning-rate scheduler "
            f"({type(scheduler).__name__}) has none to set: use a transformers schedule with "
            "warmup (TrainingArguments(lr_scheduler_type='linear', 'cosine' or "
            "'constant_with_warmup'))"
        )
    for i in warm:
        f = lambdas[i]
        # as transformers reads it: warmup_steps below 1 (or warmup_ratio) is a fraction
        value = float(config.get("warmup_steps", config.get("warmup_ratio", 0.0)))
        if "warmup_steps" in config and value >= 1:
            steps = int(value)
        else:
            total = f.keywords.get("num_training_steps")
            if total is None:
                raise TrainableError(
                    "a warmup fraction needs a schedule with a length (num_training_steps); "
                    "explore warmup_steps as a number of steps instead"
                )
            steps = math.ceil(value * total)
        lambdas[i] = functools.partial(f.func, *f.args, **{**f.keywords, "num_warmup_steps": steps})


def _check_steps(steps: Any) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"the interval's steps must be a whole number >= 1, got {steps!r}")
