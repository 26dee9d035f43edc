"""The ``hyperpop`` command line (also ``python -m hyperpop``)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
from typing import Any

import click

__all__ = ["main"]


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def _dump(obj: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, default=_json_default)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    return buf.getvalue()


def _load(db: str):
    from hyperpop.results import Result

    return Result.load(db)


def _best(result, db: str):
    """The best member, or one line saying that nothing has reported yet."""
    if result.population.best() is None:
        raise click.ClickException(
            f"no member has reported a score yet in {db}; wait for the first reports "
            f"(hyperpop status {db})"
        )
    return result.best


def _progress(quiet: bool):
    logging.basicConfig(
        level=logging.INFO if quiet else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    if quiet or not sys.stdout.isatty() and os.environ.get("HYPERPOP_LIVE") != "1":
        from hyperpop.live import LogProgress

        logging.getLogger("hyperpop").setLevel(logging.INFO)
        return LogProgress()
    from hyperpop.live import LiveView

    return LiveView()


def _print_best(result) -> None:
    if result.population.best() is None:
        click.echo("\nno member reported a score")
        return
    best = result.best
    click.echo(f"\nbest member {best.id}: {result.metric}={best.score:.6g} at step {best.step}")
    click.echo("its schedule (inherited part included):")
    rows = result.schedule(best.id)
    for r in rows:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("step", "trained_by")
        )
        click.echo(f"  from step {r['step']:>5} (trained by member {r['trained_by']:>3}): {params}")
    if result.path is not None:
        click.echo(f"\nstore: {result.path}   (hyperpop status {result.path})")


class _Errors(click.Group):
    """Turns hyperpop's own errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from hyperpop.checkpoints import CheckpointError
        from hyperpop.run import RunError, SettingsError
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


@click.group(cls=_Errors)
@click.version_option(package_name="hyperpop")
def main() -> None:
    """hyperpop: Population Based Training. Train a population, evolve its hyperparameters,
    keep the schedule and the lineage."""


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--storage", "-s", help="SQLite store (default: the file's settings, or runs/<name>.db)."
)
@click.option("--population", "-p", type=int, help="Number of members.")
@click.option("--workers", "-w", type=int, help="Members training at once.")
@click.option("--steps", type=int, help="Training steps per member (hp.Steps).")
@click.option("--seed", type=int, help="Seed.")
@click.option("--synchronous/--asynchronous", default=None, help="Generations or async.")
@click.option("--backend", type=click.Choice(["local", "ray"]), help="Where members train.")
@click.option("--address", help="Ray cluster address (auto, ray://host:10001...).")
@click.option(
    "--step-timeout",
    type=float,
    help="Seconds one interval may take before its worker is killed and it is retried.",
)
@click.option("--quiet", "-q", is_flag=True, help="Log lines instead of the live view.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store at the path first.")
def run(
    file: str,
    storage: str | None,
    population: int | None,
    workers: int | None,
    steps: int | None,
    seed: int | None,
    synchronous: bool | None,
    backend: str | None,
    address: str | None,
    step_timeout: float | None,
    quiet: bool,
    overwrite: bool,
) -> None:
    """Run the PBT job defined in FILE (it defines trainable, space and settings)."""
    import hyperpop as hp
    from hyperpop.run import RunExistsError
    from hyperpop.userfile import load_file

    rf = load_file(file)
    kw = dict(rf.settings)
    for key, value in (
        ("storage", storage),
        ("population", population),
        ("workers", workers),
        ("seed", seed),
        ("synchronous", synchronous),
        ("backend", backend),
        ("step_timeout", step_timeout),
    ):
        if value is not None:
            kw[key] = value
    if steps is not None:
        kw["budget"] = hp.Steps(steps)
    if address is not None:
        opts = dict(kw.get("backend_options") or {})
        opts["address"] = address
        kw["backend_options"] = opts
        kw.setdefault("backend", "ray")
    kw.setdefault("storage", os.path.join("runs", rf.path.stem + ".db"))
    if "metric" not in kw:
        raise click.ClickException(
            f"{file}: settings must name the metric (settings = dict(metric=...))"
        )
    if overwrite:
        kw["overwrite"] = True
    source = {"file": str(rf.path), "name": rf.trainable_name}
    click.echo(f"hyperpop: running {file} → {kw['storage']}", err=True)
    try:
        result = hp.run(rf.trainable, rf.space, progress=_progress(quiet), source=source, **kw)
    except RunExistsError as e:
        raise click.ClickException(
            f"{e.path} already holds a run; continue it with `hyperpop resume {e.path}`, "
            "replace it with --overwrite, or choose another --storage"
        ) from None
    _print_best(result)


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--workers", "-w", type=int, help="Members training at once.")
@click.option("--backend", type=click.Choice(["local", "ray"]), help="Where members train.")
@click.option("--address", help="Ray cluster address.")
@click.option("--step-timeout", type=float, help="Seconds one interval may take (default: as run).")
@click.option(
    "--trainable",
    "spec",
    help="FILE.py:Name or module:Name (default: where the store says it came from).",
)
@click.option("--quiet", "-q", is_flag=True, help="Log lines instead of the live view.")
def resume(
    db: str,
    workers: int | None,
    backend: str | None,
    address: str | None,
    step_timeout: float | None,
    spec: str | None,
    quiet: bool,
) -> None:
    """Continue the run stored in DB after a crash, kill -9, Ctrl-C or hyperpop stop.

    A run started from a Python script resumes as it is; one started from `python -c`, a
    notebook or a file that moved needs --trainable."""
    import hyperpop as hp
    from hyperpop.userfile import load_object

    opts = {"address": address} if address else None
    if address and backend is None:
        backend = "ray"
    result = hp.resume(
        db,
        load_object(spec) if spec else None,
        workers=workers,
        backend=backend,
        backend_options=opts,
        step_timeout=step_timeout,
        progress=_progress(quiet),
    )
    _print_best(result)


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db: str, as_json: bool) -> None:
    """Show a run's status (works while it runs)."""
    from hyperpop.live import LiveView

    result = _load(db)
    s = result.summary()
    if as_json:
        click.echo(_dump(s))
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


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
def best(db: str, fmt: str) -> None:
    """Print the best member (config, score, schedule)."""
    result = _load(db)
    b = _best(result, db)
    if fmt == "csv":
        click.echo(
            _csv(
                [
                    {
                        "member": b.id,
                        "score": b.score,
                        "step": b.step,
                        **{
                            f"config/{k}": v
                            for k, v in result.schedule(b.id)[-1].items()
                            if k not in ("step", "trained_by")
                        },
                    }
                ]
            ),
            nl=False,
        )
        return
    click.echo(
        _dump(
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


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--member", "-m", default="best", help="Member id or 'best'.")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json")
def schedule(db: str, member: str, fmt: str) -> None:
    """Print a member's hyperparameter schedule, inherited part included."""
    result = _load(db)
    if member == "best":
        rows = _best(result, db).schedule_rows()
    else:
        rows = result.schedule(member)
    click.echo(_csv(rows) if fmt == "csv" else _dump(rows), nl=fmt == "json")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--member", "-m", default="best", help="Member id or 'best' (the best model).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="File.")
def export(db: str, member: str, output: str) -> None:
    """Write a trained model's state to a file (the run's best checkpoint by default).

    PyTorch states are written with torch.save (torch.load(FILE, weights_only=True) opens
    them), anything else with pickle.
    """
    result = _load(db)
    if member == "best":
        b = _best(result, db)
        label = f"the best checkpoint (member {b.id} at step {b.step}, {result.metric}={b.score})"
    else:
        label = f"member {member}"
    try:
        how = result.export(output, member)
    except (KeyError, ValueError) as e:
        raise click.ClickException(str(e).strip("'\"")) from None
    click.echo(f"wrote {label} to {output} ({how})")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="csv")
def table(db: str, fmt: str) -> None:
    """Print every report (member, step, score, metrics, config)."""
    rows = _load(db).records()
    click.echo(_csv(rows) if fmt == "csv" else _dump(rows), nl=fmt == "json")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="csv")
def lineage(db: str, fmt: str) -> None:
    """Print who copied whom, and when."""
    rows = _load(db).lineage()
    click.echo(_csv(rows) if fmt == "csv" else _dump(rows), nl=fmt == "json")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--member", "-m", type=int, help="Stop only this member (the others go on).")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the driver."
)
def stop(db: str, member: int | None, timeout: float) -> None:
    """Ask the driver writing DB to stop the run (resume it later) or one member.

    Writes a request into the store, which the driver reads within a second; no signal is
    sent to any process."""
    from hyperpop.steer import Steer
    from hyperpop.store.sqlite import WriterLock

    holder = WriterLock(db).holder() or {}
    answer = Steer(db, timeout=timeout, origin="cli").stop(member)
    _echo_answer(answer)
    if member is None and answer.ok:
        click.echo(
            f"the driver (pid {holder.get('pid', '?')}) stopped; resume with: hyperpop resume {db}"
        )


def _echo_answer(answer: Any) -> None:
    """One line for the driver's answer to a request; a refusal exits with status 1."""
    line = f"request {answer.id} ({answer.kind}) {answer.status}: {answer.reason}"
    if answer.status == "refused":
        raise click.ClickException(line)
    click.echo(line)


#: optional subcommands, one module each in hyperpop/commands/ defining a click ``command``
#: (or a list of them, ``commands``)
_PLUGINS = ("replay", "dashboard", "report", "steer", "logs")


def _register_plugins() -> None:
    import importlib

    for name in _PLUGINS:
        modname = f"hyperpop.commands.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name in (modname, "hyperpop.commands"):
                continue
            raise
        for command in getattr(mod, "commands", None) or [mod.command]:
            main.add_command(command)


_register_plugins()

if __name__ == "__main__":
    main()
