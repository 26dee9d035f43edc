"""``hyperpop workers DB N``: change how many members train at once in a running run."""

from __future__ import annotations

import click

from hyperpop.commands._shared import echo_answer

__all__ = ["workers"]


@click.command("workers")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("count", metavar="N", type=int)
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the driver."
)
def workers(db: str, count: int, timeout: float) -> None:
    """Train N members at once in the run writing DB, from now on (at most one per member).

    More workers start at once; with fewer, the intervals running end first, nothing is
    stopped. A later `hyperpop resume DB` starts with the last N asked for."""
    from hyperpop.steer import Steer

    echo_answer(Steer(db, timeout=timeout, origin="cli").workers(count))
