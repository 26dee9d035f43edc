"""The digits CNN (``examples/digits.py``) with the population in TensorBoard and MLflow.

Each member gets a TensorBoard folder (its metrics, its hyperparameters as curves that change at
explores, a note at every exploit) and a nested MLflow run under one parent run for the
population. Nothing else changes: the trackers are callbacks.

    python examples/digits_tracked.py                          # population 8, 12 epochs
    python examples/digits_tracked.py --population 4 --steps 4
    tensorboard --logdir runs/digits_tracked-tb                # then open http://localhost:6006
    mlflow ui --backend-store-uri sqlite:///runs/digits_tracked-mlflow.db

The same from the command line, with no code:
``hyperpop run examples/digits.py --tensorboard runs/digits-tb --mlflow sqlite:///runs/m.db``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import hyperpop as hp
from hyperpop.callbacks import MLflow, TensorBoard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import digits


def main(argv: list[str] | None = None) -> hp.Result:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="epochs per member")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs", help="folder for the store and the trackers")
    args = p.parse_args(argv)
    out = Path(args.out)
    tb, mlflow_db = out / "digits_tracked-tb", out / "digits_tracked-mlflow.db"
    shutil.rmtree(tb, ignore_errors=True)  # a fresh run: fresh tracker destinations
    mlflow_db.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    result = hp.run(
        digits.trainable,
        digits.space,
        **{
            **digits.settings,
            "population": args.population,
            "workers": args.workers,
            "budget": hp.Steps(args.steps),
            "ready": min(4, args.steps),
            "storage": out / "digits_tracked.db",
        },
        overwrite=True,
        callbacks=[
            TensorBoard(tb),
            MLflow(f"sqlite:///{mlflow_db.resolve()}", experiment="digits"),
        ],
    )
    best = result.best
    print(f"best member {best.id}: val_acc {best.score:.4f}")
    print(f"TensorBoard: tensorboard --logdir {tb}")
    print(f"MLflow:      mlflow ui --backend-store-uri sqlite:///{mlflow_db}")
    return result


if __name__ == "__main__":
    main()
