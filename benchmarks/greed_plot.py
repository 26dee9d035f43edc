"""The guide's picture of greed: a collapsing population against a non-greedy one.

One run of the deceptive task (``examples/deceptive.py``: a low h trains faster now, but every
period h sits off a linearly falling target adds to a penalty the weights carry) per method, on
the simulated backend with the quality benchmark's settings (8 members, 2 workers, ready every 20
steps of 400, the same initial configs): greedy truncation PBT (the default) and reserve PBT
(``exploit="reserve"``). Top row: every member's h over its steps, with the linear schedule that
scores best; bottom row: every member's score Q, with the linear schedule's Q. Members are
coloured by their group (reserve PBT's greedy members, its reserve and its evaluator).

The figure is drawn with plotly and photographed in the system's headless Chromium by
Playwright, as ``benchmarks/dashboard.py`` takes the dashboard's screenshots (no other plotting
library is needed):

    python benchmarks/greed_plot.py                           # docs/images/greed.png
    python benchmarks/greed_plot.py --seed 3 --out /tmp/g.png --html /tmp/g.html
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality

import hyperpop as hp

ROOT = Path(__file__).resolve().parents[1]
#: the system Chromium, as benchmarks/dashboard.py uses it (apt-get install chromium)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
METHODS = {"async": "greedy PBT (the default)", "reserve": 'reserve PBT (exploit="reserve")'}
COLOURS = {"greedy": "#1f77b4", "reserve": "#d62728", "evaluator": "#2ca02c", None: "#1f77b4"}


def runs(seed: int) -> dict[str, Any]:
    """One run of the deceptive task per method, with the quality benchmark's settings."""
    mod = quality.task_module("deceptive")
    size = quality.TASKS["deceptive"]
    out = {}
    for method in METHODS:
        out[method] = hp.run(
            quality._seeded(mod.trainable, seed),
            mod.space,
            metric=mod.settings["metric"],
            mode=mod.settings["mode"],
            population=size["population"],
            workers=2,
            budget=hp.Steps(size["steps"]),
            ready=size["ready"],
            configs=quality.initial_configs(mod, size["population"], seed),
            seed=seed,
            backend=quality.simulated_backend(seed, 2),
            progress=False,
            **quality.method_kwargs(method),
        )
    return out


def figure(results: dict[str, Any]) -> Any:
    """Two columns (one per method), h on top and Q below, a line per member."""
    from plotly.subplots import make_subplots

    mod = quality.task_module("deceptive")
    steps = quality.TASKS["deceptive"]["steps"]
    fig = make_subplots(
        rows=2,
        cols=len(results),
        shared_xaxes=True,
        shared_yaxes="rows",
        vertical_spacing=0.08,
        horizontal_spacing=0.04,
        subplot_titles=[
            f"{METHODS[m]}: final best Q {float(r.best.score):.3f}" for m, r in results.items()
        ],
    )
    xs = list(range(1, steps + 1))
    linear_h = [mod.target(t - 1) for t in xs]
    schedule = [mod.target(i * mod.PERIOD) for i in range(mod.periods(steps))]
    linear_q = _scores(mod, schedule, steps)
    shown: set[str] = set()
    for col, res in enumerate(results.values(), start=1):
        by_member: dict[int, list[dict[str, Any]]] = {}
        for r in res.records():
            by_member.setdefault(int(r["member"]), []).append(r)
        for _, rows in sorted(by_member.items()):
            group = rows[0].get("group") or "greedy"
            legend = group not in shown
            shown.add(group)
            for row, key in ((1, "config/h"), (2, "score")):
                fig.add_scatter(
                    x=[r["step"] for r in rows],
                    y=[r[key] for r in rows],
                    mode="markers",
                    marker={"size": 3, "color": COLOURS.get(group, "#7f7f7f")},
                    name=f"member: {group}",
                    legendgroup=group,
                    showlegend=legend and row == 1,
                    row=row,
                    col=col,
                )
        for row, ys in ((1, linear_h), (2, linear_q)):
            fig.add_scatter(
                x=xs,
                y=ys,
                mode="lines",
                line={"color": "black", "dash": "dash", "width": 1.5},
                name="linear schedule (the best)",
                legendgroup="linear",
                showlegend=col == 1 and row == 1,
                row=row,
                col=col,
            )
    fig.update_yaxes(title_text="hyperparameter h", row=1, col=1)
    fig.update_yaxes(title_text="score Q", range=[0.3, 1.15], row=2, col=1)
    for col in range(1, len(results) + 1):
        fig.update_xaxes(title_text="step", row=2, col=col)
    fig.update_layout(
        width=1200,
        height=700,
        template="plotly_white",
        legend={"orientation": "h", "y": -0.12},
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
    )
    return fig


def _scores(mod: Any, schedule: list[float], steps: int) -> list[float]:
    m = mod.Deceptive()
    m.setup({"h": schedule[0]})
    out = []
    for t in range(steps):
        m.apply({"h": schedule[min(t // mod.PERIOD, len(schedule) - 1)]})
        out.append(float(m.train()["Q"]))
    return out


def photograph(fig: Any, out: Path, html: Path | None = None) -> None:
    """Write the figure as a self-contained HTML page and screenshot it to ``out``."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_file = html or Path(tmp) / "greed.html"
        fig.write_html(str(page_file), include_plotlyjs=True, full_html=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1220, "height": 720})
            page.goto(page_file.resolve().as_uri())
            page.wait_for_selector(".main-svg")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".plotly-graph-div").screenshot(path=str(out))
            browser.close()


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="the paired seed of quality.py")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "greed.png")
    p.add_argument("--html", type=Path, help="also keep the interactive page here")
    args = p.parse_args(argv)
    results = runs(args.seed)
    scores = {m: float(r.best.score) for m, r in results.items()}
    for m, s in scores.items():
        print(f"{m}: final best Q {s:.4f}")
    photograph(figure(results), args.out, args.html)
    print(f"wrote {args.out}")
    return scores


if __name__ == "__main__":
    main()
