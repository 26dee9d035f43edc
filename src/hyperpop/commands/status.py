"""``hyperpop status DB``: a run's status, counts and population table (also while it runs)."""

from __future__ import annotations

from typing import Any

import click

from hyperpop.commands._shared import dump, load_result

__all__ = ["status"]


def _words(n: int, what: str) -> str:
    return f"{n} {what}"


def _status_line(s: dict[str, Any], db: str) -> str:
    """The run's status in words, with what to do about an interrupted run."""
    status = s["status"]
    if status == "finished":
        return f"finished ({s['reason']})" if s["reason"] else "finished"
    if status == "interrupted":
        why = f"{s['reason']}; " if s["reason"] else ""
        return f"interrupted ({why}no driver is writing it; `hyperpop resume {db}` continues)"
    return status  # running, or "running or interrupted" (a driver on another host)


def _statuses(s: dict[str, Any]) -> str:
    """Members by status in words (``6 running, 2 finished``)."""
    order = ("running", "interrupted", "finished", "failed")
    items = sorted(
        s["statuses"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 9
    )
    return ", ".join(_words(n, str(k)) for k, n in items) or "none"


def _workers(result: Any) -> str:
    """How many members train at once: the last number the log gives (the start's, a resume's,
    a request's or the Ray cluster's), with ``auto`` for a run that follows its cluster."""
    from hyperpop.store import vocabulary as voc

    recorded = result.population.settings.get("workers")
    now = recorded if isinstance(recorded, int) else None
    for e in result.events:
        if isinstance(e.payload, (voc.RunResumed, voc.WorkersChanged)):
            now = e.payload.workers if e.payload.workers is not None else now
    if recorded == "auto":
        return "auto (following the Ray cluster" + ("" if now is None else f"; {now} now") + ")"
    return "-" if now is None else str(now)


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db: str, as_json: bool) -> None:
    """Show a run's status (works while it runs)."""
    from hyperpop.live import LiveView
    from hyperpop.summary import fmt

    result = load_result(db)
    s = result.summary()
    if as_json:
        click.echo(dump(s))
        return
    best = "-" if s["best_member"] is None else f"member {s['best_member']}"
    rows = [
        ("status", _status_line(s, db)),
        ("members", f"{s['members']} ({_statuses(s)})"),
        ("reports", s["reports"]),
        ("exploits", s["exploits"]),
        ("failures", s["failures"]),
        ("resumes", s["resumes"]),
        ("workers", _workers(result)),
        (
            "best",
            f"{best}, {s['metric']}={fmt(s['best_score'])}"
            if s["best_member"] is not None
            else "-",
        ),
        ("elapsed", f"{s['elapsed']:.1f}s"),
    ]
    for k, v in rows:
        click.echo(f"{k:>13}: {v}")
    if s["unrecorded_reports"]:
        click.echo(
            f"{'in flight':>13}: {s['unrecorded_reports']} reports of running intervals "
            "(recorded at their members' next ready point)"
        )
    if s["groups"]:
        click.echo(f"{'groups':>13}: {', '.join(f'{n} {g}' for g, n in s['groups'].items())}")
    if s["pinned"]:
        click.echo(f"{'pinned':>13}: {', '.join(map(str, s['pinned']))}")
    view = LiveView()
    view.console.print(view._render(result.population, interrupted=s["status"] == "interrupted"))
