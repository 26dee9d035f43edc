"""Side by side with Ray Tune's PopulationBasedTraining: wall time, peak memory, final score.

The same problem, the same PBT settings (truncation at quantile 0.25, perturb by 0.8/1.2, ready
every 4 steps, 2 trials at once: ``--workers``) through hyperpop and through Ray Tune
(``reuse_actors=True``):

* ``toy``: the PBT paper's toy problem (``examples/toy.py``), 200 steps, population 16 and 64;
* ``digits``: the digits CNN (``examples/digits.py``), population 8, 12 epochs.

Each measurement runs in its own process; peak memory is the largest sum of resident memory over
that process and all its children (Ray's GCS, raylet and workers included), sampled every 0.1 s.
Wall time counts from before ``ray.init()`` / ``hp.run()`` to the result. Needs ``ray[tune]``.

    python benchmarks/vs_ray_tune.py                       # toy 16 and 64, digits 8
    python benchmarks/vs_ray_tune.py --smoke               # tiny, for CI (1 trial at once)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, example, machine


def have_ray_tune() -> bool:
    try:
        import ray.tune  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or Ray's own complaint about missing deps
        return False
    return True


# --- hyperpop -----------------------------------------------------------------------------------
def run_hyperpop(problem: str, population: int, steps: int, workers: int = 2) -> dict:
    import hyperpop as hp

    mod = example(problem)
    space = (
        {"h0": hp.uniform(0.0, 1.0), "h1": hp.uniform(0.0, 1.0)} if problem == "toy" else mod.space
    )
    metric = "Q" if problem == "toy" else "val_acc"
    t0 = time.perf_counter()
    res = hp.run(
        mod.trainable,
        space,
        metric=metric,
        mode="max",
        population=population,
        workers=workers,
        budget=hp.Steps(steps),
        ready=4,
        exploit="truncation",
        explore="perturb",
        seed=0,
    )
    return {"wall": time.perf_counter() - t0, "score": res.best.score}


# --- Ray Tune -----------------------------------------------------------------------------------
def run_ray(problem: str, population: int, steps: int, workers: int = 2) -> dict:
    import numpy as np
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    mod = example(problem)

    if problem == "toy":

        class RayToy(tune.Trainable):
            def setup(self, config):
                self.theta = np.array([0.9, 0.9])
                self.h = np.array([config["h0"], config["h1"]])

            def step(self):
                self.theta = self.theta + 0.01 * (-2.0 * self.h * self.theta)
                return {"Q": 1.2 - float(np.sum(self.theta**2))}

            def save_checkpoint(self, d):
                np.save(os.path.join(d, "theta.npy"), self.theta)

            def load_checkpoint(self, d):
                self.theta = np.load(os.path.join(d, "theta.npy"))

            def reset_config(self, new_config):
                self.h = np.array([new_config["h0"], new_config["h1"]])
                return True

        trainable, metric = RayToy, "Q"
        space = {"h0": tune.uniform(0.0, 1.0), "h1": tune.uniform(0.0, 1.0)}
        mutations = dict(space)
    else:
        import torch
        from ray import cloudpickle as ray_cloudpickle

        # The example is loaded as a run file (module "hyperpop_runfile_digits"), which Ray's
        # workers cannot import; hyperpop registers it with cloudpickle, but Ray vendors its own
        # copy, so register it there too or every trial dies with ModuleNotFoundError.
        ray_cloudpickle.register_pickle_by_value(mod)

        class RayDigits(tune.Trainable):
            def setup(self, config):
                torch.set_num_threads(1)
                self.t = mod.Digits()
                self.t.setup(config)

            def step(self):
                return dict(self.t.train())

            def save_checkpoint(self, d):
                torch.save(self.t.save(), os.path.join(d, "state.pt"))

            def load_checkpoint(self, d):
                self.t.load(torch.load(os.path.join(d, "state.pt"), weights_only=False))
                self.t.apply(self.config)  # without this, Ray restores the donor's lr (ray#62173)

            def reset_config(self, new_config):
                self.t.setup(new_config)
                return True

        trainable, metric = RayDigits, "val_acc"
        space = {
            "lr": tune.loguniform(1e-3, 0.5),
            "momentum": tune.uniform(0.0, 0.99),
            "weight_decay": tune.loguniform(1e-6, 1e-2),
            "batch_size": tune.choice([16, 32, 64, 128]),
        }
        mutations = dict(space)

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    pbt = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=4,
        hyperparam_mutations=mutations,
        quantile_fraction=0.25,
        resample_probability=0.0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode="max",
                scheduler=pbt,
                num_samples=population,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                stop={"training_iteration": steps},
                storage_path=tmp,
                verbose=0,
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=4),
            ),
        )
        grid = tuner.fit()
        score = grid.get_best_result(metric=metric, mode="max", scope="last").metrics[metric]
    wall = time.perf_counter() - t0
    ray.shutdown()
    return {"wall": wall, "score": score}


# --- measurement ----------------------------------------------------------------------------------
def measure(
    framework: str,
    problem: str,
    population: int,
    steps: int,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> dict:
    """Run one measurement in a child process (``env``: added to its environment); add its
    peak tree memory (MiB)."""
    import psutil

    cmd = [sys.executable, __file__, "--one", framework, problem, str(population), str(steps)]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root] + root.children(recursive=True)
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} {problem} failed (exit {proc.returncode}): {out[-2000:]}")
    return {**json.loads(lines[-1]), "peak_mib": peak / 2**20}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--one", nargs=4, metavar=("FRAMEWORK", "PROBLEM", "POPULATION", "STEPS"))
    p.add_argument("--toy", type=int, nargs="*", default=[16, 64], help="toy populations")
    p.add_argument("--toy-steps", type=int, default=200)
    p.add_argument("--digits", type=int, nargs="*", default=[8], help="digits populations")
    p.add_argument("--digits-steps", type=int, default=12)
    p.add_argument("--workers", type=int, default=2, help="hyperpop workers / Ray trials at once")
    args = p.parse_args(argv)
    if args.one:
        fw, problem, pop, steps = args.one
        fn = run_hyperpop if fw == "hyperpop" else run_ray
        print(json.dumps(fn(problem, int(pop), int(steps), args.workers)))
        return []
    if not have_ray_tune():
        print("Ray Tune is not installed (pip install 'ray[tune]'): nothing to compare")
        return []
    cases = [("toy", n, args.toy_steps) for n in args.toy]
    cases += [("digits", n, args.digits_steps) for n in args.digits]
    env = None
    if args.smoke:
        # One worker / one Ray trial at a time: a Ray cluster of one CPU starts one actor and
        # one idle worker process, not two of each. Without Ray Tune's default result loggers
        # (CSV, JSON, TensorBoard): the TensorBoard one imports PyTorch into the driver.
        cases, args.workers = [("toy", 4, 8)], 1
        env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    rows = []
    for problem, pop, steps in cases:
        h = measure("hyperpop", problem, pop, steps, args.workers)
        r = measure("ray", problem, pop, steps, args.workers, env)
        rows.append(
            {"problem": problem, "population": pop, "steps": steps, "hyperpop": h, "ray": r}
        )
    print(f"machine: {machine()}")
    print(
        f"{'problem':<8} {'pop':>4} {'steps':>5} {'hyperpop s':>10} {'Ray Tune s':>10} "
        f"{'wall ratio':>10} {'hyperpop MiB':>12} {'Ray MiB':>8} {'mem ratio':>9} "
        f"{'hyperpop score':>14} {'Ray score':>9}"
    )
    for row in rows:
        h, r = row["hyperpop"], row["ray"]
        print(
            f"{row['problem']:<8} {row['population']:>4} {row['steps']:>5} {h['wall']:>10.1f} "
            f"{r['wall']:>10.1f} {r['wall'] / h['wall']:>9.1f}x {h['peak_mib']:>12.0f} "
            f"{r['peak_mib']:>8.0f} {r['peak_mib'] / h['peak_mib']:>8.1f}x {h['score']:>14.4f} "
            f"{r['score']:>9.4f}"
        )
    return rows


if __name__ == "__main__":
    main()
