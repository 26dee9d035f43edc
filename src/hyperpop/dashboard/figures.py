"""The dashboard's plots: plotly figure specs (plain dicts) and figures for notebooks.

The ``*_spec`` functions return the plots as the JSON plotly.js renders (no plotly import
needed): the scores and the schedule here, the family tree in :mod:`hyperpop.dashboard.tree`.
The ``plot_*`` functions wrap them in :class:`plotly.graph_objects.Figure` objects for
``Result.plot_*()``. The page draws from :func:`~hyperpop.dashboard.page.page_data` instead
(re-exported here, with :func:`~hyperpop.dashboard.page.payload`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hyperpop.dashboard.data import RunView
from hyperpop.dashboard.page import page_data, payload
from hyperpop.dashboard.style import (
    BEST,
    best_label,
    exploit_label,
    log_scale,
    member_colour,
    metric_value,
    param_value,
    plot_layout,
    score_value,
    source_metric,
    source_wall,
)
from hyperpop.dashboard.tree import MAX_COLUMNS, MAX_MARKERS, lineage_spec
from hyperpop.ranking import Ranking
from hyperpop.summary import Report, is_number, num

__all__ = [
    "MAX_COLUMNS",
    "MAX_MARKERS",
    "lineage_spec",
    "log_axis",
    "member_colour",
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


#: a positive metric whose largest value is this many times its smallest gets a log y axis
LOG_SPAN = 100.0


def _finite(values: list[Any]) -> np.ndarray:
    """The finite numbers among JSON-safe ``values`` (None left out), as an array."""
    v = np.fromiter((x for x in values if x is not None), dtype=float)
    return v[np.isfinite(v)]


def log_axis(values: list[Any]) -> bool:
    """Whether values are best shown on a log axis: all positive, spanning at least two
    decades (:data:`LOG_SPAN`), as a loss falling from 1 to 0.001 does."""
    v = _finite(values)
    if v.size < 2 or v.min() <= 0:
        return False
    return bool(v.max() >= LOG_SPAN * v.min())


def robust_range(
    values: list[Any], better: Ranking | None, log: bool = False
) -> list[float] | None:
    """A y range that shows where most values are: from the 5% to the 95% quantile, the
    ``better`` side (if known) kept to its extreme so the best values always show, padded by
    5%. None (the full range) unless that cuts at least half of it: the
    zoom is for outliers (diverged members, the first steps' scores), not for smooth curves.
    With ``log``, all of it in decades (plotly's log axis range is in powers of ten)."""
    v = _finite(values)
    if log:
        v = np.log10(v[v > 0])
    if v.size < 4:
        return None
    lo, hi = (float(q) for q in np.quantile(v, [0.05, 0.95]))
    low, high = float(v.min()), float(v.max())
    if better is not None and better.better(high, low):
        hi = high
    elif better is not None:
        lo = low
    if hi - lo > 0.5 * (high - low):
        return None
    pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
    return [num(lo - pad), num(hi + pad)]


def _trend(values: list[Any]) -> Ranking | None:
    """Higher is better if the values end higher than they start, lower if lower."""
    finite = [v for v in values if is_number(v) and math.isfinite(v)]
    if len(finite) < 2 or finite[0] == finite[-1]:
        return None
    return Ranking.of("max" if finite[-1] > finite[0] else "min")


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
        return score if metric == main else metric_value(report, metric)

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
            xs = [None if s is None else xv(0, source_wall(s)) for s in sources]
        if metric == main:
            ys = [p[1] for p in points]
        else:
            ys = [source_metric(s, metric) for s in sources]
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
    best = pop.best_model()
    path = view.best_reports()
    lineage_y = [score_value(r) if metric == main else metric_value(r, metric) for r in path]
    if best is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": [xv(r.step, r.wall) for r in path],
                "y": lineage_y,
                "text": [f"trained by member {r.member}" for r in path],
                "name": best_label(best),
                "line": {"width": 3, "color": BEST},
                "hovertemplate": f"{best_label(best)}: %{{text}}<br>{hover}<extra></extra>",
                "meta": {"kind": "lineage", "member": best.member, "steps": len(path), **meta},
            }
        )
    ex = view.exploits
    data.append(
        {
            "type": "scatter",
            "mode": "markers",
            "x": [xv(e["step"], e["time"]) for e in ex],
            "y": [yv(e["score"], e["report"]) for e in ex],
            "text": [exploit_label(e) for e in ex],  # the same for every metric and axis
            "name": "exploit (takes the donor's weights)",
            "marker": {"symbol": "triangle-up", "size": 7, "color": "#222", "opacity": 0.8},
            "hovertemplate": f"%{{text}}<br>{hover}<extra></extra>",
            "meta": {"kind": "exploits", "count": len(ex), **meta},
        }
    )
    better = pop.ranking if metric == main else _trend(lineage_y)
    log = log_axis(values)
    span = robust_range(values, better, log=log)
    title = f"{metric} over training" + (
        f" ({'higher' if pop.ranking.sign > 0 else 'lower'} is better)" if metric == main else ""
    )
    layout = plot_layout(title, xlabel, metric, height=420)
    layout["yaxis"]["type"] = "log" if log else "linear"
    layout["yaxis"]["autorange"] = span is None
    if span is not None:
        layout["yaxis"]["range"] = span
    return {"data": data, "layout": layout}


def schedule_spec(view: RunView) -> dict[str, Any]:
    """Each hyperparameter over training steps for every member (thin lines), with the best
    member's schedule along its lineage (inherited part included) drawn thick."""
    pop = view.pop
    params = view.params or ["(no hyperparameters)"]
    n = len(params)
    gap = 0.06 if n > 1 else 0.0
    height = (1.0 - gap * (n - 1)) / n
    layout = plot_layout(
        "hyperparameter schedules (best member's lineage in red)",
        "training step",
        "",
        height=max(320, 200 * n + 80),
        showlegend=True,
    )
    data: list[dict[str, Any]] = []
    best = pop.best_model()
    lineage = view.best_lineage()
    for i, p in enumerate(params):
        axis = "" if i == 0 else str(i + 1)
        top = 1.0 - i * (height + gap)
        yaxis = {
            "domain": [max(0.0, top - height), top],
            "title": {"text": p},
            "zeroline": False,
        }
        if log_scale(pop.space, p):
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
                ys.append(None if cfg is None else param_value(cfg.get(p)))
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
            by = [param_value(s["config"].get(p)) for s in lineage]
            by.append(by[-1])
            end = "now" if best.seq is None else "the checkpoint kept"
            bt = [f"trained by member {s['member']}" for s in lineage] + [end]
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "x": bx,
                    "y": by,
                    "text": bt,
                    "line": {"shape": "hv", "width": 3, "color": BEST},
                    "marker": {"size": 5},
                    "name": best_label(best),
                    "legendgroup": "best",
                    "showlegend": i == 0,
                    "hovertemplate": f"step %{{x}}<br>{p} %{{y}}<br>%{{text}}<extra></extra>",
                    "meta": {"kind": "best", "param": p, "member": best.member},
                    **ref,
                }
            )
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
