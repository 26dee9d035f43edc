"""Vectorized versus local backend: the same PBT populations, wall time, peak memory, score.

Question: how much does training a population as one stacked model (``backend="vectorized"``)
save over the local backend's worker processes, for a small MLP and for the digits CNN?

Run (the full table takes about 15-25 minutes on 2 busy cores):

    python benchmarks/vectorized.py                    # mlp and cnn, populations 16 and 64
    python benchmarks/vectorized.py --tasks rl --seeds 1   # many CartPole policies as well
    python benchmarks/vectorized.py --smoke            # seconds: what CI runs (1 local worker)

Both backends run the same :class:`hyperpop.VectorizedTrainable` (so the same model, loss, data
and optimiser), the same population, steps, PBT settings and seed: ``local`` with 2 worker
processes of one thread each, ``vectorized`` in one process with its defaults: it chooses its
chunk size, how many chunks train at once (each in a thread of its own) and the threads itself
(``chunk``, ``par`` and ``threads`` show what each run chose, ``choose s`` what choosing took,
inside ``vector s``). Each run is its own child process; ``wall`` is
``hp.run`` from call to result inside it (``w/o start``: the speedup without the backend's start,
i.e. the local workers' spawn and imports), ``peak`` the largest sum of resident memory over the
child and its worker processes (sampled every 50 ms), ``score`` the best member's final score.
Each cell is the median over the seeds.

Tasks: ``mlp`` (digits flattened, a 64-64-10 MLP, SGD with momentum, one epoch per step),
``cnn`` (``examples/digits_vectorized.py``), ``rl`` (``examples/cartpole_vectorized.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine

ROOT = Path(__file__).resolve().parents[1]
#: (metric, steps, ready) per task
TASKS: dict[str, tuple[str, int, int]] = {
    "mlp": ("val_acc", 12, 4),
    "cnn": ("val_acc", 8, 4),
    "rl": ("return", 20, 5),
}
#: the vectorized backend's ``chunk_size`` per task (None: its own choice, the default)
CHUNKS: dict[str, int | None] = {"mlp": None, "cnn": None, "rl": None}


def _mlp_trainable() -> tuple[Any, dict[str, Any]]:
    from torch import nn
    from torch.nn import functional as F

    import hyperpop as hp

    load = example("digits_vectorized").data  # sent to worker processes by value

    class DigitsMLP(hp.VectorizedTrainable):
        """A 64-64-10 MLP on flattened digits, SGD with momentum; a step is an epoch."""

        optimizer = "sgd"
        batch_size = 32

        def build_model(self, config):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

        def data(self, config):
            d = load()
            return d["x_train"], d["y_train"]

        def loss(self, model, batch, hparams):
            x, y = batch
            return F.cross_entropy(model(x), y)

        def evaluate(self, model, hparams):
            d = load()
            return {"val_acc": (model(d["x_val"]).argmax(-1) == d["y_val"]).float().mean()}

    space = {"lr": hp.loguniform(1e-3, 0.5), "momentum": hp.uniform(0.0, 0.99)}
    return DigitsMLP, space


def _trainable(task: str) -> tuple[Any, dict[str, Any]]:
    if task == "mlp":
        return _mlp_trainable()
    module = example({"cnn": "digits_vectorized", "rl": "cartpole_vectorized"}[task])
    return module.trainable, module.space


def run_one(
    task: str,
    backend: str,
    population: int,
    steps: int,
    seed: int,
    chunk: int | None = None,
    local: tuple[int, int | None] = (2, None),
) -> dict[str, Any]:
    """One PBT run in this process; wall time, the best score and the settings that ran.
    ``local``: the local backend's worker processes and threads per worker (None: its own
    choice, cores / workers)."""
    import tempfile

    import hyperpop as hp
    from hyperpop.backends.local import LocalBackend
    from hyperpop.backends.vectorized import VectorizedBackend

    base = LocalBackend if backend == "local" else VectorizedBackend

    class Timed(base):  # type: ignore[valid-type,misc]
        started = 0.0

        def start(self, factory, checkpoints):
            t = time.perf_counter()
            super().start(factory, checkpoints)
            self.started = time.perf_counter() - t

    if backend == "local":
        workers, threads = local
        instance = Timed(workers, threads_per_worker=threads)
    else:  # None: the backend's own choice; 0: the whole population at once
        instance = Timed(chunk_size=chunk if chunk != 0 else population)
    trainable, space = _trainable(task)
    metric, _, ready = TASKS[task]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = hp.run(
            trainable,
            space,
            metric=metric,
            mode="max",
            population=population,
            budget=hp.Steps(steps),
            ready=ready,
            seed=seed,
            backend=instance,
            storage=os.path.join(tmp, "run.db"),
        )
        wall = time.perf_counter() - t0
    settings = {"workers": result.events[0].data["settings"]["workers"]}  # as the run recorded
    if backend == "vectorized":
        # what decides the memory: members trained at once, and per evaluate() call
        choice = instance.choice
        settings["chunk"] = min(choice.chunk_size, population)
        settings["evaluate_members"] = trainable.evaluate_members
        settings["threads"] = choice.threads
        settings["parallel"] = choice.parallel
        settings["choice"] = choice.describe()
        settings["choose_s"] = choice.seconds
    return {"wall": wall, "start": instance.started, "score": result.best.score, **settings}


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process below it (Linux ``/proc``)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(
    task: str,
    backend: str,
    population: int,
    steps: int,
    seed: int,
    chunk: int | None,
    local: tuple[int, int | None] = (2, None),
) -> dict[str, Any]:
    """:func:`run_one` in a child process, with its peak tree memory (MiB)."""
    cmd = [sys.executable, __file__, "--one", task, backend, str(population), str(steps)]
    cmd += [str(seed), "auto" if chunk is None else str(chunk)]
    cmd += ["--local-workers", str(local[0])]
    if local[1] is not None:
        cmd += ["--local-threads", str(local[1])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    out, err = proc.communicate()
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{task} {backend} failed (exit {proc.returncode}): {err[-3000:]}")
    return {**json.loads(lines[-1]), "peak_mib": peak / 2**20}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument(
        "--one", nargs=6, metavar=("TASK", "BACKEND", "POPULATION", "STEPS", "SEED", "CHUNK")
    )
    p.add_argument("--tasks", nargs="*", default=["mlp", "cnn"], choices=sorted(TASKS))
    p.add_argument("--populations", type=int, nargs="*", default=[16, 64])
    p.add_argument("--seeds", type=int, default=5, help="seeds per cell (median)")
    p.add_argument(
        "--chunk-size",
        type=int,
        help="the vectorized backend's chunk_size for every task (default: CHUNKS, per task, "
        "i.e. the backend's own choice; 0: the whole population)",
    )
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument(
        "--local-workers", type=int, default=2, help="the local backend's worker processes"
    )
    p.add_argument(
        "--local-threads",
        type=int,
        help="threads per local worker (default: the backend's choice, cores / workers)",
    )
    args = p.parse_args(argv)
    if args.one:
        task, backend, pop, steps, seed, chunk = args.one
        print(
            json.dumps(
                run_one(
                    task,
                    backend,
                    int(pop),
                    int(steps),
                    int(seed),
                    None if chunk == "auto" else int(chunk),
                    (args.local_workers, args.local_threads),
                )
            )
        )
        return []
    cases = [(t, n, TASKS[t][1]) for t in args.tasks for n in args.populations]
    seeds = list(range(args.seeds))
    local = (args.local_workers, args.local_threads)
    if args.smoke:
        # one local worker process (each imports PyTorch and scikit-learn), on one thread (a
        # lone worker's second thread only spins on a busy machine)
        cases, seeds, local = [("mlp", 4, 2)], [0], (1, 1)
    load_before = _load()
    rows = []
    for task, pop, steps in cases:
        chunk = CHUNKS[task] if args.chunk_size is None else args.chunk_size
        runs: dict[str, list[dict[str, Any]]] = {"local": [], "vectorized": []}
        for seed in seeds:
            for backend in ("local", "vectorized"):  # side by side, interleaved
                runs[backend].append(measure(task, backend, pop, steps, seed, chunk, local))
        vecs = runs["vectorized"]
        row: dict[str, Any] = {"task": task, "population": pop, "steps": steps}
        row["evaluate_members"] = vecs[0]["evaluate_members"]
        # what each vectorized run chose (they may differ: the threads are timed under load)
        row["chunks"] = [r["chunk"] for r in vecs]
        row["threads"] = [r["threads"] for r in vecs]
        row["parallels"] = [r["parallel"] for r in vecs]
        row["par"] = "/".join(str(p) for p in sorted(set(row["parallels"])))
        row["chunk"] = "/".join(str(c) for c in sorted(set(row["chunks"])))
        row["thread"] = "/".join(str(t) for t in sorted(set(row["threads"]), key=str))
        row["choices"] = [r["choice"] for r in vecs]
        row["choose_s"] = statistics.median(r["choose_s"] for r in vecs)
        row["recorded_workers"] = {b: rs[0]["workers"] for b, rs in runs.items()}
        for backend, rs in runs.items():
            row[backend] = {
                k: statistics.median(r[k] for r in rs)
                for k in ("wall", "start", "score", "peak_mib")
            }
            row[backend]["train"] = statistics.median(r["wall"] - r["start"] for r in rs)
            row[backend]["scores"] = [r["score"] for r in rs]
            row[backend]["walls"] = [r["wall"] for r in rs]
        rows.append(row)
        print(f"done {task} {pop} (load {_load()})", file=sys.stderr, flush=True)
    print(f"machine: {machine()}")
    print(f"load average before: {load_before}; after: {_load()}; seeds per cell: {len(seeds)}")
    print(
        f"settings: local = {local[0]} worker processes of {local[1] or 1} thread; "
        "vectorized = 1 process, `chunk` "
        "members trained at once, `par` chunks at a time, on `threads` threads (what the runs "
        "chose), evaluate() on "
        f"{rows[0]['evaluate_members'] if rows else '-'} members per call; recorded workers: "
        + ", ".join(
            f"{r['task']} {r['population']}: local {r['recorded_workers']['local']}, "
            f"vectorized {r['recorded_workers']['vectorized']}"
            for r in rows
        )
    )
    print(
        f"{'task':<5} {'pop':>4} {'chunk':>5} {'par':>3} {'threads':>7} {'choose s':>8} "
        f"{'steps':>5} "
        f"{'local s':>8} {'vector s':>8} {'speedup':>8} "
        f"{'w/o start':>9} {'local MiB':>9} {'vector MiB':>10} {'mem ratio':>9} "
        f"{'local score':>11} {'vector score':>12}"
    )
    for row in rows:
        loc, vec = row["local"], row["vectorized"]
        print(
            f"{row['task']:<5} {row['population']:>4} {row['chunk']:>5} {row['par']:>3} "
            f"{row['thread']:>7} "
            f"{row['choose_s']:>8.1f} {row['steps']:>5} "
            f"{loc['wall']:>8.1f} "
            f"{vec['wall']:>8.1f} {loc['wall'] / vec['wall']:>7.2f}x "
            f"{loc['train'] / vec['train']:>8.2f}x {loc['peak_mib']:>9.0f} "
            f"{vec['peak_mib']:>10.0f} {vec['peak_mib'] / loc['peak_mib']:>9.2f} "
            f"{loc['score']:>11.4f} {vec['score']:>12.4f}"
        )
    for row in rows:
        loc, vec = row["local"], row["vectorized"]
        per_seed = " ".join(f"{a / b:.2f}x" for a, b in zip(loc["walls"], vec["walls"]))
        print(
            f"{row['task']} {row['population']} per seed (local / vectorized s): "
            + " ".join(f"{w:.1f}" for w in loc["walls"])
            + " / "
            + " ".join(f"{w:.1f}" for w in vec["walls"])
            + f" ({per_seed})"
        )
        for choice in row["choices"]:
            print(f"{row['task']} {row['population']}: {choice}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
