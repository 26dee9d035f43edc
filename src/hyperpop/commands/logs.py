"""``hyperpop logs DB --member N [-f]``: a member's stdout and stderr (``DB-logs/member-N.log``)."""

from __future__ import annotations

import sys
import time

import click

__all__ = ["command"]


@click.command("logs")
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--member", "-m", type=int, help="The member whose output to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the run's driver lives.")
@click.option("--tail", "-n", "lines", type=int, help="Only the last N lines.")
def command(db: str, member: int | None, follow: bool, lines: int | None) -> None:
    """Show what a member printed (stdout and stderr of its trainable), or list the logs."""
    from hyperpop.checkpoints import log_dir_for, log_path_for
    from hyperpop.store.sqlite import WriterLock

    if member is None:
        logs = sorted(log_dir_for(db).glob("member-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        if not logs:
            raise click.ClickException(f"no member logs beside {db} (in {log_dir_for(db)})")
        for p in logs:
            click.echo(f"{p}  ({p.stat().st_size} bytes)")
        click.echo(f"show one with: hyperpop logs {db} --member N [-f]")
        return
    path = log_path_for(db, member)
    lock = WriterLock(db)
    if not path.exists():
        if not follow or not lock.held():
            raise click.ClickException(
                f"member {member} has no log yet ({path}); logs are written for runs with a "
                "storage path, from the member's first interval on"
            )
        while not path.exists() and lock.held():
            time.sleep(0.2)
        if not path.exists():
            return
    with open(path, "rb") as f:
        text = f.read()
        if lines is not None:
            text = b"\n".join(text.splitlines()[-lines:]) + b"\n" if text else text
        _out(text)
        while follow:
            chunk = f.read()
            if chunk:
                _out(chunk)
                continue
            if not lock.held():  # the driver is gone: nothing more will be written
                _out(f.read())
                return
            time.sleep(0.2)


def _out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
