"""Progress people can follow: a live terminal view (rich), plain periodic lines for files and
pipes, and a log for ``--quiet``.

Each is a :class:`View` (a :class:`~hyperpop.summary.ProgressView`): the driver hands it the
population and a :class:`RunState` (who trains now, who waits for a worker, the elapsed time),
a note now and then, and closes it at the end. A caller's callable is wrapped in a
:class:`FunctionView`."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from hyperpop.population import Population
from hyperpop.summary import RunState, exploit_count, fmt, member_rows, summary

__all__ = ["FunctionView", "LiveView", "LogProgress", "PlainProgress", "RunState", "View"]

log = logging.getLogger("hyperpop")


class View:
    """A progress display (see :class:`~hyperpop.summary.ProgressView`): subclasses draw the
    population in ``__call__``; a note and the close do nothing unless they say otherwise."""

    def __call__(self, pop: Population, state: RunState | None = None) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        """A line worth saying once (e.g. where members' output goes)."""

    def close(self) -> None:
        """The session ended."""


class FunctionView(View):
    """A caller's ``progress=fn``: ``fn(pop)`` after each poll (notes and the close pass it
    by)."""

    def __init__(self, fn: Callable[[Population], None]):
        self.fn = fn

    def __call__(self, pop: Population, state: RunState | None = None) -> None:
        self.fn(pop)


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class _Eta:
    """Steps done against the step budget, and the time left at the rate of this session."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None

    def __call__(self, pop: Population, state: RunState) -> tuple[int, int | None, float | None]:
        members = [m for m in pop.members.values() if m.status != "failed"]
        cap = state.max_steps
        done = 0
        for m in members:
            step = max(m.step, m.progress_step or 0)
            if cap is not None and (m.status == "finished" or step > cap):
                step = cap if m.status == "finished" else min(step, cap)
            done += step
        total = cap * len(members) if cap is not None else None
        if self._first is None:
            self._first = (state.elapsed, done)
        t0, d0 = self._first
        left = None
        if total is not None and state.elapsed > t0 and done > d0:
            left = (total - done) * (state.elapsed - t0) / (done - d0)
        return done, total, left


def _best(pop: Population) -> str | None:
    """``best <metric>=<score> (member <id>)`` for the run's best model, the best every view
    shows (:meth:`~hyperpop.population.Population.best_model`); None before any report."""
    best = pop.best_model()
    return None if best is None else f"best {pop.metric}={fmt(best.score)} (member {best.member})"


def counts(pop: Population, state: RunState | None) -> dict[str, int]:
    """Members training, queued, waiting (neither: a synchronous barrier, a lead limit),
    finished and failed."""
    alive = {m.id for m in pop.alive()}
    out = {"finished": 0, "failed": 0}
    for m in pop.members.values():
        if m.status in out:
            out[m.status] += 1
    if state is None:
        out["alive"] = len(alive)
        return out
    running = len(alive & state.running)
    queued = len(alive & state.queued - state.running)
    return {
        "training": running,
        "queued": queued,
        "waiting": len(alive) - running - queued,
        **out,
    }


def _members_line(c: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in c.items() if v or k in ("training", "alive"))


class LiveView(View):
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
        self._eta = _Eta()

    def _header(self, pop: Population, state: RunState) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        done, total, left = self._eta(pop, state)
        parts = [f"elapsed {_clock(state.elapsed)}"]
        if state.workers is not None:  # "auto": as many as the Ray cluster holds now
            auto = " (auto)" if pop.settings.get("workers") == "auto" else ""
            parts.append(f"workers {state.workers}{auto}")
        if total:
            parts.append(f"steps {done}/{total} ({100 * done / total:.0f}%)")
            parts.append(f"ETA {_clock(left)}")
        timing = " · ".join(parts)
        members = Text(f"members: {_members_line(counts(pop, state))}", overflow="ellipsis")
        if not total:
            return Group(Text(timing), members)
        # the bar gives way to the words on a narrow terminal (80 columns): nothing wraps
        width = max(10, min(30, self.console.width - len(timing) - 1))
        line = Table.grid(padding=(0, 1))
        line.add_row(ProgressBar(total=total, completed=done, width=width), timing)
        return Group(line, members)

    def _title(self, s: dict[str, Any]) -> Any:
        """The counts above the table, broken between parts (never inside one) to fit the
        terminal."""
        from rich.text import Text

        parts = [
            f"hyperpop · {s['members']} members",
            f"{s['reports']} reports",
            f"{s['exploits']} exploits",
            f"{s['failures']} failures",
            f"best {s['metric']}={fmt(s['best_score'])}",
        ]
        lines = [parts[0]]
        for part in parts[1:]:
            if len(lines[-1]) + 3 + len(part) <= self.console.width:
                lines[-1] += " · " + part
            else:
                lines.append(part)
        return Text("\n".join(lines), style="italic")

    def _render(
        self, pop: Population, state: RunState | None = None, *, interrupted: bool = False
    ) -> Any:
        """The view: header (with ``state``), counts and the table of members, best first.
        ``interrupted``: no driver runs, so members not finished are shown as interrupted."""
        from rich.console import Group
        from rich.table import Table

        s = summary(pop)
        metric = s["metric"]
        table = Table(expand=False)
        for col in ("member", "status", "step", metric):
            table.add_column(col, justify="right" if col != "status" else "left")
        shown = member_rows(pop, best_first=True, limit=self.rows)
        names = list(shown[0]["config"]) if shown else []
        for n in names:
            table.add_column(n, justify="right")
        table.add_column("last exploit", justify="left")
        table.add_column("fail", justify="right")
        for r in shown:
            le = r["last_edge"]
            status = str(r["status"])
            if status == "running" and interrupted:
                status = "interrupted"
            elif state is not None and status == "running":
                status = (
                    "training"
                    if r["member"] in state.running
                    else "queued"
                    if r["member"] in state.queued
                    else "waiting"
                )
            if r["pinned"]:
                status += " (pinned)"
            table.add_row(
                str(r["member"]),
                status,
                str(r["step"]),
                fmt(r["score"]),
                *[fmt(r["config"].get(n)) for n in names],
                "-" if le is None else ("reset" if le[0] is None else f"← {le[0]} @ {le[1]}"),
                str(r["failures"]),
            )
        hidden = len(pop.members) - len(shown)
        if hidden > 0:
            table.caption = f"… and {hidden} more members"
        if state is None:
            return Group(self._title(s), table)
        return Group(self._header(pop, state), self._title(s), table)

    def note(self, text: str) -> None:
        """A line above the live view (e.g. where members' output goes)."""
        self.console.print(f"hyperpop: {text}", markup=False, highlight=False)

    def __call__(self, pop: Population, state: RunState | None = None) -> None:
        from rich.live import Live

        if self._live is None:
            self._live = Live(
                self._render(pop, state),
                console=self.console,
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        else:
            self._live.update(self._render(pop, state))

    def close(self) -> None:
        """Stop refreshing (the last table stays on screen)."""
        if self._live is not None:
            self._live.stop()
            self._live = None


class LogProgress(View):
    """Log a one-line summary at most every ``every`` seconds (for ``--quiet`` and CI logs)."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self._last = 0.0
        self._said = ""

    def __call__(self, pop: Population, state: RunState | None = None) -> None:
        now = time.time()
        if now - self._last < self.every and pop.alive():
            return
        steps = [m.step for m in pop.members.values()]
        text = (
            f"{len(pop.alive())}/{len(pop.members)} members alive, steps "
            f"{min(steps, default=0)}-{max(steps, default=0)}, {pop.reports} reports, "
            f"{exploit_count(pop)} exploits, {_best(pop) or f'best {pop.metric}=- (member -)'}"
        )
        if text == self._said:  # the end is shown once, however often it is handed over
            return
        self._last, self._said = now, text
        log.info("%s", text)
        sys.stderr.flush()

    def note(self, text: str) -> None:
        """Log a line (e.g. where members' output goes)."""
        log.info("%s", text)

    def close(self) -> None:
        """Nothing to release."""


class PlainProgress(View):
    """One plain line at most every ``every`` seconds, and one at the end: for files, pipes and
    job logs (nohup, SLURM, CI), where a live table would be cut or repeated.

    Args:
        every: seconds between lines.
        stream: where to write (default: standard error).
    """

    def __init__(self, every: float = 10.0, stream: TextIO | None = None):
        self.every = every
        self.stream = stream
        self._last = time.monotonic()  # the first line after `every` seconds; the last at close
        self._eta = _Eta()
        self._pop: Population | None = None
        self._state = RunState()
        self._said = ""

    def line(self, pop: Population, state: RunState) -> str:
        """The progress line for ``pop`` in ``state``."""
        done, total, left = self._eta(pop, state)
        parts = [f"hyperpop {_clock(state.elapsed)}"]
        if total:
            parts.append(f"steps {done}/{total} ({100 * done / total:.0f}%), ETA {_clock(left)}")
        parts.append(f"members: {_members_line(counts(pop, state))}")
        parts.append(f"{pop.reports} reports, {exploit_count(pop)} exploits")
        best = _best(pop)
        if best is not None:
            parts.append(best)
        return " · ".join(parts)

    def _write(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (e.g. where members' output goes)."""
        self._write(f"hyperpop: {text}")

    def __call__(self, pop: Population, state: RunState | None = None) -> None:
        self._pop, self._state = pop, state or self._state
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        self._said = self.line(pop, self._state)
        self._write(self._said)

    def close(self) -> None:
        """Write the last line (unless it was just written)."""
        if self._pop is not None:
            text = self.line(self._pop, self._state)
            if text != self._said:
                self._write(text)
            self._pop = None
