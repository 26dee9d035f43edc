"""Take the schedule out: PBT on digits, then retrain from scratch with the winner's schedule.

PBT's product is also a hyperparameter schedule. This example runs PBT on the digits CNN
(``examples/digits.py``), then trains one fresh model in a plain PyTorch loop, with no hyperpop
in it, following the best member's recorded schedule: learning rate, momentum and weight decay
through :class:`hyperpop.torch.ScheduleLR`, the batch size read from the schedule each epoch.
It prints both held-out test accuracies.

    python examples/digits_schedule.py                      # population 8, 16 epochs
    python examples/digits_schedule.py --population 4 --steps 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

import hyperpop as hp
from hyperpop.torch import ScheduleLR, minibatches

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits


def retrain(schedule: list[dict[str, Any]], epochs: int, seed: int = 0) -> float:
    """Train a fresh CNN for ``epochs`` epochs along ``schedule``; held-out test accuracy."""
    torch.manual_seed(seed)
    d = digits.data()
    model = digits.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = ScheduleLR(
        optimizer, schedule, others={"momentum": "momentum", "weight_decay": "weight_decay"}
    )
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        batch_size = scheduler.config()["batch_size"]
        for x, y in minibatches(
            d["x_train"], d["y_train"], batch_size=batch_size, generator=generator
        ):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        scheduler.step()
    return digits.accuracy(model, d["x_test"], d["y_test"])[0]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        return _main(args, Path(tmp) / "digits.db")


def _main(args: argparse.Namespace, storage: Path) -> dict[str, float]:
    result = hp.run(
        digits.trainable,
        digits.space,
        metric="val_acc",
        mode="max",
        population=args.population,
        workers=args.workers,
        budget=hp.Steps(args.steps),
        ready=4,
        storage=storage,
    )
    best = result.best
    pbt = digits.evaluate(result.load_checkpoint("best"))
    again = retrain(best.schedule, best.step)
    print("schedule of the best member:")
    for row in best.schedule_rows():
        print(f"  from step {row.pop('step'):>3}: {row}")
    print(f"held-out accuracy, PBT's best member:           {pbt:.4f}")
    print(f"held-out accuracy, retrained along its schedule: {again:.4f}")
    return {"pbt": pbt, "retrained": again}


if __name__ == "__main__":
    main()
