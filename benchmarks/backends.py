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

Table 2 moves a member's state of a given size between two actors on every interval
(``cache_size=0``: every task reloads) through each path, and reports the median time between a
member's consecutive intervals (save, hand over, durable copy, load; actor start excluded).
"""

from __future__ import annotations

import argparse
import os
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


def main(argv: list[str] | None = None) -> None:
    """Print both tables (markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny runs, for CI")
    parser.add_argument("--only", choices=["backends", "transfer"], help="one table only")
    args = parser.parse_args(argv)

    import ray

    started = ""
    if not ray.is_initialized():
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        started = f"Ray cluster start: {time.perf_counter() - t0:.1f}s (not in the tables)"
    print(f"# backends benchmark ({os.cpu_count()} cores{', smoke' if args.smoke else ''})")
    if started:
        print(started)
    try:
        if args.only != "transfer":
            print("\n".join(backends_table(args.smoke)))
        if args.only != "backends":
            print("\n".join(transfer_table(args.smoke)))
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    main()
