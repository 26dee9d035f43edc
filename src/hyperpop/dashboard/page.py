"""The page's data (:func:`page_data`): plain arrays per member, whole or only what changed
after the log position the page has, which the page merges and turns into plotly traces itself;
:func:`payload` is all of it, as the HTML report embeds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
from hyperpop.summary import num

__all__ = ["page_data", "payload"]


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

    def when(source: Any) -> Any:
        return None if source is None else round(source_wall(source) - t0, 4)

    # the score plot's lines: per member, the points after what the page has
    series, changed = _changed(view, "scores", view.scores, ss)
    steps: list[Any] = []
    walls: list[Any] = []
    ys: dict[str, list[Any]] = {m: [] for m in wanted}
    for mid, i in changed:
        points, sources = view.scores[mid][i:], view.sources[mid][i:]
        steps += [p[0] for p in points]
        if times:
            walls += [when(src) for src in sources]
        for metric in wanted:
            if metric == main:
                ys[metric] += [p[1] for p in points]
            else:
                ys[metric] += [source_metric(src, metric) for src in sources]
    series.update(step=steps, y=ys)
    if times:
        series["t"] = walls

    best = pop.best_model()  # the best every view shows (a kept checkpoint's, or a member's)
    lineage: dict[str, Any] | None = None
    if best is not None:
        path = view.best_reports()
        lineage = {
            "member": best.member,
            "step": [r.step for r in path],
            "by": [r.member for r in path],
            "y": {
                m: [score_value(r) if m == main else metric_value(r, m) for r in path]
                for m in wanted
            },
        }
        if times:
            lineage["t"] = [round(r.wall - t0, 4) for r in path]

    i = view.exploits_from(ss)
    ex = view.exploits[i:]
    exploits: dict[str, Any] = {
        "start": i,
        "member": [e["member"] for e in ex],
        "donor": [e["donor"] for e in ex],
        "step": [e["step"] for e in ex],
        "text": [exploit_label(e) for e in ex],
        "y": {
            m: [e["score"] if m == main else source_metric(e["report"], m) for e in ex]
            for m in wanted
        },
    }
    if times:
        exploits["t"] = [round(e["time"] - t0, 4) for e in ex]

    i = view.rejuvenations_from(since)
    rj = view.rejuvenations[i:]
    rejuvenations = {
        "start": i,
        "member": [r["member"] for r in rj],
        "at": [r["at"] for r in rj],
    }

    params = list(view.params)
    configs, changed = _changed(view, "configs", view.configs, since)
    c_steps: list[Any] = []
    c_values: dict[str, list[Any]] = {p: [] for p in params}
    for mid, i in changed:
        pts = view.configs[mid][i:]
        c_steps += [step for step, _ in pts]
        for p in params:
            c_values[p] += [None if cfg is None else param_value(cfg.get(p)) for _, cfg in pts]
    configs.update(step=c_steps, values=c_values)

    nodes, changed = _changed(view, "nodes", view.nodes, since)
    n_steps: list[int] = []
    n_scores: list[Any] = []
    for mid, i in changed:
        ready = view.nodes[mid][i:]
        n_steps += [step for step, _ in ready]
        n_scores += [score for _, score in ready]
    nodes.update(step=n_steps, score=n_scores)

    rows = view.member_rows(view.rows_changed(since))
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
        "members": rows,
        "series": series,
        "lineage": lineage,
        "exploits": exploits,
        "rejuvenations": rejuvenations,
        "configs": configs,
        "nodes": nodes,
        "best": None
        if best is None
        else {
            "member": best.member,
            "step": best.step,
            "score": num(best.score),
            "checkpoint": best.checkpoint,
            "kept": best.seq is not None,  # an earlier checkpoint, not the member now
            "schedule": view.best_lineage(),
        },
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
