"""``hyperpop run FILE`` and ``hyperpop resume DB``: train a population, with a live view."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from hyperpop.settings import TABLE

__all__ = ["resume", "run"]


def _progress(quiet: bool) -> Any:
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


def _tracker_options(f: Any) -> Any:
    """``--tensorboard DIR``, ``--mlflow URI`` and ``--wandb PROJECT`` (hyperpop.callbacks)."""
    f = click.option(
        "--wandb",
        "wandb_project",
        metavar="PROJECT",
        help="Log to Weights & Biases: a run per member, grouped (WANDB_MODE=offline: files).",
    )(f)
    f = click.option(
        "--mlflow",
        "mlflow_uri",
        metavar="URI",
        help="Log to MLflow at URI (sqlite:///mlflow.db, http://host:5000): a run per member.",
    )(f)
    return click.option(
        "--tensorboard",
        "tensorboard_dir",
        metavar="DIR",
        type=click.Path(file_okay=False),
        help="Write TensorBoard logs to DIR: a folder per member.",
    )(f)


def _trackers(tensorboard_dir: str | None, mlflow_uri: str | None, wandb: str | None) -> list:
    """The tracker callbacks the options ask for (a missing library names its extra)."""
    from hyperpop import callbacks

    out: list = []
    try:
        if tensorboard_dir:
            out.append(callbacks.TensorBoard(tensorboard_dir))
        if mlflow_uri:
            out.append(callbacks.MLflow(mlflow_uri))
        if wandb:
            out.append(callbacks.WandB(wandb))
    except ImportError as e:
        raise click.ClickException(str(e)) from None
    return out


def _print_best(result: Any) -> None:
    if result.population.best() is None:
        click.echo("\nno member reported a score")
        return
    best = result.best
    click.echo(f"\nbest member {best.id}: {result.metric}={best.score:.6g} at step {best.step}")
    click.echo("its schedule (inherited part included):")
    rows = result.schedule_rows(best.id)
    for r in rows:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in ("step", "trained_by")
        )
        click.echo(f"  from step {r['step']:>5} (trained by member {r['trained_by']:>3}): {params}")
    if result.path is not None:
        click.echo(f"\nstore: {result.path}   (hyperpop status {result.path})")


def _check_settings(file: str, settings: dict[str, Any]) -> None:
    """One line for a setting ``hp.run`` does not take (a typo), naming the closest one."""
    import difflib
    import inspect

    import hyperpop as hp

    known = [
        name
        for name, p in inspect.signature(hp.run).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"settings are: {', '.join(known)}"
            raise click.ClickException(f"{file}: unknown setting {key!r} in settings; {hint}")


def _setting_options(*, resume: bool) -> Callable[[Any], Any]:
    """An option for each setting the table gives one (hyperpop.settings.TABLE); for resume,
    those a resumed run may change. Each is None unless given: the run file's settings, or
    the recorded ones, stay."""

    def add(f: Any) -> Any:
        for name, setting in reversed(TABLE.items()):
            cli = setting.cli
            if cli is None or (resume and not cli.resume):
                continue
            kind = click.Choice(list(cli.type)) if isinstance(cli.type, tuple) else cli.type
            f = click.option(
                *cli.flags,
                name,
                type=None if kind is bool else kind,
                default=None,
                metavar=cli.metavar,
                help=_help(setting.help, "as recorded" if resume else cli.default),
            )(f)
        return f

    return add


def _help(text: str, default: str) -> str:
    return f"{text[:-1]} (default: {default})." if default else text


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The settings given as options, as hp.run and hp.resume take them (``--steps 12``:
    ``budget=hp.Steps(12)``)."""
    return {
        name: TABLE[name].cli.value(value)  # type: ignore[union-attr]
        for name, value in options.items()
        if value is not None
    }


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--storage", "-s", help="SQLite store (default: the file's settings, or runs/<name>.db)."
)
@_setting_options(resume=False)
@click.option("--address", help="Ray cluster address (auto, ray://host:10001...).")
@click.option("--quiet", "-q", is_flag=True, help="Log lines instead of the live view.")
@click.option("--overwrite", is_flag=True, help="Delete an existing store at the path first.")
@_tracker_options
def run(
    file: str,
    storage: str | None,
    address: str | None,
    quiet: bool,
    overwrite: bool,
    tensorboard_dir: str | None,
    mlflow_uri: str | None,
    wandb_project: str | None,
    **settings: Any,
) -> None:
    """Run the PBT job defined in FILE (it defines trainable, space and settings); an option
    overrides the file's setting."""
    import hyperpop as hp
    from hyperpop.errors import RunExistsError
    from hyperpop.userfile import load_file

    rf = load_file(file)
    _check_settings(file, rf.settings)
    kw = {**rf.settings, **_given(settings)}
    if storage is not None:
        kw["storage"] = storage
    if address is not None:
        opts = dict(kw.get("backend_options") or {})
        opts["address"] = address
        kw["backend_options"] = opts
        kw.setdefault("backend", "ray")
    kw.setdefault("storage", os.path.join("runs", rf.path.stem + ".db"))
    trackers = _trackers(tensorboard_dir, mlflow_uri, wandb_project)
    if trackers:
        kw["callbacks"] = [*(kw.get("callbacks") or []), *trackers]
    if "metric" not in kw:
        raise click.ClickException(
            f"{file}: settings must name the metric (settings = dict(metric=...), or --metric)"
        )
    if overwrite:
        kw["overwrite"] = True
    click.echo(f"hyperpop: running {file} → {kw['storage']}", err=True)
    try:
        result = hp.run(rf.trainable, rf.space, progress=_progress(quiet), **kw)
    except RunExistsError as e:
        raise click.ClickException(
            f"{e.path} already holds a run; continue it with `hyperpop resume {e.path}`, "
            "replace it with --overwrite, or choose another --storage"
        ) from None
    _print_best(result)


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@_setting_options(resume=True)
@click.option("--address", help="Ray cluster address.")
@click.option(
    "--trainable",
    "spec",
    help="FILE.py:Name or module:Name (default: where the store says it came from).",
)
@click.option("--quiet", "-q", is_flag=True, help="Log lines instead of the live view.")
@_tracker_options
def resume(
    db: str,
    address: str | None,
    spec: str | None,
    quiet: bool,
    tensorboard_dir: str | None,
    mlflow_uri: str | None,
    wandb_project: str | None,
    **settings: Any,
) -> None:
    """Continue the run stored in DB after a crash, kill -9, Ctrl-C or hyperpop stop.

    A run started from a Python script resumes as it is; one started from `python -c`, a
    notebook or a file that moved needs --trainable."""
    import hyperpop as hp
    from hyperpop.userfile import load_object

    given = _given(settings)
    if address and "backend" not in given:
        given["backend"] = "ray"
    result = hp.resume(
        db,
        load_object(spec) if spec else None,
        backend_options={"address": address} if address else None,
        progress=_progress(quiet),
        callbacks=_trackers(tensorboard_dir, mlflow_uri, wandb_project),
        **given,
    )
    _print_best(result)
