"""Run a hyperpop Trainable under Ray Tune's PopulationBasedTraining (for the benchmarks).

One generic adapter, not one class per problem: :func:`ray_trainable` wraps any
:class:`hyperpop.Trainable` subclass as a ``ray.tune.Trainable``

* ``setup(config)`` -> a fresh instance, ``setup(config)``;
* ``step()`` -> ``train()``;
* ``save_checkpoint(dir)`` / ``load_checkpoint(dir)`` -> ``save()`` / ``load(state)`` through a
  pickle file, then ``apply(self.config)``: Ray sets the new config before it restores the donor's
  checkpoint, and without this a restored optimiser brings back the donor's learning rate
  (ray#62173);
* ``reset_config(new_config)`` (``reuse_actors=True``) -> a fresh ``setup(new_config)``: Ray
  reuses an actor both for a new trial and for an exploit, and restores a checkpoint after it in
  the second case.

:func:`space_to_tune` translates a hyperpop search space, :func:`run_pbt` runs one PBT experiment
and returns the member Ray's best-result selection picks, with its saved state.
"""

from __future__ import annotations

import os
import pickle
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

_STATE = "state.pkl"


def have_ray_tune() -> bool:
    """Whether ``ray.tune`` imports (Ray may be installed without its Tune extras)."""
    try:
        import ray.tune  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or Ray's own complaint about missing deps
        return False
    return True


def space_to_tune(space: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hyperpop space as Ray Tune's ``(param_space, hyperparam_mutations)``.

    Floats become ``tune.uniform`` / ``tune.loguniform``, integers ``tune.randint`` /
    ``tune.lograndint``, choices ``tune.choice`` (and a list in the mutations, which Ray perturbs
    by moving to a neighbouring option); constants stay constants and are not mutated. Nested
    spaces keep their nesting.
    """
    from ray import tune

    from hyperpop.space import Choice, Constant, Float, Int, Space

    flat_space: dict[str, Any] = {}
    flat_mut: dict[str, Any] = {}
    for path, p in Space(space).parameters.items():
        if isinstance(p, Float):
            dom = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
            flat_space[path] = flat_mut[path] = dom
        elif isinstance(p, Int):
            dom = tune.lograndint(p.low, p.high + 1) if p.log else tune.randint(p.low, p.high + 1)
            flat_space[path] = flat_mut[path] = dom
        elif isinstance(p, Choice):
            flat_space[path] = tune.choice(list(p.options))
            flat_mut[path] = list(p.options)
        elif isinstance(p, Constant):
            flat_space[path] = p.value
        else:
            raise TypeError(f"no Ray Tune equivalent of parameter {path!r}: {p!r}")
    return _nest(flat_space), _nest(flat_mut)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        *outer, last = path.split("/")
        d = out
        for key in outer:
            d = d.setdefault(key, {})
        d[last] = value
    return out


def ray_trainable(cls: type, count_dir: str | None = None) -> type:
    """A ``ray.tune.Trainable`` class that runs the hyperpop Trainable class ``cls``.

    With ``count_dir`` (a folder on this machine: a local cluster), every ``step()`` appends one
    byte to a file there named by the worker's process id, so :func:`executed_steps` counts the
    steps Ray really ran, re-runs after a restore included.
    """
    from ray import tune

    class HyperpopTrainable(tune.Trainable):
        def setup(self, config):
            if "torch" in sys.modules:  # one thread per trial, as hyperpop's workers do
                sys.modules["torch"].set_num_threads(1)
            self._count = None
            if count_dir is not None:
                self._count = open(os.path.join(count_dir, str(os.getpid())), "ab", buffering=0)
            self._fresh(config)

        def _fresh(self, config):
            self.member = cls()
            self.member.setup(dict(config))

        def step(self):
            result = dict(self.member.train())
            if self._count is not None:
                self._count.write(b".")
            return result

        def save_checkpoint(self, checkpoint_dir):
            with open(os.path.join(checkpoint_dir, _STATE), "wb") as f:
                pickle.dump(self.member.save(), f, protocol=pickle.HIGHEST_PROTOCOL)

        def load_checkpoint(self, checkpoint):
            self.member.load(load_state(checkpoint))
            self.member.apply(dict(self.config))  # the new config wins over the restored one

        def reset_config(self, new_config):
            cleanup = getattr(self.member, "cleanup", None)
            if cleanup is not None:
                cleanup()
            self._fresh(new_config)
            self.config = dict(new_config)
            return True

        def cleanup(self):
            cleanup = getattr(self.member, "cleanup", None)
            if cleanup is not None:
                cleanup()
            if self._count is not None:
                self._count.close()

    HyperpopTrainable.__name__ = HyperpopTrainable.__qualname__ = f"Ray{cls.__name__}"
    return HyperpopTrainable


def executed_steps(count_dir: str) -> int:
    """The training steps counted in ``count_dir`` by :func:`ray_trainable`'s trials."""
    return sum(os.path.getsize(os.path.join(count_dir, f)) for f in os.listdir(count_dir))


def load_state(checkpoint_dir: str) -> Any:
    """The member state saved in a checkpoint directory written by :func:`ray_trainable`."""
    with open(os.path.join(checkpoint_dir, _STATE), "rb") as f:
        return pickle.load(f)


def start(num_cpus: int = 2) -> None:
    """``ray.init`` once per process (quietly), unless Ray is running in this process already
    (started here or by the caller): then its cluster is used."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False
        )


def register(*modules: ModuleType) -> None:
    """Let Ray's workers unpickle classes from modules they cannot import (run files, this one).

    hyperpop registers run files with ``cloudpickle`` for pickling by value, but Ray vendors its
    own copy, so without this every trial dies with ``ModuleNotFoundError``.
    """
    from ray import cloudpickle as ray_cloudpickle

    for mod in (sys.modules[__name__], *modules):
        ray_cloudpickle.register_pickle_by_value(mod)


def run_pbt(
    cls: type,
    space: Any,
    *,
    metric: str,
    mode: str,
    population: int,
    steps: int,
    ready: int,
    configs: Sequence[Mapping[str, Any]],
    seed: int,
    concurrent: int = 2,
    quantile: float = 0.25,
    factors: tuple[float, float] = (0.8, 1.2),
    resample_probability: float = 0.25,
    modules: Sequence[ModuleType] = (),
) -> dict[str, Any]:
    """One asynchronous PBT experiment of Ray Tune on the hyperpop Trainable ``cls``.

    The ``population`` trials start from ``configs`` (one each), train ``steps`` iterations,
    ``concurrent`` at a time, with ``reuse_actors=True`` and a checkpoint every ``ready``
    iterations (and at the end). Returns the best trial's last ``metric`` (Ray's
    ``get_best_result(scope="last")``, the same selection as hyperpop's), its saved state,
    the wall time (``ray.init`` excluded: it happens once per process), the number of
    exploits Ray's scheduler made and the training steps its trials executed.
    """
    import numpy as np
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if len(configs) != population:
        raise ValueError(f"{len(configs)} initial configs for a population of {population}")
    start(num_cpus=concurrent)
    register(*modules)
    param_space, mutations = space_to_tune(space)
    random.seed(seed)  # Ray's PBT draws its donors and perturbations from these
    np.random.seed(seed)
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=ready,
        hyperparam_mutations=mutations,
        quantile_fraction=quantile,
        resample_probability=resample_probability,
        perturbation_factors=tuple(factors),
        synch=False,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hyperpop-raytune-") as tmp:
        count_dir = os.path.join(tmp, "steps")
        os.mkdir(count_dir)
        tuner = tune.Tuner(
            ray_trainable(cls, count_dir),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                scheduler=pbt,
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[dict(c) for c in configs], random_state=seed
                ),
                num_samples=population,
                max_concurrent_trials=concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                stop={"training_iteration": steps},
                storage_path=tmp,
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=ready, checkpoint_at_end=True
                ),
            ),
        )
        grid = tuner.fit()
        errors = [r.error for r in grid if r.error is not None]
        if errors:
            raise RuntimeError(f"{len(errors)} Ray Tune trials failed; first: {errors[0]!r}")
        if len(grid) != population:
            raise RuntimeError(f"Ray Tune ran {len(grid)} trials, not {population}")
        # counted by the trials themselves: a trial's reported results (metrics_dataframe) miss
        # most of them, as Ray copies the trial's result file back from storage over the local
        # one whenever the trial starts again from a checkpoint (on deceptive, seed 0: 1,062
        # rows for 3,240 train() calls)
        executed = executed_steps(count_dir)
        best = grid.get_best_result(metric=metric, mode=mode, scope="last")
        with best.checkpoint.as_directory() as d:
            state = load_state(d)
    wall = time.perf_counter() - t0
    return {
        "score": float(best.metrics[metric]),
        "state": state,
        "wall": wall,
        "exploits": int(getattr(pbt, "_num_perturbations", -1)),
        "executed": executed,
    }
