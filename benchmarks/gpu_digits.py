"""GPU placement: examples/digits.py's trainable on GPUs, one and two members per GPU.

Each worker process of the local backend sees only its GPU (``gpus_per_member=1``: one worker
per GPU; ``0.5``: two workers share each GPU). The digits CNN and its data move to ``cuda`` in
each member. Printed per setting: wall time, the best validation accuracy, the held-out test
accuracy of the best checkpoint (loaded on the CPU in this process: the checkpoints are
device-portable), and per worker its GPU, intervals trained, and peak GPU memory: PyTorch's
allocator (allocated, reserved) and the process's total as ``nvidia-smi`` sampled it (CUDA
context included).

    python benchmarks/gpu_digits.py                      # every visible GPU, 1 and 0.5
    python benchmarks/gpu_digits.py --per-member 0.5 --population 32 --steps 24
    python benchmarks/gpu_digits.py --cpu-check --smoke  # no GPU: the CPU side, for tests

It needs a GPU; without one it stops with a message. ``--cpu-check`` runs everything else
(placement through made-up device ids, training on the CPU, the table) to test the script.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import example, machine

import hyperpop as hp
from hyperpop.backends.gpus import nvidia_smi, visible_gpus


class NoGpu(SystemExit):
    """The script needs a GPU and none is there."""


def digits_on_device(digits: Any, cpu: bool = False) -> type:
    """``digits.Digits`` with its model and data on ``cuda`` (on the CPU with ``cpu`` or
    without a GPU), and the worker's GPU, pid and peak GPU memory in its metrics."""

    class DigitsOnDevice(digits.Digits):
        def build(self, config: dict[str, Any]) -> None:
            import torch

            super().build(config)
            gpu = torch.cuda.is_available() and not cpu
            self.device = torch.device("cuda" if gpu else "cpu")
            self.data = {k: v.to(self.device) for k, v in self.data.items()}
            self.model = self.model.to(self.device)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])

        def train(self) -> dict[str, float]:
            import torch

            metrics = dict(super().train())
            cuda = self.device.type == "cuda"
            metrics["peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0
            metrics["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20 if cuda else 0
            metrics["pid"] = float(os.getpid())
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            metrics["gpu"] = float(visible.split(",")[0]) if visible[:1].isdigit() else -1.0
            return metrics

    return DigitsOnDevice


class SmiSampler:
    """Samples ``nvidia-smi``'s memory per process every ``every`` seconds; keeps the peak."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.peak: dict[int, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in nvidia_smi(
                "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"
            ):
                try:
                    pid, mib = (p.strip() for p in line.split(","))
                    self.peak[int(pid)] = max(self.peak[int(pid)], float(mib))
                except ValueError:
                    continue
            self._stop.wait(self.every)

    def __enter__(self) -> SmiSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_one(args: argparse.Namespace, per_member: float, gpus: list[str]) -> dict[str, Any]:
    """One PBT run of digits at ``per_member`` GPUs per member; its row and per-worker rows."""
    digits = example("digits")
    trainable = digits_on_device(digits, cpu=args.cpu_check)
    sampler = SmiSampler()
    t0 = time.perf_counter()
    with sampler:
        result = hp.run(
            trainable,
            digits.space,
            metric="val_acc",
            mode="max",
            population=args.population,
            budget=hp.Steps(args.steps),
            ready=args.ready,
            seed=0,
            backend_options={"gpus": gpus, "gpus_per_member": per_member},
            progress=False,
        )
    wall = time.perf_counter() - t0
    workers: dict[int, dict[str, Any]] = {}
    for r in result.records():
        w = workers.setdefault(
            int(r["pid"]),
            {"gpu": int(r["gpu"]), "reports": 0, "allocated": 0.0, "reserved": 0.0},
        )
        w["reports"] += 1
        w["allocated"] = max(w["allocated"], r["peak_allocated_mb"])
        w["reserved"] = max(w["reserved"], r["peak_reserved_mb"])
    for pid, w in workers.items():
        w["smi"] = sampler.peak.get(pid)
    test_acc = digits.evaluate(result.load_checkpoint())  # a GPU-trained state, on the CPU
    return {
        "per_member": per_member,
        "workers": workers,
        "wall": wall,
        "val_acc": result.best.score,
        "test_acc": test_acc,
        "failures": sum(1 for e in result.events if e.kind == "failed"),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-member", type=float, action="append", help="1, 0.5... (repeatable)")
    p.add_argument("--gpus", default=None, help="device ids, e.g. 0,1 (default: every visible)")
    p.add_argument("--population", type=int, default=16)
    p.add_argument("--steps", type=int, default=24, help="epochs per member")
    p.add_argument("--ready", type=int, default=4)
    p.add_argument("--smoke", action="store_true", help="tiny sizes")
    p.add_argument(
        "--cpu-check",
        action="store_true",
        help="no GPU needed: made-up device ids (default 0,1), training on the CPU",
    )
    args = p.parse_args(argv)
    per_member = args.per_member or [1.0, 0.5]
    if args.smoke:  # two members sharing one GPU, one interval
        args.population, args.steps, args.ready = 2, 1, 1
        per_member = args.per_member or [0.5]
    if args.cpu_check:
        gpus = (args.gpus or ("0" if args.smoke else "0,1")).split(",")
    else:
        gpus = args.gpus.split(",") if args.gpus else visible_gpus()
        fix = "; run it on a GPU machine, or with --cpu-check to test its CPU side"
        if not gpus:  # said before PyTorch is imported, which takes seconds
            raise NoGpu(
                "benchmarks/gpu_digits.py needs a GPU: none is visible "
                "(CUDA_VISIBLE_DEVICES, nvidia-smi -L)" + fix
            )
        import torch

        if not torch.cuda.is_available():
            raise NoGpu(
                "benchmarks/gpu_digits.py needs a GPU: "
                f"PyTorch {torch.__version__} sees none (a CPU-only build?)" + fix
            )
    rows = [run_one(args, f, gpus) for f in per_member]
    names = {i: line for i, line in enumerate(nvidia_smi("-L"))}
    print(f"machine: {machine()}")
    for i in sorted(names):
        print(f"  {names[i]}")
    where = "CPU (--cpu-check: made-up GPU ids)" if args.cpu_check else "GPU"
    print(
        f"digits on {where}: GPUs {','.join(gpus)}, population {args.population}, "
        f"{args.steps} epochs per member, ready every {args.ready}"
    )
    print(
        f"{'per member':>10} {'workers':>7} {'wall s':>7} {'best val':>9} {'test acc':>9} "
        f"{'failures':>8}"
    )
    for r in rows:
        print(
            f"{r['per_member']:>10g} {len(r['workers']):>7} {r['wall']:>7.1f} "
            f"{r['val_acc']:>9.4f} {r['test_acc']:>9.4f} {r['failures']:>8}"
        )
    print(
        f"{'per member':>10} {'worker pid':>10} {'gpu':>4} {'steps':>6} "
        f"{'alloc MB':>9} {'reserved MB':>11} {'nvidia-smi MB':>13}"
    )
    for r in rows:
        for pid, w in sorted(r["workers"].items(), key=lambda kv: (kv[1]["gpu"], kv[0])):
            smi = "-" if w["smi"] is None else f"{w['smi']:.0f}"
            print(
                f"{r['per_member']:>10g} {pid:>10} {w['gpu']:>4} {w['reports']:>6} "
                f"{w['allocated']:>9.1f} {w['reserved']:>11.1f} {smi:>13}"
            )
    return rows


if __name__ == "__main__":
    main()
