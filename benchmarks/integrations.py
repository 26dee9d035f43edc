"""What the Lightning and Transformers adapters cost: CPU seconds of one PBT interval through
``LightningTrainable`` / ``TransformersTrainable`` against the same work in a plain PyTorch loop.

One intra-op thread, CPU time of the process (the training thread of ``TransformersTrainable``
included), median over ``--reps`` intervals after one warm-up, on the models of
``examples/digits_lightning.py`` (one epoch, batch 32) and ``examples/textlm_transformers.py``
(25 steps of 16 x 64 characters, then the evaluation).

    python benchmarks/integrations.py            # both, 5 repetitions
    python benchmarks/integrations.py --only lightning --reps 9
    python benchmarks/integrations.py --smoke    # one interval each, no warm-up: a test's run
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _cpu(fn: Callable[[], Any], reps: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def lightning(reps: int, warm_up: bool = True) -> dict[str, Any]:
    from torch.nn import functional as F

    from hyperpop.userfile import load_file

    rf = load_file(EXAMPLES / "digits_lightning.py")
    m = rf.module
    cfg = {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32}
    member = rf.trainable()
    member.setup(cfg)
    plain = m.LitDigits(**cfg)
    opt = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

    def epoch() -> None:
        for x, y in plain.train_dataloader():
            opt.zero_grad()
            F.cross_entropy(plain(x), y).backward()
            opt.step()
        with torch.no_grad():
            plain(m.data()["x_val"])

    return {
        "what": "digits CNN, 1 epoch",
        "plain": _cpu(epoch, reps, warm_up),
        "hyperpop": _cpu(member.train, reps, warm_up),
    }


def transformers(reps: int, warm_up: bool = True) -> dict[str, Any]:
    from hyperpop.integrations.transformers import TransformersTrainable
    from hyperpop.userfile import load_file

    m = load_file(EXAMPLES / "textlm_transformers.py").module
    member = TransformersTrainable.wrap(m.make_trainer, steps=m.STEPS)()
    member.setup({"learning_rate": 3e-3, "weight_decay": 0.01, "warmup_steps": 10})
    model = m.make_model()
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=0.01)
    train, val = m.Chunks(m.data()["train"]), m.Chunks(m.data()["val"], limit=m.EVAL_CHUNKS)
    g = torch.Generator().manual_seed(0)

    def interval() -> None:
        for _ in range(m.STEPS):
            idx = torch.randint(0, len(train), (16,), generator=g).tolist()
            batch = torch.stack([train[i]["input_ids"] for i in idx])
            model(input_ids=batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            batch = torch.stack([val[i]["input_ids"] for i in range(len(val))])
            model(input_ids=batch, labels=batch)

    try:
        return {
            "what": f"2-layer GPT-2, {m.STEPS} steps + eval",
            "plain": _cpu(interval, reps, warm_up),
            "hyperpop": _cpu(member.train, reps, warm_up),
        }
    finally:
        member.cleanup()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["lightning", "transformers"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--smoke", action="store_true", help="one repetition, no warm-up (checks the script runs)"
    )
    args = parser.parse_args(argv)
    reps = 1 if args.smoke else args.reps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name, fn in (("lightning", lightning), ("transformers", transformers)):
            if args.only in (None, name):
                rows.append({"adapter": name, **fn(reps, not args.smoke)})
    finally:
        torch.set_num_threads(threads)
    print(
        f"{'adapter':<13} {'interval':<30} {'plain CPU s':>11} {'hyperpop CPU s':>14} {'ratio':>6}"
    )
    for r in rows:
        ratio = r["hyperpop"] / r["plain"]
        cells = f"{r['plain']:>11.3f} {r['hyperpop']:>14.3f} {ratio:>6.2f}"
        print(f"{r['adapter']:<13} {r['what']:<30} {cells}")
    return rows


if __name__ == "__main__":
    main()
