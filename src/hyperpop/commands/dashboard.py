"""``hyperpop dashboard DB``: a live web page of a run (needs ``hyperpop[dashboard]``)."""

from __future__ import annotations

import secrets

import click

__all__ = ["command"]


def _need_extra() -> None:
    try:
        import plotly  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise click.ClickException(
            f"the dashboard needs {e.name}: pip install 'hyperpop[dashboard]'"
        ) from None


def open_source(db: str):
    """The store's folded view, or one clear line if ``db`` is not a readable hyperpop store."""
    from hyperpop.dashboard.data import StoreSource

    source = StoreSource(db)
    if source.refresh() is None:
        source.close()
        raise click.ClickException(source.error or f"cannot read {db}")
    return source


def _check_port(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, port))
    except OSError as e:
        raise click.ClickException(
            f"cannot serve on {host}:{port} ({e.strerror}); choose another with --port"
        ) from None


@click.command("dashboard")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--port", "-p", type=int, default=8000, show_default=True, help="Port to serve on.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (0.0.0.0 shares the page with your network).",
)
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between updates."
)
@click.option(
    "--read-only", is_flag=True, help="No action buttons (no token: every action is refused)."
)
def command(db: str, port: int, host: str, interval: float, read_only: bool) -> None:
    """Serve a live web page of the run stored in DB (works while it runs).

    The page's action buttons (pin, stop, set, copy, add, budget) work only when it is opened
    with the token printed here: anyone else who reaches the page can only read it."""
    _need_extra()
    _check_port(host, port)
    source = open_source(db)
    from hyperpop.dashboard.app import serve

    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    token = None if read_only else secrets.token_urlsafe(18)
    click.echo(f"hyperpop dashboard of {db}: http://{shown}:{port}/   (Ctrl-C to stop)", err=True)
    if token is not None:
        click.echo(
            f"to steer the run from the page, open http://{shown}:{port}/?token={token}\n"
            f"(the token, for the X-Hyperpop-Token header: {token}; keep it to yourself)",
            err=True,
        )
    try:
        serve(db, host=host, port=port, interval=interval, source=source, token=token)
    except OSError as e:  # port in use, bad interface
        raise click.ClickException(f"cannot serve on {host}:{port}: {e}") from None
