"""``hyperpop status DB``: a run's status, counts and population table (also while it runs)."""

from __future__ import annotations

import click

from hyperpop.commands._shared import dump, load_result

__all__ = ["status"]


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db: str, as_json: bool) -> None:
    """Show a run's status (works while it runs)."""
    from hyperpop.live import LiveView

    result = load_result(db)
    s = result.summary()
    if as_json:
        click.echo(dump(s))
        return
    for k in (
        "status",
        "reason",
        "members",
        "statuses",
        "reports",
        "exploits",
        "failures",
        "resumes",
        "best_member",
        "best_score",
    ):
        click.echo(f"{k:>13}: {s[k]}")
    click.echo(f"{'elapsed':>13}: {s['elapsed']:.1f}s")
    if s["unrecorded_reports"]:
        click.echo(
            f"{'in flight':>13}: {s['unrecorded_reports']} reports of running intervals "
            "(recorded at their members' next ready point)"
        )
    if s["pinned"]:
        click.echo(f"{'pinned':>13}: {', '.join(map(str, s['pinned']))}")
    view = LiveView()
    view.console.print(view._render(result.population))
