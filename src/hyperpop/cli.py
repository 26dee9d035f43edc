"""The ``hyperpop`` command line (also ``python -m hyperpop``): the click group, its error
handling and the list of its commands. Each command lives in a module of
:mod:`hyperpop.commands`."""

from __future__ import annotations

import atexit
import gc
from typing import Any

import click

from hyperpop.commands import dashboard, logs, replay, report, results, run, status, steer, workers

__all__ = ["main"]


class _Errors(click.Group):
    """Turns hyperpop's own errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from hyperpop.checkpoints import CheckpointError
        from hyperpop.errors import RunError, SettingsError
        from hyperpop.space import SpaceError
        from hyperpop.store.sqlite import StoreError
        from hyperpop.trainable import TrainableError
        from hyperpop.userfile import RunFileError

        try:
            return super().invoke(ctx)
        except (
            StoreError,
            RunError,
            SpaceError,
            TrainableError,
            RunFileError,
            CheckpointError,
            SettingsError,
        ) as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        except KeyError as e:
            raise click.ClickException(str(e.args[0]) if e.args else str(e)) from None


def _quick_teardown() -> None:
    """Run last of the exit handlers: collect garbage once (what is left in cycles is
    finalized), then spare the interpreter's teardown its repeated collections over every
    object the user's libraries made (0.8 s and more with PyTorch and scikit-learn loaded)."""
    gc.collect()
    gc.freeze()


atexit.register(_quick_teardown)  # first registered, so it runs after every other handler


@click.group(cls=_Errors)
@click.version_option(package_name="hyperpop")
def main() -> None:
    """hyperpop: Population Based Training. Train a population, evolve its hyperparameters,
    keep the schedule and the lineage."""


for _command in (
    run.run,
    run.resume,
    status.status,
    results.best,
    results.schedule,
    results.table,
    results.lineage,
    results.interventions,
    results.export,
    steer.stop,
    steer.pin,
    steer.unpin,
    steer.set_,
    steer.copy,
    steer.add,
    steer.budget,
    workers.workers,
    logs.command,
    replay.command,
    report.command,
    dashboard.command,
):
    main.add_command(_command)

if __name__ == "__main__":
    main()
