"""What a run found: ``hyperpop best``, ``schedule``, ``table``, ``lineage`` and ``export``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hyperpop.commands._shared import best_of, dump, load_result, to_csv

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["best", "export", "interventions", "lineage", "schedule", "table"]


def _format(default: str) -> Callable[[F], F]:
    """The ``--format json|csv`` option, with its default."""
    return click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default=default)


def _echo_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    """Print ``rows`` as CSV (``fmt`` ``csv``) or as indented JSON."""
    click.echo(to_csv(rows) if fmt == "csv" else dump(rows), nl=fmt == "json")


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@_format("json")
def best(db: str, fmt: str) -> None:
    """Print the best member (config, score, schedule)."""
    result = load_result(db)
    b = best_of(result, db)
    if fmt == "csv":
        click.echo(
            to_csv(
                [
                    {
                        "member": b.id,
                        "score": b.score,
                        "step": b.step,
                        **{
                            f"config/{k}": v
                            for k, v in result.schedule_rows(b.id)[-1].items()
                            if k not in ("step", "trained_by")
                        },
                    }
                ]
            ),
            nl=False,
        )
        return
    click.echo(
        dump(
            {
                "member": b.id,
                "score": b.score,
                "step": b.step,
                "status": b.status,
                "config": b.config,
                "schedule": b.schedule,
                "checkpoint": b.checkpoint,
            }
        )
    )


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--member", "-m", default="best", help="Member id or 'best'.")
@_format("json")
def schedule(db: str, member: str, fmt: str) -> None:
    """Print a member's hyperparameter schedule, inherited part included."""
    result = load_result(db)
    if member == "best":
        rows = best_of(result, db).schedule_rows()
    else:
        rows = result.schedule_rows(member)
    _echo_rows(rows, fmt)


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--member", "-m", default="best", help="Member id or 'best' (the best model).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="File.")
def export(db: str, member: str, output: str) -> None:
    """Write a trained model's state to a file (the run's best checkpoint by default).

    PyTorch states are written with torch.save (torch.load(FILE, weights_only=True) opens
    them), anything else with pickle.
    """
    result = load_result(db)
    if member == "best":
        b = best_of(result, db)
        label = f"the best checkpoint (member {b.id} at step {b.step}, {result.metric}={b.score})"
    else:
        label = f"member {member}"
    try:
        how = result.export(output, member)
    except (KeyError, ValueError) as e:
        raise click.ClickException(str(e).strip("'\"")) from None
    except OSError as e:
        folder = os.path.dirname(output) or "."
        hint = (
            f"create the folder first (mkdir -p {folder})"
            if not os.path.isdir(folder)
            else "choose a writable path"
        )
        raise click.ClickException(f"cannot write {output}: {e.strerror or e}; {hint}") from None
    click.echo(f"wrote {label} to {output} ({how})")


def _rows_command(f: Callable[[str, str], None]) -> click.Command:
    """A command that prints rows of a run (``DB``, ``--format`` csv by default)."""
    return click.command()(click.argument("db", type=click.Path(dir_okay=False))(_format("csv")(f)))


@_rows_command
def table(db: str, fmt: str) -> None:
    """Print every report (member, step, score, metrics, config)."""
    _echo_rows(load_result(db).records(), fmt)


@_rows_command
def lineage(db: str, fmt: str) -> None:
    """Print who copied whom, and when (copies made by PBT and by people; what else people
    did, such as pins, sets and added members: hyperpop interventions DB)."""
    _echo_rows(load_result(db).lineage(), fmt)


@_rows_command
def interventions(db: str, fmt: str) -> None:
    """Print what people did to the run (stop, pin, unpin, set, copy, add, budget), one row
    each: kind, member, what, request, time."""
    _echo_rows(load_result(db).interventions(), fmt)
