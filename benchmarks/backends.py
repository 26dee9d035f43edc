"""Local versus Ray backend: the same runs on both, wall time and overhead side by side.

Question: what does running on Ray cost over the local backend on one machine, and which way
should member state travel between Ray actors (object store or shared storage) at which size?

Run (each part a few minutes on 2 cores):

    python benchmarks/backends.py              # both tables
    python benchmarks/backends.py --smoke      # seconds: what CI runs

Table 1 runs the toy problem and a PyTorch MLP on scikit-learn's digits with each backend.
``wall`` is the run from ``hp.run`` to its result (the Ray cluster is started once before, its
start time is printed apart); ``user`` is time inside the trainable summed over workers;
``overhead`` is ``wall - user / workers``: what the backend, the driver and the store add.

Table 3 splits the start of a Ray run (from the process's launch, or from ``hp.run`` in a
process that already ran one, until the first task is sent) into Ray's part (importing Ray,
``ray.init``, placing and starting the actors) and hyperpop's own (everything else: importing
hyperpop, in the driver and in each new actor, opening the store, pickling the trainable, loading
it in the actors), for: a new process that starts its own Ray; a new process joining a running
Ray session (``address=``, as ``hyperpop run --address auto`` after ``ray start --head``); the
same process again with new actors; and with the actors kept warm (``keep_actors=True``).

Table 2 moves a member's state of a given size between two actors on every interval
(``cache_size=0``: every task reloads) through each path, and reports the median time between a
member's consecutive intervals (save, hand over, durable copy, load; actor start excluded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import hyperpop as hp

ROOT = Path(__file__).resolve().parents[1]


class DigitsMLP(hp.Trainable):
    """A small MLP on scikit-learn's digits (one epoch per step), in plain PyTorch."""

    def setup(self, config):
        import torch
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        torch.manual_seed(config["seed"])
        x, y = load_digits(return_X_y=True)
        xt, xv, yt, yv = train_test_split(x / 16.0, y, test_size=0.25, random_state=0)
        f = torch.float32
        self.xt, self.yt = torch.tensor(xt, dtype=f), torch.tensor(yt)
        self.xv, self.yv = torch.tensor(xv, dtype=f), torch.tensor(yv)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=config["lr"], momentum=0.9)
        self.gen = torch.Generator().manual_seed(config["seed"])

    def apply(self, config):
        for g in self.opt.param_groups:
            g["lr"] = config["lr"]

    def train(self):
        import torch

        self.model.train()
        perm = torch.randperm(len(self.xt), generator=self.gen)
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            self.opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.model(self.xt[idx]), self.yt[idx])
            loss.backward()
            self.opt.step()
        self.model.eval()
        with torch.no_grad():
            acc = (self.model(self.xv).argmax(1) == self.yv).float().mean().item()
        return {"val_acc": acc, "loss": loss.item()}

    def save(self):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load(self, state):
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])


class Blob(hp.Trainable):
    """A member whose state is ``config['size']`` bytes; training is free."""

    def setup(self, config):
        self.state = np.zeros(int(config["size"]), dtype=np.uint8)
        self.n = 0

    def apply(self, config):
        pass

    def train(self):
        self.n += 1
        return {"score": float(self.n)}

    def save(self):
        return {"n": self.n, "state": self.state}

    def load(self, state):
        self.n, self.state = state["n"], state["state"]


def _runs(smoke: bool) -> list[tuple[str, Any, dict, dict]]:
    sys.path.insert(0, str(ROOT / "examples"))
    import toy

    toy_kw = {k: v for k, v in toy.settings.items() if k != "storage"}
    if smoke:
        toy_kw["budget"] = hp.Steps(20)
    out = [("toy", toy.Toy, toy.space, toy_kw)]
    if not smoke:
        space = {"lr": hp.loguniform(1e-3, 0.3), "seed": hp.randint(0, 1000)}
        kw = dict(metric="val_acc", population=8, workers=2, budget=hp.Steps(8), ready=2, seed=0)
        out.append(("digits", DigitsMLP, space, kw))
    return out


def backends_table(smoke: bool) -> list[str]:
    """Table 1: each run on each backend."""
    rows = [
        "| run | backend | workers | wall (s) | user (s) | overhead (s) | overhead % | best |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, trainable, space, kw in _runs(smoke):
        for backend in ("local", "ray"):
            t0 = time.perf_counter()
            res = hp.run(trainable, space, backend=backend, **kw)
            wall = time.perf_counter() - t0
            user = res.overhead["user_seconds"]
            workers = kw["workers"]
            over = wall - user / workers
            rows.append(
                f"| {name} | {backend} | {workers} | {wall:.2f} | {user:.2f} | {over:.2f} | "
                f"{100 * over / wall:.0f}% | {res.best.score:.4f} |"
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def transfer_table(smoke: bool) -> list[str]:
    """Table 2: seconds per interval when every interval moves the state, by size and path."""
    sizes = [1_000, 1_000_000] if smoke else [1_000, 1_000_000, 16_000_000, 64_000_000, 256_000_000]
    steps = 3 if smoke else 8
    rows = [
        "| state size | object store (s/interval) | shared storage (s/interval) | faster |",
        "|---:|---:|---:|---|",
    ]
    for size in sizes:
        cells = []
        for transfer in ("object", "shared"):
            with tempfile.TemporaryDirectory(prefix="hp-bench-") as tmp:
                res = hp.run(
                    Blob,
                    {"size": size},
                    metric="score",
                    population=2,
                    workers=2,
                    budget=hp.Steps(steps),
                    ready=1,
                    exploit=None,
                    explore=None,
                    storage=Path(tmp) / "r.db",
                    backend="ray",
                    backend_options={"transfer": transfer, "cache_size": 0},
                )
                # a member's time between two recorded intervals, past the first (setup)
                gaps = []
                for m in (0, 1):
                    t = [r["time"] for r in res.records() if r["member"] == m]
                    gaps += [b - a for a, b in zip(t, t[1:])]
                cells.append(float(np.median(gaps)))
        faster = "object store" if cells[0] <= cells[1] else "shared storage"
        label = f"{size / 1e6:g} MB" if size >= 1_000_000 else f"{size / 1e3:g} kB"
        rows.append(f"| {label} | {cells[0]:.3f} | {cells[1]:.3f} | {faster} |")
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


#: a new process's Ray run of the toy, timed from its launch (argv: launch time, address,
#: steps); prints the timings as JSON
_CHILD = """
import json, sys, time
launched, address, steps = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
t0 = time.time()
import hyperpop as hp
t1 = time.time()
import ray
t2 = time.time()
from hyperpop.backends.ray import RayBackend
sys.path.insert(0, sys.argv[4])
import toy
t3 = time.time()

class Timed(RayBackend):
    first = 0.0

    def submit(self, task, slot=None):
        self.first = self.first or time.time()
        super().submit(task, slot)

opts = {"address": address} if address != "local" else {
    "address": "local", "init_options": {"num_cpus": 2, "include_dashboard": False}}
backend = Timed(**opts)
kw = {k: v for k, v in toy.settings.items() if k != "storage"}
kw["budget"] = hp.Steps(steps)
t4 = time.time()
hp.run(toy.Toy, toy.space, backend=backend, progress=False, **kw)
end = time.time()
print(json.dumps({"start": backend.first - launched, "import_ray": t2 - t1,
                  "import_hyperpop": (t1 - t0) + (t3 - t2), "interpreter": t0 - launched,
                  "before_start": t4 - t3, "run": end - backend.first,
                  "workers": backend.workers,
                  **backend.timings}))
"""

#: seconds an actor spends importing hyperpop's actor module with Ray already imported
_ACTOR_IMPORT = (
    "import time, ray; t = time.perf_counter(); import hyperpop.backends.ray; "
    "print(time.perf_counter() - t)"
)


def _start_row(label: str, t: dict[str, float], actor_import: float) -> str:
    """One row of table 3: Ray's part and hyperpop's of a run's start."""
    new_actors = t["reused"] < t["workers"]  # warm actors import nothing
    hyperpop_in_actors = (t["actor_setup"] + actor_import) if new_actors else t["actor_setup"]
    ray_actors = max(0.0, t["actors"] - hyperpop_in_actors)
    ray_part = t.get("import_ray", 0.0) + t["connect"] + ray_actors
    own = t["start"] - ray_part
    return (
        f"| {label} | {t['start']:.2f} | {t.get('import_ray', 0.0):.2f} | {t['connect']:.2f} | "
        f"{ray_actors:.2f} | {own:.2f} | {int(t['reused'])} | {t['run']:.2f} |"
    )


def start_table(smoke: bool) -> list[str]:
    """Table 3: where the start of a Ray run goes, Ray's part and hyperpop's.

    Needs no Ray session in this process at first (the first row starts its own in a new
    process); starts one for the other rows and leaves it running for the caller to use and
    shut down, or uses the caller's (then the rows of new processes are left out, as in
    ``--smoke``)."""
    import ray

    from hyperpop.backends.ray import RayBackend

    sys.path.insert(0, str(ROOT / "examples"))
    import toy

    steps = 20 if smoke else 200
    rows = [
        "| how | start (s) | import Ray (s) | ray.init (s) | actor creation (s) | "
        "hyperpop (s) | warm actors | run after start (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    actor_import = 0.0  # not measured in a smoke run (a process's start is seconds here)
    if not smoke:
        actor_import = float(
            subprocess.run(
                [sys.executable, "-c", _ACTOR_IMPORT], capture_output=True, text=True, check=True
            ).stdout
        )

    def child(address: str) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, repr(time.time()), address, str(steps), str(toy_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        print(out.stdout.strip().splitlines()[-1], file=sys.stderr)  # every timing
        return json.loads(out.stdout.strip().splitlines()[-1])

    toy_dir = ROOT / "examples"
    processes = not smoke and not ray.is_initialized()
    if processes:
        rows.append(_start_row("new process, starts its own Ray", child("local"), actor_import))
        print(rows[-1], file=sys.stderr, flush=True)
    if not ray.is_initialized():
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
    if processes:
        address = ray.get_runtime_context().gcs_address
        t = child(address)
        rows.append(_start_row("new process, joins a running Ray", t, actor_import))
        print(rows[-1], file=sys.stderr, flush=True)
    kw = {k: v for k, v in toy.settings.items() if k != "storage"}
    kw["budget"] = hp.Steps(steps)
    first: list[float] = []

    class Timed(RayBackend):
        def submit(self, task: Any, slot: int | None = None) -> None:
            if not first:
                first.append(time.perf_counter())
            super().submit(task, slot)

    with Timed(keep_actors=True) as backend:
        for label in ("same process, new actors", "same process, warm actors"):
            first.clear()
            t0 = time.perf_counter()
            hp.run(toy.Toy, toy.space, backend=backend, progress=False, **kw)
            t = dict(
                backend.timings,
                start=first[0] - t0,
                run=time.perf_counter() - first[0],
                workers=backend.workers,
            )
            rows.append(_start_row(label, t, actor_import))
            print(rows[-1], file=sys.stderr, flush=True)
    imported = "not measured in a smoke run" if smoke else f"{actor_import:.2f}s, measured apart"
    rows.append(
        "\nhyperpop (s) = start - import Ray - ray.init - actor creation; it counts importing "
        f"hyperpop in each new actor ({imported}) and loading the trainable there"
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print the tables (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny runs, for CI")
    parser.add_argument("--only", choices=["backends", "transfer", "start"], help="one table only")
    args = parser.parse_args(argv)

    import ray

    print(f"# backends benchmark ({os.cpu_count()} cores{', smoke' if args.smoke else ''})")
    started = ""
    if args.only in (None, "start"):  # first: its first row needs no Ray running here
        ours = not ray.is_initialized()
        print("\n".join(start_table(args.smoke)))
        started = "Ray cluster: started for table 3 (its start is in table 3)" if ours else ""
        if args.only == "start":
            if ours:
                ray.shutdown()
            return
    if not ray.is_initialized():
        t0 = time.perf_counter()
        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        started = f"Ray cluster start: {time.perf_counter() - t0:.1f}s (not in the tables)"
    if started:
        print(started)
    try:
        if args.only in (None, "backends"):
            print("\n".join(backends_table(args.smoke)))
        if args.only in (None, "transfer"):
            print("\n".join(transfer_table(args.smoke)))
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    main()
