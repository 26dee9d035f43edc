"""The family tree plot (:func:`lineage_spec`): each member a row of nodes over training steps,
coloured by score, exploit edges from donor to receiver, the best member's lineage in red; a
heatmap instead of markers for big runs."""

from __future__ import annotations

from typing import Any

from hyperpop.dashboard.data import RunView
from hyperpop.dashboard.style import BEST, best_label, exploit_label, plot_layout
from hyperpop.summary import num

__all__ = ["MAX_COLUMNS", "MAX_MARKERS", "lineage_spec"]

#: beyond this many nodes the family tree draws them as a heatmap (one image)
MAX_MARKERS = 3000
#: columns of that heatmap at most (ready points are binned beyond it)
MAX_COLUMNS = 600
#: the colour of exploit edges
EDGE = "rgba(90,90,90,0.45)"


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
    labels = [exploit_label(e) for e in ex]
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
    best = pop.best_model()
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
                "name": best_label(best),
                "hovertemplate": "lineage of the best: trained by member %{y}<extra></extra>",
                "meta": {"kind": "best", "member": best.member},
            }
        )
    n = len(view.nodes)
    layout = plot_layout(
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
            "reversescale": pop.ranking.sign < 0,  # the better, the yellower
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
        "reversescale": pop.ranking.sign < 0,  # the better, the yellower
        "colorbar": {"title": {"text": metric}, "thickness": 12},
        "hoverongaps": False,
        "hovertemplate": f"member %{{y}}<br>step %{{x}}<br>{metric} %{{z:.4g}}<extra></extra>",
        "showlegend": False,
        "meta": {"kind": "nodes", "members": len(members)},
    }
