"""The live terminal view of a run (rich), and a plain log for ``--quiet``."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any

from hyperpop.population import MemberState, Population
from hyperpop.space import flatten_config as _flat

__all__ = ["LiveView", "LogProgress", "member_rows"]

log = logging.getLogger("hyperpop")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def _sort_key(pop: Population):
    def key(m: MemberState) -> tuple:
        s = m.last_score
        if s is None or math.isnan(s):
            return (1, 0.0, m.id)
        return (0, -s if pop.mode == "max" else s, m.id)

    return key


def member_rows(pop: Population, limit: int | None = None) -> list[dict[str, Any]]:
    """Members as display rows, best first."""
    last_edge = {e["member"]: e for e in pop.edges}  # later edges win
    rows = []
    for m in sorted(pop.members.values(), key=_sort_key(pop))[:limit]:
        last = last_edge.get(m.id)
        rows.append(
            {
                "member": m.id,
                "status": m.status,
                "step": m.step,
                "score": m.last_score,
                "config": _flat(m.config),
                "parent": m.parent,
                "exploits": m.exploits,
                "last_exploit": None if last is None else (last["donor"], last["step"]),
                "failures": m.failures,
            }
        )
    return rows


class LiveView:
    """A rich live table: each member's step, score, hyperparameters and last exploit.

    Args:
        rows: members shown (best first); the rest are summarised in the caption.
    """

    def __init__(self, rows: int = 20):
        from rich.console import Console

        self.rows = rows
        self.console = Console(stderr=False)
        self._live: Any = None
        self._t0 = time.time()

    def _render(self, pop: Population) -> Any:
        from rich.table import Table

        metric = pop.metric or "score"
        best = pop.best()
        title = (
            f"hyperpop · {len(pop.members)} members · {pop.reports} reports · "
            f"{len(pop.edges)} exploits · {pop.failures} failures · "
            f"best {metric}={_fmt(best.last_score) if best else '-'}"
        )
        table = Table(title=title, title_justify="left", expand=False)
        for col in ("member", "status", "step", metric):
            table.add_column(col, justify="right" if col != "status" else "left")
        names = list(_flat(next(iter(pop.members.values())).config)) if pop.members else []
        for n in names:
            table.add_column(n, justify="right")
        table.add_column("last exploit", justify="left")
        table.add_column("fail", justify="right")
        shown = member_rows(pop, self.rows)
        for r in shown:
            le = r["last_exploit"]
            table.add_row(
                str(r["member"]),
                r["status"],
                str(r["step"]),
                _fmt(r["score"]) if r["score"] is not None else "-",
                *[_fmt(r["config"].get(n)) for n in names],
                "-" if le is None else ("reset" if le[0] is None else f"← {le[0]} @ {le[1]}"),
                str(r["failures"]),
            )
        hidden = len(pop.members) - len(shown)
        if hidden > 0:
            table.caption = f"… and {hidden} more members"
        return table

    def __call__(self, pop: Population) -> None:
        from rich.live import Live

        if self._live is None:
            self._live = Live(
                self._render(pop), console=self.console, refresh_per_second=4, transient=False
            )
            self._live.start()
        else:
            self._live.update(self._render(pop))

    def close(self) -> None:
        """Stop refreshing (the last table stays on screen)."""
        if self._live is not None:
            self._live.stop()
            self._live = None


class LogProgress:
    """Log a one-line summary at most every ``every`` seconds (for ``--quiet`` and CI logs)."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._last = 0.0

    def __call__(self, pop: Population) -> None:
        now = time.time()
        if now - self._last < self.every and pop.alive():
            return
        self._last = now
        best = pop.best()
        steps = [m.step for m in pop.members.values()]
        log.info(
            "%d/%d members alive, steps %d-%d, %d reports, %d exploits, best %s=%s (member %s)",
            len(pop.alive()),
            len(pop.members),
            min(steps, default=0),
            max(steps, default=0),
            pop.reports,
            len(pop.edges),
            pop.metric,
            _fmt(best.last_score) if best else "-",
            best.id if best else "-",
        )
        sys.stderr.flush()

    def close(self) -> None:
        """Nothing to release."""
