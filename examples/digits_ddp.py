"""The digits CNN of ``examples/digits.py``, each member trained by 2 processes with DDP.

With ``processes_per_member=2`` every member is a group of two processes, the ranks of one
``DistributedDataParallel`` job (gloo on CPUs, nccl on GPUs): both draw the same global
minibatches of ``batch_size`` examples, each trains on its half, and DDP averages their
gradients, so the member trains at the same global batch size as the single-process example.
Rank 0 reports the metrics and its state is the member's checkpoint; every rank loads it (after
an exploit, the donor's) and takes the explored hyperparameters. The saved state is the plain
model's (no ``module.`` prefix): it loads in a single process, as :func:`digits.evaluate` does.

Run it:

    hyperpop run examples/digits_ddp.py --overwrite     # PBT with the live view
    python examples/digits_ddp.py                       # PBT, then the winner's held-out accuracy
    python examples/digits_ddp.py --compare             # and the single-process example's
    python examples/digits_ddp.py --compare --population 8 --steps 12    # a shorter run
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
from torch.nn import functional as F

import hyperpop as hp
import hyperpop.torch as hpt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits  # the single-process example: its data, model and evaluation

sys.path.pop(0)
cloudpickle.register_pickle_by_value(digits)  # worker processes get it with the trainable


class DigitsDDP(digits.Digits):
    """One member as the ranks of a DDP job: the model, optimiser and data order of
    :class:`digits.Digits`, each rank training on its share of every global minibatch."""

    def build(self, config: dict[str, Any]) -> None:
        hpt.init_distributed()  # from the environment the group is started with; once
        super().build(config)  # the same seed on every rank: the same weights, the same order
        self.model = self.model.to(hpt.device())
        self.ddp = hpt.wrap_ddp(self.model)  # self.model stays the plain module (saved as it is)

    def train(self) -> dict[str, float]:
        d, dev = self.data, hpt.device()
        total, n = 0.0, 0
        for x, y in hpt.minibatches(
            d["x_train"], d["y_train"], batch_size=self.config["batch_size"],
            generator=self.generator,
        ):  # fmt: skip
            x, y = hpt.split_batch(x, y)  # this rank's half of the global minibatch
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.ddp(x.to(dev)), y.to(dev))
            loss.backward()  # DDP averages the gradients over the ranks
            self.optimizer.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        self.steps += 1
        model = self.model.cpu() if dev.type != "cpu" else self.model
        val_acc, val_loss = digits.accuracy(model, d["x_val"], d["y_val"])
        self.model.to(dev)
        return {"val_acc": val_acc, "val_loss": val_loss, "train_loss": total / n}


def evaluate(state: dict[str, Any]) -> float:
    """Held-out test accuracy of a saved member state, in this single process."""
    return digits.evaluate(state)


trainable = DigitsDDP
space = digits.space
settings = dict(
    digits.settings,
    workers=1,  # one member at a time, as two processes: the two cores of a small machine
    processes_per_member=2,
    storage="runs/digits_ddp.db",
)


def _run(name: str, trainable_: Any, **overrides: Any) -> float:
    t0 = time.perf_counter()
    result = hp.run(trainable_, space, progress=False, overwrite=True, **{**settings, **overrides})
    seconds = time.perf_counter() - t0
    best = result.best
    accuracy = evaluate(result.load_checkpoint())
    print(f"{name}: best member {best.id} val_acc {best.score:.4f}, held-out {accuracy:.4f}, "
          f"{seconds:.0f} s, config {best.config}")  # fmt: skip
    return accuracy


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="also run examples/digits.py")
    parser.add_argument("--population", type=int, default=settings["population"])
    parser.add_argument("--steps", type=int, default=24, help="epochs per member")
    args = parser.parse_args()
    # deterministic: intervals handled in a fixed order, so both runs make the same decisions
    # wherever their metrics agree (the same seed, configs, data order and global batches)
    common = dict(population=args.population, budget=hp.Steps(args.steps), deterministic=True)
    ddp = _run("2 processes per member", trainable, **common)
    if args.compare:
        one = _run("1 process per member", digits.Digits, workers=2, processes_per_member=1,
                   storage="runs/digits_single.db", **common)  # fmt: skip
        print(f"held-out accuracy: {ddp:.4f} (2 processes) vs {one:.4f} (1 process), "
              f"difference {ddp - one:+.4f}")  # fmt: skip
