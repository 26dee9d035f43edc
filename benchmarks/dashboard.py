"""How fast does the dashboard follow a big run? (256 x 500 and 1,024 x 1,000 by default)

Writes a synthetic store by appending events straight to an SQLite store (the event vocabulary
of ``hyperpop.store.events``: a synchronous PBT run, ready every 4 steps, truncation exploit of
the bottom quarter), then measures, for each size:

* the server: folding the log (once, when ``hyperpop dashboard`` starts), the page's first
  data, and a refresh (one generation written: the new events folded and what changed sent);
* the live dashboard in headless Chromium: from navigation to every plot and the table drawn
  (first load), from a generation written to the page showing it (a live update), switching
  the score plot to another metric, sorting the table;
* the report: writing the HTML file, and opening it offline.

    python benchmarks/dashboard.py                              # 256 x 500 and 1,024 x 1,000
    python benchmarks/dashboard.py --sizes 256x500
    python benchmarks/dashboard.py --sizes 16x40 --screenshots docs/images
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class SyntheticRun:
    """Writes a plausible PBT run, one generation (``ready`` steps of every member) at a time."""

    def __init__(self, path: Path, *, members: int, ready: int = 4, seed: int = 0):
        self.store = SQLiteStore(path, write=True)
        self.rng = random.Random(seed)
        self.members = members
        self.ready = ready
        self.step = 0
        self.t = time.time() - 3600.0
        self.quality = [0.0] * members
        self.config: list[dict[str, Any]] = []
        self.blob: list[str] = [""] * members
        settings = {
            "metric": "val_acc",
            "mode": "max",
            "population": members,
            "ready": {"steps": ready, "seconds": None, "burn_in": 0},
            "synchronous": True,
        }
        space = {
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "momentum": {"type": "float", "low": 0.0, "high": 0.99, "log": False},
        }
        first = [Event(ev.RUN_STARTED, None, {"settings": settings, "space": space}, self.t)]
        for m in range(members):
            cfg = {
                "lr": 10 ** self.rng.uniform(-4, -1),
                "momentum": self.rng.uniform(0, 0.99),
            }
            self.config.append(cfg)
            first.append(Event(ev.MEMBER_CREATED, m, {"config": cfg}, self.t))
        self.store.append(first)

    def _gain(self, cfg: dict[str, Any]) -> float:
        # best near lr=1e-2, momentum=0.9; saturating accuracy
        return math.exp(-((math.log10(cfg["lr"]) + 2) ** 2)) * (0.5 + 0.5 * cfg["momentum"])

    def generation(self) -> None:
        """Every member trains ``ready`` steps, then the bottom quarter exploits the top."""
        out: list[Event] = []
        for m in range(self.members):
            for i in range(self.ready):
                step = self.step + i + 1
                self.quality[m] += 0.02 * self._gain(self.config[m])
                score = 1 - math.exp(-self.quality[m]) + self.rng.gauss(0, 0.005)
                self.t += 0.001
                out.append(
                    Event(
                        ev.REPORTED,
                        m,
                        {
                            "step": step,
                            "score": score,
                            "metrics": {"val_acc": score, "loss": 1 - score},
                        },
                        self.t,
                    )
                )
            self.blob[m] = f"m{m}-s{self.step + self.ready}"
            out.append(
                Event(
                    ev.CHECKPOINTED,
                    m,
                    {"step": self.step + self.ready, "checkpoint": self.blob[m]},
                    self.t,
                )
            )
        self.step += self.ready
        ranked = sorted(range(self.members), key=lambda m: self.quality[m])
        q = max(1, self.members // 4)
        for loser in ranked[:q]:
            donor = self.rng.choice(ranked[-q:])
            out.append(
                Event(
                    ev.EXPLOITED,
                    loser,
                    {
                        "donor": donor,
                        "step": self.step,
                        "checkpoint": self.blob[donor],
                        "at": self.step,
                    },
                    self.t,
                )
            )
            self.quality[loser] = self.quality[donor]
            old = self.config[loser]
            new = {
                k: min(max(v * self.rng.choice([0.8, 1.2]), 1e-4), 0.99)
                for k, v in self.config[donor].items()
            }
            self.config[loser] = new
            out.append(
                Event(
                    ev.EXPLORED, loser, {"config": new, "old_config": old, "how": "perturb"}, self.t
                )
            )
        self.store.append(out)

    def finish(self) -> None:
        """Every member finished, then the run."""
        out = [
            Event(ev.FINISHED, m, {"step": self.step, "reason": "budget"}, self.t)
            for m in range(self.members)
        ]
        out.append(Event(ev.RUN_FINISHED, None, {"reason": "budget"}, self.t))
        self.store.append(out)
        self.store.close()


def serve_in_thread(db: Path, source: Any = None) -> tuple[Any, str]:
    """Start the dashboard of ``db`` on a free port; returns (server, url)."""
    import uvicorn

    from hyperpop.dashboard.app import create_app

    app = create_app(db, interval=0.5, source=source)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("the dashboard server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/"


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(members: int, reports: int, screenshots: Path | None = None) -> list[tuple[str, str]]:
    """Run the benchmark at one size; returns (what, value) rows."""
    from playwright.sync_api import sync_playwright

    from hyperpop.dashboard.app import answer
    from hyperpop.dashboard.data import StoreSource
    from hyperpop.dashboard.report import write_report

    rows: list[tuple[str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="hyperpop-bench-"))
    db = tmp / "big.db"
    t = time.perf_counter()
    run = SyntheticRun(db, members=members)
    generations = max(1, reports // run.ready)
    for _ in range(generations - 1):
        run.generation()
    rows.append(
        (
            "synthetic store",
            f"{generations * run.ready} reports each, written in {time.perf_counter() - t:.0f} s",
        )
    )

    source = StoreSource(db)
    fold, _ = _timed(source.refresh)
    rows.append(("server: fold the log (once, at start)", f"{fold:.2f} s"))
    first, body = _timed(lambda: answer(source, {}))
    rows.append(("server: page data, first", f"{first:.2f} s ({len(body) / 1e6:.1f} MB)"))
    data = json.loads(body)["view"]
    # a refresh: one more generation written, folded, and what changed since the page's seq
    asked = {"since": str(data["seq"]), "epoch": data["epoch"]}
    run.generation()
    refresh, body = _timed(lambda: answer(source, asked))
    rows.append(
        (
            "server: page data, a refresh (one generation)",
            f"{refresh:.3f} s ({len(body) / 1e6:.2f} MB)",
        )
    )

    server, url = serve_in_thread(db, source)  # as `hyperpop dashboard` does: folded first
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            t = time.perf_counter()
            page.goto(url)
            page.wait_for_function(
                "Number(document.body.dataset.renders || 0) >= 1", timeout=600_000, polling=50
            )
            renderer = page.evaluate("document.body.dataset.renderer")
            rows.append(
                (
                    "dashboard: first load (navigation to all drawn)",
                    f"{time.perf_counter() - t:.2f} s ({renderer})",
                )
            )
            # a live update: one more generation of every member
            seq = int(page.evaluate("document.body.dataset.seq"))
            t = time.perf_counter()
            run.generation()
            page.wait_for_function(
                f"Number(document.body.dataset.seq) > {seq}", timeout=600_000, polling=50
            )
            rows.append(
                (
                    "dashboard: live update (write to redrawn)",
                    f"{time.perf_counter() - t:.2f} s (polls every 0.5 s)",
                )
            )
            t = time.perf_counter()
            page.select_option("#score-metric", "loss")
            page.wait_for_function(
                "document.body.dataset.scoreMetric === 'loss'", timeout=600_000, polling=50
            )
            rows.append(("dashboard: switch to another metric", f"{time.perf_counter() - t:.2f} s"))
            t = time.perf_counter()
            page.click("#members th[data-col='step']")
            page.wait_for_function("document.querySelector('#members th.sorted-asc')")
            rows.append(("dashboard: sort the table", f"{time.perf_counter() - t:.2f} s"))
            if screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                page.select_option("#score-metric", "val_acc")
                page.wait_for_function("document.body.dataset.scoreMetric === 'val_acc'")
                page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
            run.finish()
            seconds, out = _timed(lambda: write_report(db, tmp / "report.html"))
            rows.append(("report: write", f"{seconds:.2f} s ({out.stat().st_size / 1e6:.1f} MB)"))
            offline = browser.new_page(viewport={"width": 1400, "height": 1000})
            offline.route("http*://**", lambda route: route.abort())
            t = time.perf_counter()
            offline.goto(out.as_uri(), timeout=600_000)
            offline.wait_for_function(
                "Number(document.body.dataset.renders || 0) >= 1", timeout=600_000, polling=50
            )
            rows.append(("report: open offline (to all drawn)", f"{time.perf_counter() - t:.2f} s"))
            if screenshots:
                offline.screenshot(path=str(screenshots / "report.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        default="256x500,1024x1000",
        help="members x reports per member, comma-separated (default: 256x500,1024x1000)",
    )
    ap.add_argument("--members", type=int, help="one size: this many members (with --reports)")
    ap.add_argument("--reports", type=int, default=500, help="reports per member (with --members)")
    ap.add_argument("--screenshots", type=Path, help="save dashboard.png and report.png here")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    if args.members is not None:
        sizes = [(args.members, args.reports)]
    from _common import machine

    columns: list[list[tuple[str, str]]] = []
    for members, reports in sizes:
        columns.append(measure(members, reports, args.screenshots))
    heads = [f"{m:,} x {r:,}" for m, r in sizes]
    what = [r[0] for r in columns[0]]
    width = max(len(w) for w in what)
    widths = [max(len(h), *(len(r[1]) for r in col)) for h, col in zip(heads, columns)]
    print(machine())
    print(f"{'what':<{width}}  " + "  ".join(f"{h:<{w}}" for h, w in zip(heads, widths)))
    for i, w in enumerate(what):
        cells = "  ".join(f"{col[i][1]:<{cw}}" for col, cw in zip(columns, widths))
        print(f"{w:<{width}}  {cells}")


if __name__ == "__main__":
    main()
