"""Steer a running run from the command line: ``stop``, ``pin``, ``unpin``, ``set``, ``copy``,
``add``, ``budget``. Each writes a request into the store and prints the driver's answer."""

from __future__ import annotations

import json
from typing import Any

import click

from hyperpop.commands._shared import echo_answer
from hyperpop.space import unflatten_config

__all__ = ["add", "budget", "copy", "parse_assignments", "pin", "set_", "stop", "unpin"]


def parse_assignments(items: tuple[str, ...]) -> dict[str, Any]:
    """``("lr=0.01", "opt/name=adam")`` as a partial config (values read as JSON when they
    parse, else kept as strings; ``a/b`` names a nested parameter)."""
    flat: dict[str, Any] = {}
    given: dict[str, str] = {}  # path -> the item that gave it
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.split("/")
        if not sep or not all(parts):
            raise click.BadParameter(f"{item!r}: write NAME=VALUE, e.g. lr=0.01")
        for i in range(1, len(parts) + 1):  # a/b after a (or a after a/b) sets a twice
            path = "/".join(parts[:i])
            clash = given.get(path) or next(
                (v for k, v in given.items() if k.startswith(key + "/")), None
            )
            if clash is not None:
                raise click.BadParameter(
                    f"{clash!r} and {item!r} both set {path}: give each hyperparameter once"
                )
        given[key] = item
        try:
            flat[key] = json.loads(raw)
        except ValueError:
            flat[key] = raw
    return unflatten_config(flat)


def _steer(db: str, timeout: float) -> Any:
    from hyperpop.steer import Steer

    return Steer(db, timeout=timeout, origin="cli")


_db = click.argument("db", type=click.Path(dir_okay=False))
_timeout = click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the driver."
)


@click.command("stop")
@_db
@click.option("--member", "-m", type=int, help="Stop only this member (the others go on).")
@_timeout
def stop(db: str, member: int | None, timeout: float) -> None:
    """Ask the driver writing DB to stop the run (resume it later) or one member.

    Writes a request into the store, which the driver reads within a second; no signal is
    sent to any process."""
    from hyperpop.store.sqlite import WriterLock

    holder = WriterLock(db).holder() or {}
    answer = _steer(db, timeout).stop(member)
    echo_answer(answer)
    if member is None and answer.ok:
        click.echo(
            f"the driver (pid {holder.get('pid', '?')}) stopped; resume with: hyperpop resume {db}"
        )


@click.command("pin")
@_db
@click.argument("member", type=int)
@_timeout
def pin(db: str, member: int, timeout: float) -> None:
    """Pin MEMBER: PBT never makes it copy another, resets or explores it (it may be copied)."""
    echo_answer(_steer(db, timeout).pin(member))


@click.command("unpin")
@_db
@click.argument("member", type=int)
@_timeout
def unpin(db: str, member: int, timeout: float) -> None:
    """Let PBT decide for a pinned MEMBER again."""
    echo_answer(_steer(db, timeout).unpin(member))


@click.command("set")
@_db
@click.argument("member", type=int)
@click.argument("values", nargs=-1, required=True)
@_timeout
def set_(db: str, member: int, values: tuple[str, ...], timeout: float) -> None:
    """Set MEMBER's hyperparameters, e.g. `hyperpop set runs/x.db 3 lr=0.01` (validated against
    the space; recorded in its schedule by user)."""
    echo_answer(_steer(db, timeout).set(member, parse_assignments(values)))


@click.command("copy")
@_db
@click.argument("member", type=int)
@click.argument("donor", type=int)
@_timeout
def copy(db: str, member: int, donor: int, timeout: float) -> None:
    """Make MEMBER copy DONOR's latest checkpoint and hyperparameters now."""
    echo_answer(_steer(db, timeout).copy(member, donor))


@click.command("add")
@_db
@click.argument("values", nargs=-1)
@click.option("--count", "-n", type=int, default=1, show_default=True, help="Members to add.")
@_timeout
def add(db: str, values: tuple[str, ...], count: int, timeout: float) -> None:
    """Add members to the running population (sampled; NAME=VALUE fixes a hyperparameter)."""
    s = _steer(db, timeout)
    if values:
        echo_answer(s.add(configs=[parse_assignments(values)] * count))
    else:
        echo_answer(s.add(count))


@click.command("budget")
@_db
@click.option("--steps", type=int, help="Training steps per member.")
@click.option("--seconds", type=float, help="Wall time of the run (across resumes).")
@click.option("--target", type=float, help="Stop when a member's score reaches this.")
@_timeout
def budget(
    db: str, steps: int | None, seconds: float | None, target: float | None, timeout: float
) -> None:
    """Replace the run's budget (members finished for lack of steps train on under more)."""
    items: list[dict[str, Any]] = []
    if steps is not None:
        items.append({"type": "steps", "n": steps})
    if seconds is not None:
        items.append({"type": "wall_time", "seconds": seconds})
    if target is not None:
        items.append({"type": "target", "score": target})
    if not items:
        raise click.UsageError("give --steps, --seconds or --target")
    echo_answer(_steer(db, timeout).budget(*items))
