"""What the dashboard's plots and its page share: colours, a plot's layout, and how values,
scores and exploits are shown."""

from __future__ import annotations

from typing import Any

from hyperpop.population import Best
from hyperpop.summary import Report, is_number, num

__all__ = [
    "BEST",
    "best_label",
    "exploit_label",
    "plot_layout",
    "log_scale",
    "member_colour",
    "metric_value",
    "param_value",
    "score_value",
    "source_metric",
    "source_wall",
]

#: the colour of the best member's lineage
BEST = "#d62728"


def best_label(best: Best) -> str:
    """The name of the best model's lineage: the member's, or the kept checkpoint's."""
    kept = "" if best.seq is None else f" (its checkpoint at step {best.step})"
    return f"best member {best.member}'s lineage{kept}"


def member_colour(member: int) -> str:
    """A stable, well-spread colour for a member (golden-angle hues)."""
    return f"hsl({(member * 137.508) % 360:.0f},65%,42%)"


def plot_layout(title: str, x: str, y: str, **extra: Any) -> dict[str, Any]:
    """A plot's layout: its title and axis titles, the dashboard's look, and ``extra``."""
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


def metric_value(report: Report | None, metric: str) -> Any:
    """A report's value of ``metric``, JSON-safe (None if it has none or it is no number)."""
    value = None if report is None else report.metrics.get(metric)
    return num(value) if is_number(value) else None


def score_value(report: Report) -> Any:
    """A report's score, JSON-safe."""
    return None if report.score is None else num(float(report.score))


def param_value(v: Any) -> Any:
    """A hyperparameter's value as the plots show it: a number, else its text."""
    if isinstance(v, bool) or (v is not None and not isinstance(v, (int, float))):
        return str(v)
    return num(v)


def log_scale(space: dict[str, Any], name: str) -> bool:
    """Whether parameter ``name`` (``"opt/lr"`` for nested ones) is log-uniform. The stored
    space is flat, keyed by the full path."""
    spec = space.get(name)
    return isinstance(spec, dict) and bool(spec.get("log"))


def exploit_label(e: dict[str, Any]) -> str:
    """What an exploit shows on hover: who copied whom at which step, and whether a person did."""
    label = f"member {e['member']} copied member {e['donor']} at step {e['step']}"
    return label + (" (by user)" if e.get("by") == "user" else "")


def source_wall(source: Any) -> float:
    """The wall time of a score point's source: its :class:`Report`, or ``(time, report)`` at a
    jump to a donor's weights."""
    return float(source.wall if isinstance(source, Report) else source[0])


def source_metric(source: Any, metric: str) -> Any:
    """A score point's value of ``metric``, from its source (None at a gap: no source)."""
    if source is None:
        return None
    return metric_value(source if isinstance(source, Report) else source[1], metric)
