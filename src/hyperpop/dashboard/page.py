"""The page's data (:func:`page_data`): plain arrays per member, whole or only what changed
after the log position the page has, which the page merges and turns into plotly traces itself;
:func:`payload` is all of it, as the HTML report embeds it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hyperpop.dashboard.data import RunView
from hyperpop.dashboard.style import (
    exploit_label,
    log_scale,
    metric_value,
    param_value,
    score_value,
    source_metric,
    source_wall,
)
from hyperpop.population import Best
from hyperpop.summary import num

__all__ = ["page_data", "payload"]

T = TypeVar("T")


def page_data(
    view: RunView,
    *,
    since: int = -1,
    metrics: list[str] | None = None,
    times: bool = False,
    series_since: int | None = None,
    alive: bool | None = False,
) -> dict[str, Any]:
    """What the page draws, JSON-safe: every member's series as plain arrays, whole (``since``
    -1) or only what a page that has the log up to position ``since`` lacks, to merge.

    Per-member parts (``series``, ``configs``, ``nodes``) list the members whose points
    changed (a member with none is left out), the index each one's new points ``start`` at
    (the page drops what it has from there: the points of an interval still running get
    their wall times when it ends), and the points, concatenated member after member.
    ``exploits`` and ``rejuvenations`` start at an index too; ``members`` holds the changed
    table rows; ``summary``, the best member's ``lineage`` and schedule (``best``) are whole
    every time.

    Args:
        view: the run.
        since: the log position the page has (-1: nothing).
        metrics: whose values the series carry (default: the optimised metric only; the page
            asks for another when it is chosen, a report carries all).
        times: include each point's wall time (seconds since the run started) for the
            wall-time axis.
        series_since: the log position the page's series are at (default ``since``; -1 when
            it switches to a metric or axis it has not got).
        alive: whether the store's writer is alive (see :meth:`RunView.status`).
    """
    pop = view.pop
    main = pop.metric or "score"
    names = view.metric_names()
    wanted = [m for m in (metrics or [main]) if m in names] or [main]
    ss = min(_since(series_since, since), since)
    t0, span = _clock_span(view)
    axes = _Axes(main, wanted, times, t0)
    best = pop.best_model()  # the best every view shows (a kept checkpoint's, or a member's)
    params = list(view.params)
    return {
        "seq": view.seq,
        "since": since,
        "series_since": ss,
        "summary": view.summary(alive),
        "metric": main,
        "metrics": names,
        "mode": pop.mode,
        "params": params,
        "log_params": [p for p in params if log_scale(pop.space, p)],
        "clock": {"span": round(span, 3)},
        "members": view.member_rows(view.rows_changed(since)),
        "series": _series(view, axes, ss),
        "lineage": None if best is None else _lineage(view, axes, best.member),
        "exploits": _exploits(view, axes, ss),
        "rejuvenations": _rejuvenations(view, since),
        "configs": _configs(view, params, since),
        "nodes": _nodes(view, since),
        "best": None if best is None else _best(view, best),
    }


def payload(view: RunView, alive: bool | None = False) -> dict[str, Any]:
    """Everything the page shows, whole, JSON-safe: :func:`page_data` with every metric and
    the wall times, as a report embeds it (``alive``: whether the store's writer is alive,
    see :meth:`RunView.status`)."""
    return page_data(view, metrics=view.metric_names(), times=True, alive=alive)


def _clock_span(view: RunView) -> tuple[float, float]:
    # as _clock, without a pass over every report: the latest wall time is the latest report's
    # time (an interval's last step ends when its reports are recorded)
    if view.last_report_time is None:
        t0 = view.pop.started if view.pop.started is not None else 0.0
        return t0, 0.0
    t0 = view.pop.started if view.pop.started is not None else min(r.wall for r in view.reports)
    return t0, view.last_report_time - t0


def _since(value: int | None, default: int) -> int:
    return default if value is None else value


def _changed(
    view: RunView, part: str, points: Mapping[int, Sequence[Any]], since: int
) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The members of ``part`` whose points changed after log position ``since``: the page's
    index of them (``members``, the index each one's new points ``start`` at, their ``count``)
    and (member, start) pairs, in member order."""
    index: dict[str, Any] = {"members": [], "start": [], "count": []}
    changed = []
    for mid in sorted(points):
        i = view.changed_from(part, mid, since)
        if i < len(points[mid]):
            index["members"].append(mid)
            index["start"].append(i)
            index["count"].append(len(points[mid]) - i)
            changed.append((mid, i))
    return index, changed


def _flat(changed: list[tuple[int, int]], points: Mapping[int, Sequence[T]]) -> list[T]:
    """The new points of the ``changed`` (member, start) pairs, member after member."""
    return [p for mid, i in changed for p in points[mid][i:]]


@dataclass(frozen=True)
class _Axes:
    """What each plotted point carries: the values of the ``wanted`` metrics (``main`` is the
    optimised one) and, when ``times``, its wall time in seconds after ``t0``."""

    main: str
    wanted: list[str]
    times: bool
    t0: float

    def ys(
        self, items: Sequence[T], main: Callable[[T], Any], other: Callable[[T, str], Any]
    ) -> dict[str, list[Any]]:
        """Each wanted metric's value at each of ``items``: ``main(item)`` for the optimised
        metric, ``other(item, metric)`` for the others."""
        return {m: [main(x) if m == self.main else other(x, m) for x in items] for m in self.wanted}

    def timed(self, part: dict[str, Any], walls: Iterable[float | None]) -> dict[str, Any]:
        """``part`` with its points' wall times (``t``) when the page asked for them."""
        if self.times:
            part["t"] = [None if w is None else round(w - self.t0, 4) for w in walls]
        return part


def _series(view: RunView, axes: _Axes, since: int) -> dict[str, Any]:
    """The score plot's lines: per member, the points after what the page has."""
    series, changed = _changed(view, "scores", view.scores, since)
    points, sources = _flat(changed, view.scores), _flat(changed, view.sources)
    series.update(
        step=[p[0] for p in points],
        y=axes.ys(
            list(zip(points, sources)),
            lambda ps: ps[0][1],
            lambda ps, metric: source_metric(ps[1], metric),
        ),
    )
    return axes.timed(series, (None if s is None else source_wall(s) for s in sources))


def _lineage(view: RunView, axes: _Axes, member: int) -> dict[str, Any]:
    """The best model's reports through every copy: the steps, who made each, the values."""
    path = view.best_reports()
    lineage = {
        "member": member,
        "step": [r.step for r in path],
        "by": [r.member for r in path],
        "y": axes.ys(path, score_value, metric_value),
    }
    return axes.timed(lineage, (r.wall for r in path))


def _exploits(view: RunView, axes: _Axes, since: int) -> dict[str, Any]:
    """The exploits after log position ``since``: who copied whom, when, at what value."""
    i = view.exploits_from(since)
    ex = view.exploits[i:]
    exploits = {
        "start": i,
        "member": [e["member"] for e in ex],
        "donor": [e["donor"] for e in ex],
        "step": [e["step"] for e in ex],
        "text": [exploit_label(e) for e in ex],
        "y": axes.ys(ex, lambda e: e["score"], lambda e, m: source_metric(e["report"], m)),
    }
    return axes.timed(exploits, (e["time"] for e in ex))


def _rejuvenations(view: RunView, since: int) -> dict[str, Any]:
    """The rejuvenations after log position ``since``."""
    i = view.rejuvenations_from(since)
    rj = view.rejuvenations[i:]
    return {"start": i, "member": [r["member"] for r in rj], "at": [r["at"] for r in rj]}


def _configs(view: RunView, params: list[str], since: int) -> dict[str, Any]:
    """Each member's hyperparameters over its steps, after log position ``since``."""
    configs, changed = _changed(view, "configs", view.configs, since)
    points = _flat(changed, view.configs)
    configs.update(
        step=[step for step, _ in points],
        values={
            p: [None if cfg is None else param_value(cfg.get(p)) for _, cfg in points]
            for p in params
        },
    )
    return configs


def _nodes(view: RunView, since: int) -> dict[str, Any]:
    """The family tree's nodes (each member's ready points) after log position ``since``."""
    nodes, changed = _changed(view, "nodes", view.nodes, since)
    ready = _flat(changed, view.nodes)
    nodes.update(step=[step for step, _ in ready], score=[score for _, score in ready])
    return nodes


def _best(view: RunView, best: Best) -> dict[str, Any]:
    """The best model: where it is, its score and checkpoint, and its schedule."""
    return {
        "member": best.member,
        "step": best.step,
        "score": num(best.score),
        "checkpoint": best.checkpoint,
        "kept": best.seq is not None,  # an earlier checkpoint, not the member now
        "schedule": view.best_lineage(),
    }
