"""The dashboard's data and plots: the page's data (:func:`page_data`), and plotly figure
specs (plain dicts) and figures for notebooks.

The page and the HTML report draw from :func:`page_data`: plain arrays per member, whole or
only what changed after the log position the page has, which the page merges and turns into
plotly traces itself. The ``*_spec`` functions return the same plots as the JSON plotly.js
renders (no plotly import needed), the ``plot_*`` functions wrap them in
:class:`plotly.graph_objects.Figure` objects for ``Result.plot_*()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hyperpop.dashboard.data import RunView
from hyperpop.summary import Report, is_number, num

__all__ = [
    "lineage_spec",
    "log_axis",
    "page_data",
    "payload",
    "plot_lineage",
    "plot_schedule",
    "plot_scores",
    "robust_range",
    "schedule_spec",
    "scores_spec",
]

#: the score plot's x axes: training steps, or wall time since the run started
X_AXES = ("step", "time")

#: beyond this many nodes the family tree draws them as a heatmap (one image)
MAX_MARKERS = 3000
#: columns of that heatmap at most (ready points are binned beyond it)
MAX_COLUMNS = 600
BEST = "#d62728"
EDGE = "rgba(90,90,90,0.45)"


def member_colour(member: int) -> str:
    """A stable, well-spread colour for a member (golden-angle hues)."""
    return f"hsl({(member * 137.508) % 360:.0f},65%,42%)"


def _layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    layout = {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "xaxis": {"title": {"text": x}, "zeroline": False},
        "yaxis": {"title": {"text": y}, "zeroline": False},
        "hovermode": "closest",
        "margin": {"l": 60, "r": 20, "t": 50, "b": 45},
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1, "yanchor": "bottom"},
        "uirevision": "keep",  # keep the user's zoom while the page updates
        "plot_bgcolor": "#fafafa",
    }
    layout.update(extra)
    return layout


def _xy(points: list[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    return [p[0] for p in points], [p[1] for p in points]  # already JSON-safe


def _clock(view: RunView) -> tuple[float, float, str]:
    """The wall-time axis: its origin (the run's start), and seconds per unit and the unit
    (seconds, minutes or hours, by the run's length)."""
    walls = [r.wall for r in view.reports]
    t0 = view.pop.started if view.pop.started is not None else min(walls, default=0.0)
    span = max(walls, default=t0) - t0
    for seconds, unit in ((3600.0, "h"), (60.0, "min")):
        if span >= 3 * seconds:
            return t0, seconds, unit
    return t0, 1.0, "s"


def _metric_value(report: Report | None, metric: str) -> Any:
    value = None if report is None else report.metrics.get(metric)
    return num(value) if is_number(value) else None


def _score(report: Report) -> Any:
    return None if report.score is None else num(float(report.score))


#: a positive metric whose largest value is this many times its smallest gets a log y axis
LOG_SPAN = 100.0


def log_axis(values: list[Any]) -> bool:
    """Whether values are best shown on a log axis: all positive, spanning at least two
    decades (:data:`LOG_SPAN`), as a loss falling from 1 to 0.001 does."""
    v = np.fromiter((x for x in values if x is not None), dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() <= 0:
        return False
    return bool(v.max() >= LOG_SPAN * v.min())


def robust_range(values: list[Any], better: str | None, log: bool = False) -> list[float] | None:
    """A y range that shows where most values are: from the 5% to the 95% quantile, the
    ``better`` side (``"max"`` or ``"min"``, if known) kept to its extreme so the best values
    always show, padded by 5%. None (the full range) unless that cuts at least half of it: the
    zoom is for outliers (diverged members, the first steps' scores), not for smooth curves.
    With ``log``, all of it in decades (plotly's log axis range is in powers of ten)."""
    v = np.fromiter((x for x in values if x is not None), dtype=float)  # JSON-safe numbers
    v = v[np.isfinite(v)]
    if log:
        v = np.log10(v[v > 0])
    if v.size < 4:
        return None
    lo, hi = (float(q) for q in np.quantile(v, [0.05, 0.95]))
    low, high = float(v.min()), float(v.max())
    if better == "max":
        hi = high
    elif better == "min":
        lo = low
    if hi - lo > 0.5 * (high - low):
        return None
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
    return [num(lo - pad), num(hi + pad)]


def _trend(values: list[Any]) -> str | None:
    """``"max"`` if the values end higher than they start, ``"min"`` if lower."""
    finite = [v for v in values if is_number(v) and math.isfinite(v)]
    if len(finite) < 2 or finite[0] == finite[-1]:
        return None
    return "max" if finite[-1] > finite[0] else "min"


def _exploit_label(e: dict[str, Any]) -> str:
    label = f"member {e['member']} copied member {e['donor']} at step {e['step']}"
    return label + (" (by user)" if e.get("by") == "user" else "")


def scores_spec(view: RunView, metric: str | None = None, x: str = "step") -> dict[str, Any]:
    """A metric over training, one thin line per member, exploits marked where a member jumps
    to its donor's weights, and the best member's lineage drawn thick: the recorded scores of
    its weights step by step, through every copy (where the member's own line dives, the
    lineage goes on along the donor's).

    Args:
        view: the run.
        metric: any numeric metric the trainable reported (default: the optimised one).
        x: ``"step"`` (training steps) or ``"time"`` (wall time since the run started).

    The y axis is zoomed to where the values are (:func:`robust_range`); double-click the
    plot (or untick "zoom to the scores" on the page) for the full range.
    """
    pop = view.pop
    main = pop.metric or "score"
    metric = metric or main
    names = view.metric_names()
    if metric not in names:
        raise ValueError(f"no metric {metric!r} in this run; it reported {names}")
    if x not in X_AXES:
        raise ValueError(f"x must be one of {list(X_AXES)}, got {x!r}")
    t0, unit_s, unit = _clock(view)
    xlabel = "training step" if x == "step" else f"wall time ({unit})"

    def xv(step: int, when: float) -> Any:
        return step if x == "step" else round((when - t0) / unit_s, 4)

    def yv(score: Any, report: Report | None) -> Any:
        return score if metric == main else _metric_value(report, metric)

    meta = {"metric": metric, "xlabel": "step" if x == "step" else f"{unit}"}
    hover = "%{meta.xlabel} %{x}<br>%{meta.metric} %{y:.4g}"
    data: list[dict[str, Any]] = []
    values: list[Any] = []
    for mid in sorted(view.scores):
        points, sources = view.scores[mid], view.sources[mid]
        # a source is the point's Report, or (time, report) at a jump; None at a gap
        if x == "step":
            xs = [p[0] for p in points]
        else:
            xs = [
                None if s is None else xv(0, s.wall if isinstance(s, Report) else s[0])
                for s in sources
            ]
        if metric == main:
            ys = [p[1] for p in points]
        else:
            ys = [
                None if s is None else _metric_value(s if isinstance(s, Report) else s[1], metric)
                for s in sources
            ]
        values += ys
        data.append(
            {
                "type": "scatter",  # SVG: one path per member; WebGL is slower without a GPU
                "mode": "lines",
                "x": xs,
                "y": ys,
                "name": f"member {mid}",
                "line": {"width": 1.2, "color": member_colour(mid)},
                "opacity": 0.75,
                "showlegend": False,
                "hovertemplate": f"member {mid}<br>{hover}<extra></extra>",
                "meta": {"kind": "member", "member": mid, **meta},
            }
        )
    best = pop.best()
    path = list(view.lineage_reports(best.id).values()) if best is not None else []
    lineage_y = [_score(r) if metric == main else _metric_value(r, metric) for r in path]
    if best is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": [xv(r.step, r.wall) for r in path],
                "y": lineage_y,
                "text": [f"trained by member {r.member}" for r in path],
                "name": f"best member {best.id}'s lineage",
                "line": {"width": 3, "color": BEST},
                "hovertemplate": f"best member {best.id}'s lineage: %{{text}}<br>{hover}"
                "<extra></extra>",
                "meta": {"kind": "lineage", "member": best.id, "steps": len(path), **meta},
            }
        )
    ex = view.exploits
    data.append(
        {
            "type": "scatter",
            "mode": "markers",
            "x": [xv(e["step"], e["time"]) for e in ex],
            "y": [yv(e["score"], e["report"]) for e in ex],
            "text": [_exploit_label(e) for e in ex],  # the same for every metric and axis
            "name": "exploit (takes the donor's weights)",
            "marker": {"symbol": "triangle-up", "size": 7, "color": "#222", "opacity": 0.8},
            "hovertemplate": f"%{{text}}<br>{hover}<extra></extra>",
            "meta": {"kind": "exploits", "count": len(ex), **meta},
        }
    )
    better = pop.mode if metric == main else _trend(lineage_y)
    log = log_axis(values)
    span = robust_range(values, better, log=log)
    title = f"{metric} over training" + (
        f" ({'higher' if pop.mode == 'max' else 'lower'} is better)" if metric == main else ""
    )
    layout = _layout(title, xlabel, metric, height=420)
    layout["yaxis"]["type"] = "log" if log else "linear"
    layout["yaxis"]["autorange"] = span is None
    if span is not None:
        layout["yaxis"]["range"] = span
    return {"data": data, "layout": layout}


def _value(v: Any) -> Any:
    if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float))):
        return str(v)
    return num(v)


def _log_scale(space: dict[str, Any], name: str) -> bool:
    """Whether parameter ``name`` (``"opt/lr"`` for nested ones) is log-uniform. The stored
    space is flat, keyed by the full path."""
    spec = space.get(name)
    return isinstance(spec, dict) and bool(spec.get("log"))


def schedule_spec(view: RunView) -> dict[str, Any]:
    """Each hyperparameter over training steps for every member (thin lines), with the best
    member's schedule along its lineage (inherited part included) drawn thick."""
    pop = view.pop
    params = view.params or ["(no hyperparameters)"]
    n = len(params)
    gap = 0.06 if n > 1 else 0.0
    height = (1.0 - gap * (n - 1)) / n
    layout = _layout(
        "hyperparameter schedules (best member's lineage in red)",
        "training step",
        "",
        height=max(320, 200 * n + 80),
        showlegend=True,
    )
    data: list[dict[str, Any]] = []
    best = pop.best()
    lineage = view.best_lineage()
    for i, p in enumerate(params):
        axis = "" if i == 0 else str(i + 1)
        top = 1.0 - i * (height + gap)
        yaxis = {
            "domain": [max(0.0, top - height), top],
            "title": {"text": p},
            "zeroline": False,
        }
        if _log_scale(pop.space, p):
            yaxis["type"] = "log"
        layout[f"yaxis{axis}"] = yaxis
        if i:
            layout[f"xaxis{axis}"] = {
                "matches": "x",
                "anchor": f"y{axis}",
                "zeroline": False,
                "showticklabels": i == n - 1,
                "title": {"text": "training step" if i == n - 1 else ""},
            }
        else:
            layout["xaxis"].update({"anchor": "y", "showticklabels": n == 1})
            if n > 1:
                layout["xaxis"]["title"] = {"text": ""}
        xs: list[Any] = []
        ys: list[Any] = []
        texts: list[Any] = []
        members = 0
        for mid in sorted(view.configs):
            pts = view.configs[mid]
            if not pts:
                continue
            members += 1
            for step, cfg in pts:
                xs.append(step)
                ys.append(None if cfg is None else _value(cfg.get(p)))
                texts.append(f"member {mid}")
            xs.append(pop.members[mid].step)
            ys.append(ys[-1])
            texts.append(f"member {mid}")
            xs.append(None)
            ys.append(None)
            texts.append(None)
        ref = {"xaxis": "x" if i == 0 else f"x{axis}", "yaxis": f"y{axis}" if axis else "y"}
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": xs,
                "y": ys,
                "text": texts,
                "line": {"shape": "hv", "width": 1, "color": "rgba(31,119,180,0.45)"},
                "name": "members",
                "legendgroup": "members",
                "showlegend": i == 0,
                "hovertemplate": f"%{{text}}<br>step %{{x}}<br>{p} %{{y}}<extra></extra>",
                "meta": {"kind": "population", "param": p, "members": members},
                **ref,
            }
        )
        if best is not None and lineage:
            bx = [s["step"] for s in lineage] + [best.step]
            by = [_value(s["config"].get(p)) for s in lineage]
            by.append(by[-1])
            bt = [f"trained by member {s['member']}" for s in lineage] + ["now"]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": bx,
                    "y": by,
                    "text": bt,
                    "line": {"shape": "hv", "width": 3, "color": BEST},
                    "marker": {"size": 5},
                    "name": f"best member {best.id}'s lineage",
                    "legendgroup": "best",
                    "showlegend": i == 0,
                    "hovertemplate": f"step %{{x}}<br>{p} %{{y}}<br>%{{text}}<extra></extra>",
                    "meta": {"kind": "best", "param": p, "member": best.id},
                    **ref,
                }
            )
    return {"data": data, "layout": layout}


def _node_markers(view: RunView) -> dict[str, Any]:
    pop = view.pop
    metric = pop.metric or "score"
    nx: list[int] = []
    ny: list[int] = []
    nc: list[Any] = []
    for mid in sorted(view.nodes):
        pts = view.nodes[mid]
        m = pop.members[mid]
        if m.last_score is not None and (not pts or pts[-1][0] != m.step):
            pts = [*pts, (m.step, num(m.last_score))]  # where the member is now
        for step, score in pts:
            nx.append(step)
            ny.append(mid)
            nc.append(score)
    return {
        "type": "scatter",
        "mode": "markers",
        "x": nx,
        "y": ny,
        "name": "member at a ready point",
        "marker": {
            "size": 7,
            "color": nc,
            "colorscale": "Viridis",
            "reversescale": pop.mode == "min",
            "showscale": True,
            "colorbar": {"title": {"text": metric}, "thickness": 12},
            "line": {"width": 0},
        },
        "hovertemplate": f"member %{{y}}<br>step %{{x}}<br>{metric} %{{marker.color:.4g}}"
        "<extra></extra>",
        "showlegend": False,
        "meta": {"kind": "nodes", "members": len(view.nodes)},
    }


def _node_heatmap(view: RunView) -> dict[str, Any]:
    # many nodes: one cell per member and ready point (binned beyond MAX_COLUMNS) is drawn as
    # one image, where tens of thousands of markers would take seconds
    pop = view.pop
    metric = pop.metric or "score"
    steps = sorted({s for pts in view.nodes.values() for s, _ in pts})
    if len(steps) > MAX_COLUMNS:
        lo, hi = steps[0], steps[-1]
        width = max(1, -(-(hi - lo + 1) // MAX_COLUMNS))
        columns = list(range(lo, hi + 1, width))
        index = {s: (s - lo) // width for s in steps}
    else:
        columns = steps
        index = {s: i for i, s in enumerate(steps)}
    members = sorted(view.nodes)
    z: list[list[Any]] = []
    for mid in members:
        row: list[Any] = [None] * len(columns)
        for step, score in view.nodes[mid]:
            row[index[step]] = score
        z.append(row)
    return {
        "type": "heatmap",
        "x": columns,
        "y": members,
        "z": z,
        "colorscale": "Viridis",
        "reversescale": pop.mode == "min",
        "colorbar": {"title": {"text": metric}, "thickness": 12},
        "hoverongaps": False,
        "hovertemplate": f"member %{{y}}<br>step %{{x}}<br>{metric} %{{z:.4g}}<extra></extra>",
        "showlegend": False,
        "meta": {"kind": "nodes", "members": len(members)},
    }


def lineage_spec(view: RunView) -> dict[str, Any]:
    """The family tree: each member a row of nodes (its ready points) over training steps,
    coloured by score; exploit edges from donor to receiver; the best member's lineage in red.

    Beyond :data:`MAX_MARKERS` nodes, the nodes are drawn as a heatmap (one cell per member
    and ready point) and the edges lose their arrow heads, so big runs stay responsive.
    """
    pop = view.pop
    total = sum(len(v) for v in view.nodes.values()) + len(view.nodes)
    big = total > MAX_MARKERS
    data: list[dict[str, Any]] = [_node_heatmap(view) if big else _node_markers(view)]
    ex = view.exploits
    ex_x: list[Any] = []
    ex_y: list[Any] = []
    ex_t: list[Any] = []
    labels = [_exploit_label(e) for e in ex]
    for e, label in zip(ex, labels):
        ex_x += [e["step"], e["step"], None]
        ex_y += [e["donor"], e["member"], None]
        ex_t += [label, label, None]
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "x": ex_x,
            "y": ex_y,
            "text": ex_t,
            "line": {"width": 1, "color": EDGE if not big else "rgba(255,255,255,0.55)"},
            "name": "exploit: donor → receiver",
            "hovertemplate": "%{text}<extra></extra>",
            "meta": {"kind": "edges", "count": len(ex)},
        }
    )
    if not big:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [e["step"] for e in ex],
                "y": [e["member"] for e in ex],
                "text": labels,
                "marker": {
                    "symbol": [
                        "triangle-up" if e["member"] < e["donor"] else "triangle-down" for e in ex
                    ],
                    "size": 8,
                    "color": "#444",
                },
                "name": "receiver",
                "showlegend": False,
                "hovertemplate": "%{text}<extra></extra>",
                "meta": {"kind": "receivers", "count": len(ex)},
            }
        )
    if view.rejuvenations:
        rj = view.rejuvenations
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [r["at"] for r in rj],
                "y": [r["member"] for r in rj],
                "marker": {"symbol": "x", "size": 8, "color": "#e377c2"},
                "name": "rejuvenated (restarts from scratch)",
                "hovertemplate": "member %{y} rejuvenated at step %{x}<extra></extra>",
                "meta": {"kind": "rejuvenations", "count": len(rj)},
            }
        )
    lineage = view.best_lineage()
    best = pop.best()
    if best is not None and lineage:
        px: list[Any] = []
        py: list[Any] = []
        for i, seg in enumerate(lineage):
            end = lineage[i + 1]["step"] if i + 1 < len(lineage) else best.step
            px += [seg["step"], end]
            py += [seg["member"], seg["member"]]
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": px,
                "y": py,
                "line": {"width": 3, "color": BEST},
                "name": f"best member {best.id}'s lineage",
                "hovertemplate": "lineage of the best: trained by member %{y}<extra></extra>",
                "meta": {"kind": "best", "member": best.id},
            }
        )
    n = len(view.nodes)
    layout = _layout(
        "family tree: members over training steps, exploit edges donor → receiver",
        "training step",
        "member",
        height=int(min(1400, max(360, 120 + 14 * n))),
        showlegend=True,
    )
    layout["yaxis"]["autorange"] = "reversed"
    if view.nodes:  # no padding rows above the first member or below the last
        layout["yaxis"]["range"] = [max(view.nodes) + 0.6, min(view.nodes) - 0.6]
        layout["yaxis"]["autorange"] = False
    if n <= 40:
        layout["yaxis"]["dtick"] = 1
    return {"data": data, "layout": layout}


def _figure(spec: dict[str, Any]) -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ImportError("plots need plotly: pip install 'hyperpop[dashboard]'") from None
    return go.Figure(spec)


def plot_scores(result: Any, metric: str | None = None, x: str = "step") -> Any:
    """A metric over training steps or wall time for every member, exploits marked, the best
    member's lineage thick (a plotly Figure; see :func:`scores_spec`)."""
    return _figure(scores_spec(RunView.of_result(result), metric=metric, x=x))


def plot_schedule(result: Any) -> Any:
    """Each hyperparameter over steps for every member, the best lineage highlighted."""
    return _figure(schedule_spec(RunView.of_result(result)))


def plot_lineage(result: Any) -> Any:
    """The family tree: members over steps, exploit edges, coloured by score."""
    return _figure(lineage_spec(RunView.of_result(result)))


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
        if source is None:
            return None
        wall = source.wall if isinstance(source, Report) else source[0]
        return round(wall - t0, 4)

    def metric_of(source: Any, metric: str) -> Any:
        if source is None:
            return None
        return _metric_value(source if isinstance(source, Report) else source[1], metric)

    # the score plot's lines: per member, the points after what the page has
    s_members: list[int] = []
    s_start: list[int] = []
    s_count: list[int] = []
    steps: list[Any] = []
    walls: list[Any] = []
    ys: dict[str, list[Any]] = {m: [] for m in wanted}
    for mid in sorted(view.scores):
        points = view.scores[mid]
        i = view.changed_from("scores", mid, ss)
        if i >= len(points):
            continue
        sources = view.sources[mid]
        s_members.append(mid)
        s_start.append(i)
        s_count.append(len(points) - i)
        steps += [p[0] for p in points[i:]]
        if times:
            walls += [when(src) for src in sources[i:]]
        for metric in wanted:
            if metric == main:
                ys[metric] += [p[1] for p in points[i:]]
            else:
                ys[metric] += [metric_of(src, metric) for src in sources[i:]]
    series: dict[str, Any] = {
        "members": s_members,
        "start": s_start,
        "count": s_count,
        "step": steps,
        "y": ys,
    }
    if times:
        series["t"] = walls

    best = pop.best()
    lineage: dict[str, Any] | None = None
    if best is not None:
        path = list(view.lineage_reports(best.id).values())
        lineage = {
            "member": best.id,
            "step": [r.step for r in path],
            "by": [r.member for r in path],
            "y": {
                m: [_score(r) if m == main else _metric_value(r, m) for r in path] for m in wanted
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
        "text": [_exploit_label(e) for e in ex],
        "y": {
            m: [e["score"] if m == main else metric_of(e["report"], m) for e in ex] for m in wanted
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
    c_members: list[int] = []
    c_start: list[int] = []
    c_count: list[int] = []
    c_steps: list[Any] = []
    c_values: dict[str, list[Any]] = {p: [] for p in params}
    for mid in sorted(view.configs):
        pts = view.configs[mid]
        i = view.changed_from("configs", mid, since)
        if i >= len(pts):
            continue
        c_members.append(mid)
        c_start.append(i)
        c_count.append(len(pts) - i)
        c_steps += [step for step, _ in pts[i:]]
        for p in params:
            c_values[p] += [None if cfg is None else _value(cfg.get(p)) for _, cfg in pts[i:]]

    n_members: list[int] = []
    n_start: list[int] = []
    n_count: list[int] = []
    n_steps: list[int] = []
    n_scores: list[Any] = []
    for mid in sorted(view.nodes):
        ready = view.nodes[mid]
        i = view.changed_from("nodes", mid, since)
        if i >= len(ready):
            continue
        n_members.append(mid)
        n_start.append(i)
        n_count.append(len(ready) - i)
        n_steps += [step for step, _ in ready[i:]]
        n_scores += [score for _, score in ready[i:]]

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
        "log_params": [p for p in params if _log_scale(pop.space, p)],
        "clock": {"span": round(span, 3)},
        "members": rows,
        "series": series,
        "lineage": lineage,
        "exploits": exploits,
        "rejuvenations": rejuvenations,
        "configs": {
            "members": c_members,
            "start": c_start,
            "count": c_count,
            "step": c_steps,
            "values": c_values,
        },
        "nodes": {
            "members": n_members,
            "start": n_start,
            "count": n_count,
            "step": n_steps,
            "score": n_scores,
        },
        "best": None
        if best is None
        else {"member": best.id, "step": best.step, "schedule": view.best_lineage()},
    }


def payload(view: RunView, alive: bool | None = False) -> dict[str, Any]:
    """Everything the page shows, whole, JSON-safe: :func:`page_data` with every metric and
    the wall times, as a report embeds it (``alive``: whether the store's writer is alive,
    see :meth:`RunView.status`)."""
    return page_data(view, metrics=view.metric_names(), times=True, alive=alive)
