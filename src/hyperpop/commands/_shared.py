"""What the commands share: JSON and CSV output, loading a run, the driver's answers."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import click

__all__ = ["best_of", "dump", "echo_answer", "load_result", "to_csv"]


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def dump(obj: Any) -> str:
    """``obj`` as indented JSON (NaN and infinities as null, numpy scalars as numbers)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, default=_json_default)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV, the union of their keys as columns (dicts and lists as JSON)."""
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


def load_result(db: str) -> Any:
    """The :class:`hyperpop.results.Result` stored in ``db``."""
    from hyperpop.results import Result

    return Result.load(db)


def best_of(result: Any, db: str) -> Any:
    """The best member of ``result``, or one line saying that nothing has reported yet."""
    if result.population.best() is None:
        raise click.ClickException(
            f"no member has reported a score yet in {db}; wait for the first reports "
            f"(hyperpop status {db})"
        )
    return result.best


def echo_answer(answer: Any) -> None:
    """One line for the driver's answer to a request; a refusal exits with status 1."""
    line = f"request {answer.id} ({answer.kind}) {answer.status}: {answer.reason}"
    if answer.status == "refused":
        raise click.ClickException(line)
    click.echo(line)
