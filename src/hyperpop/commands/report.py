"""``hyperpop report DB -o report.html``: one self-contained HTML file of a run."""

from __future__ import annotations

import click

__all__ = ["command"]


@click.command("report")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="HTML file to write (default: the store's path with .html).",
)
def command(db: str, output: str | None) -> None:
    """Write the dashboard of DB as one HTML file that opens offline (plotly.js inlined)."""
    try:
        from hyperpop.dashboard.report import write_report
    except ImportError as e:
        raise click.ClickException(
            f"reports need {e.name}: pip install 'hyperpop[dashboard]'"
        ) from None
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "reports need plotly: pip install 'hyperpop[dashboard]'"
        ) from None
    path = write_report(db, output)
    size = path.stat().st_size / 1e6
    click.echo(f"wrote {path} ({size:.1f} MB; opens offline in any browser)")
