"""The dashboard's HTML page, served live or written as one self-contained report file."""

from __future__ import annotations

import html
import json
import os
import time
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from hyperpop.dashboard.data import RunView, bulk
from hyperpop.dashboard.figures import payload
from hyperpop.store.sqlite import SQLiteStore, StoreError

__all__ = ["asset", "page", "plotly_js", "report_html", "write_report"]


@cache
def asset(name: str) -> str:
    """The text of a file in the package's ``static/`` folder."""
    return (resources.files("hyperpop.dashboard") / "static" / name).read_text("utf-8")


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js, from the plotly Python package (no CDN)."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ImportError("the dashboard needs plotly: pip install 'hyperpop[dashboard]'") from None
    return get_plotlyjs()


def _script_json(obj: Any) -> str:
    # safe inside <script>: no "</script>", no HTML comment openers
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _inline_script(code: str) -> str:
    return "<script>" + code.replace("</script", "<\\/script") + "</script>"


def page(
    *,
    title: str,
    subtitle: str,
    config: dict[str, Any],
    note: str = "",
    inline: bool = False,
) -> str:
    """The dashboard page.

    Args:
        title: the browser tab's title.
        subtitle: shown beside the heading (the store's name).
        config: ``window.HYPERPOP``: ``api`` and ``interval`` (live), ``view`` (a report) or
            ``error`` (a message shown instead of the plots).
        note: a line of text at the top right.
        inline: embed plotly.js, the script and the styles (one file that opens offline)
            instead of linking them from ``static/``.
    """
    from hyperpop._version import __version__

    if inline:
        style = "<style>" + asset("dashboard.css") + "</style>"
        scripts = _inline_script(plotly_js()) + "\n" + _inline_script(asset("dashboard.js"))
    else:
        style = '<link rel="stylesheet" href="static/dashboard.css">'
        scripts = (
            '<script src="static/plotly.min.js"></script>\n'
            '<script src="static/dashboard.js"></script>'
        )
    out = asset("index.html")
    for key, value in (
        ("{{TITLE}}", html.escape(title)),
        ("{{SUBTITLE}}", html.escape(subtitle)),
        ("{{NOTE}}", html.escape(note)),
        ("{{VERSION}}", html.escape(__version__)),
        ("{{STYLE}}", style),
        ("{{CONFIG}}", _script_json(config)),
    ):
        out = out.replace(key, value)
    return out.replace("{{SCRIPTS}}", scripts)  # last: plotly.js must not be searched


def report_html(view: RunView, *, name: str, alive: bool | None = False) -> str:
    """One self-contained HTML file (plotly.js inlined) showing ``view`` (``alive``: whether
    the run's driver is still writing, see :meth:`RunView.status`)."""
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    with bulk():
        data = payload(view, alive)
    return page(
        title=f"hyperpop report: {name}",
        subtitle=name,
        note=f"report written {stamp}",
        config={"view": data},
        inline=True,
    )


def write_report(db: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of the run stored in ``db`` to ``output`` (default: beside the store,
    with an ``.html`` suffix); returns the path written.

    Raises:
        StoreError: the store is missing, corrupt, written by a newer hyperpop, or its log
            is inconsistent.
    """
    db = Path(db)
    store = SQLiteStore(db)
    try:
        with bulk():
            events = store.read()
        alive = store.writer_alive()
    finally:
        store.close()
    try:
        with bulk():
            view = RunView(events)
    except (ValueError, KeyError, TypeError) as e:
        raise StoreError(
            f"{db}: the event log is inconsistent ({type(e).__name__}: {e}); it may be "
            "damaged or written by a newer hyperpop"
        ) from None
    out = Path(output) if output is not None else db.with_suffix(".html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_html(view, name=db.name, alive=alive), encoding="utf-8")
    return out
