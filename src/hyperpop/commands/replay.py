"""``hyperpop replay DB``: retrain one member's recorded schedule on a fresh model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hyperpop.space import flatten_config as _flat
from hyperpop.summary import fmt

__all__ = ["command"]


def _trainable(spec: str | None) -> Any:
    """``file.py`` (its ``trainable``), ``file.py:Name`` or ``module:Name``; None: as recorded."""
    if spec is None:
        return None
    from hyperpop.userfile import load_object

    return load_object(spec)


@click.command("replay")
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--member", "-m", default="best", show_default=True, help="Member id or 'best'.")
@click.option("--trainable", "spec", help="FILE.py[:Name] or module:Name (default: as recorded).")
@click.option("--steps", type=int, help="Replay only the first STEPS steps.")
@click.option("--rtol", type=float, default=0.01, show_default=True, help="Relative tolerance.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(
    db: str, member: str, spec: str | None, steps: int | None, rtol: float, as_json: bool
) -> None:
    """Train a fresh model along MEMBER's recorded schedule in DB and compare the scores.

    Exits with status 1 when the replayed score is not within RTOL of the recorded one.
    """
    from hyperpop.replay import replay

    which: int | str = member if member == "best" else _member_id(member)
    try:
        r = replay(Path(db), which, trainable=_trainable(spec), steps=steps)
    except (KeyError, ValueError) as e:
        raise click.ClickException(str(e).strip("'\"")) from None
    if as_json:
        out = r.to_dict()
        out["close"] = r.close(rtol=rtol)
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo(f"replayed member {r.member} for {r.steps} steps ({r.seconds:.2f}s)")
        click.echo("schedule followed:")
        for seg in r.schedule:
            params = ", ".join(f"{k}={fmt(v, digits=6)}" for k, v in _flat(seg["config"]).items())
            click.echo(f"  from step {seg['step']:>6} (trained by {seg['trained_by']}): {params}")
        click.echo(f"recorded {r.metric}: {fmt(r.original_score, digits=6, missing='unknown')}")
        click.echo(f"replayed {r.metric}: {fmt(r.score, digits=6)}")
        if r.difference is not None:
            click.echo(f"difference: {r.difference:+.3g} (relative {r.relative_difference:.3g})")
        gap = r.max_trajectory_difference
        if gap is not None:
            click.echo(f"largest gap along the member's own recorded steps: {gap:.3g}")
        click.echo("reproduced" if r.close(rtol=rtol) else f"NOT within rtol={rtol:g}")
    if not r.close(rtol=rtol):
        raise SystemExit(1)


def _member_id(member: str) -> int:
    try:
        return int(member)
    except ValueError:
        raise click.BadParameter(
            f"{member!r} is not a member id; use an integer or 'best'", param_hint="--member"
        ) from None
