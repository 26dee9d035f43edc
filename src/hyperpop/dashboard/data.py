"""Views of a run for the dashboard and reports, built incrementally from the event log.

:class:`RunView` folds events once (a :class:`~hyperpop.population.Population` plus the series
the plots need) and can be fed the new events of a live store as they arrive, so the dashboard
never re-reads a whole log. :class:`StoreSource` does that over an SQLite store, read-only.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hyperpop.population import Population
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore, StoreError

__all__ = ["RunView", "StoreSource", "flat_config", "num"]

#: a break in a line series (plotly draws nothing between points on either side of it)
GAP: tuple[None, None] = (None, None)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested configs as one level, with ``a/b`` keys."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}/"))
        else:
            out[prefix + str(k)] = v
    return out


def num(v: Any) -> Any:
    """A JSON-safe value: NaN and infinities become None, floats keep 7 significant digits."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return float(f"{v:.7g}")
    return v


class RunView:
    """The population plus what the plots need, folded from events.

    Attributes:
        pop: the folded population.
        scores: per member, its ``(step, score)`` points in report order, with the jump to the
            donor's step and score at each exploit and a :data:`GAP` at each rejuvenation
            (scores are JSON-safe: see :func:`num`).
        configs: per member, ``(step, flat config)`` at each change of its hyperparameters.
        nodes: per member, ``(step, score)`` at each ready point (checkpoint).
        exploits: one dict per exploit: member, donor, step, at, score (inherited), before.
        rejuvenations: one dict per rejuvenation: member, at, score (before).
        params: the flattened hyperparameter names, in first-seen order.
    """

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.pop = Population()
        self.scores: dict[int, list[tuple[Any, Any]]] = {}
        self.configs: dict[int, list[tuple[Any, dict[str, Any] | None]]] = {}
        self.nodes: dict[int, list[tuple[int, float | None]]] = {}
        self.exploits: list[dict[str, Any]] = []
        self.rejuvenations: list[dict[str, Any]] = []
        self.params: list[str] = []
        self.update(events)

    @classmethod
    def of_result(cls, result: Any) -> RunView:
        """The view of a :class:`hyperpop.Result` (its events)."""
        return cls(result.events)

    def update(self, events: Iterable[Event]) -> int:
        """Fold new events (in log order); returns how many were applied.

        Raises:
            ValueError: the log is inconsistent (an event names an unknown member...).
        """
        n = 0
        for e in events:
            self._apply(e)
            n += 1
        return n

    def _config_point(self, member: int, step: Any, config: dict[str, Any]) -> None:
        flat = flat_config(config)
        for k in flat:
            if k not in self.params:
                self.params.append(k)
        pts = self.configs.setdefault(member, [])
        if pts and pts[-1][0] == step and pts[-1][1] is not None and len(pts) > 1:
            pts[-1] = (step, flat)
        else:
            pts.append((step, flat))

    def _apply(self, e: Event) -> None:
        pop = self.pop
        k = e.kind
        m = pop.members.get(e.member) if e.member is not None else None
        if k == ev.EXPLOITED and m is not None:
            at = e.data.get("at", m.step)
            before = m.last_score
            pop.apply(e)
            score = num(m.ready_score)
            self.scores[m.id].append((m.step, score))
            self.exploits.append(
                {
                    "member": m.id,
                    "donor": m.parent,
                    "step": m.step,
                    "at": at,
                    "score": score,
                    "before": num(before),
                    "time": e.time,
                    "by": e.data.get("by") or "pbt",
                }
            )
            self._config_point(m.id, m.step, m.config)
            return
        if k == ev.REJUVENATED and m is not None:
            before = m.last_score
            at = m.step
            pop.apply(e)
            self.scores[m.id].append(GAP)
            self.configs[m.id].append((None, None))
            self._config_point(m.id, 0, m.config)
            self.rejuvenations.append({"member": m.id, "at": at, "score": num(before)})
            return
        pop.apply(e)
        if k == ev.MEMBER_CREATED:
            mid = int(e.member)  # type: ignore[arg-type]
            self.scores[mid] = []
            self.nodes[mid] = []
            self.configs[mid] = []
            self._config_point(mid, 0, pop.members[mid].config)
        elif m is None:
            return
        elif k == ev.REPORTED:
            self.scores[m.id].append((m.step, num(m.last_score)))
        elif k == ev.CHECKPOINTED:
            self.nodes[m.id].append((m.step, num(m.ready_score)))
        elif k == ev.EXPLORED:
            self._config_point(m.id, m.step, m.config)

    # --- summaries -------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """The last event folded."""
        return self.pop.last_seq

    def status(self, alive: bool | None = False) -> str:
        """``finished``, ``running``, ``interrupted`` or, when the driver runs on another host,
        ``running or interrupted`` (``alive``: :meth:`SQLiteStore.writer_alive`)."""
        if self.pop.finished:
            return "finished"
        if alive is None:
            return "running or interrupted"
        return "running" if alive else "interrupted"

    def summary(self, alive: bool | None = False, now: float | None = None) -> dict[str, Any]:
        """Status, elapsed time, counts and the best score so far (JSON-safe).

        Args:
            alive: whether the store's writer is alive (see :meth:`status`).
            now: the time to count a running run's elapsed time to (default: now).
        """
        pop = self.pop
        status = self.status(alive)
        best = pop.best()
        statuses: dict[str, int] = {}
        for m in pop.members.values():
            statuses[m.status] = statuses.get(m.status, 0) + 1
        elapsed = 0.0
        if pop.started:
            end = pop.ended or pop.last_time
            elapsed = end - pop.started
            if status == "running":
                elapsed += max(0.0, (now or time.time()) - pop.last_time)
        return {
            "status": status,
            "reason": pop.finish_reason or pop.stopped,
            "metric": pop.metric or "score",
            "mode": pop.mode,
            "members": len(pop.members),
            "statuses": statuses,
            "reports": pop.reports,
            "exploits": len(self.exploits),
            "rejuvenations": len(self.rejuvenations),
            "failures": pop.failures,
            "resumes": pop.resumes,
            "elapsed": round(elapsed, 1),
            "best_member": best.id if best else None,
            "best_score": num(best.last_score) if best else None,
            "max_step": max((m.step for m in pop.members.values()), default=0),
            "seq": pop.last_seq,
            "version": pop.version,
            # reports of intervals still running (counted as they arrive, recorded at the
            # member's next ready point)
            "unrecorded_reports": sum(
                max(0, m.progress_step - m.step)
                for m in pop.members.values()
                if m.progress_step is not None and m.alive
            ),
            "pinned": sorted(m.id for m in pop.members.values() if m.pinned),
            "interventions": [
                {k: num(v) if isinstance(v, float) else v for k, v in i.items()}
                for i in pop.interventions[-20:]
            ],
        }

    def member_rows(self) -> list[dict[str, Any]]:
        """One row per member for the table: step, score, hyperparameters, parent, exploits,
        status, failures and the last error."""
        rows = []
        for mid in sorted(self.pop.members):
            m = self.pop.members[mid]
            flat = flat_config(m.config)
            rows.append(
                {
                    "member": m.id,
                    "step": m.step,
                    "score": num(m.last_score),
                    "config": {p: num(flat.get(p)) for p in self.params},
                    "parent": m.parent,
                    "exploits": m.exploits,
                    "status": m.status,
                    "pinned": m.pinned,
                    "live_step": m.progress_step if m.alive else None,
                    "failures": m.failures,
                    "error": (m.last_error or "").strip().splitlines()[-1:] or None,
                }
            )
        for r in rows:
            if r["error"]:
                r["error"] = r["error"][0][:200]
        return rows

    def best_lineage(self) -> list[dict[str, Any]]:
        """The best member's schedule: ``{"step", "member", "config"}`` segments, oldest first,
        ending at its current step (``end``)."""
        best = self.pop.best()
        if best is None:
            return []
        return [
            {"step": s.step, "member": s.member, "config": flat_config(s.config)}
            for s in best.schedule
        ]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class StoreSource:
    """A read-only, incrementally refreshed :class:`RunView` of an SQLite store.

    Thread-safe: the dashboard's request handlers share one. Errors (a missing, corrupt or
    newer store, an inconsistent log) are kept as a message in :attr:`error`, never raised.

    Args:
        path: the store's file.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.view = RunView()
        self.error: str | None = None
        self._store: SQLiteStore | None = None
        self._lock = threading.Lock()
        self._cache: tuple[int, str, Any] | None = None
        self._ident: tuple[int, int] | None = None
        self._alive: bool | None = False

    def refresh(self) -> RunView | None:
        """Fold the events appended since the last call; None (and :attr:`error`) on failure."""
        with self._lock:
            try:
                ident = _identity(self.path)
                if ident != self._ident:
                    # a new file (or one replaced by a run with --overwrite): start over
                    if self._store is not None:
                        self._store.close()
                        self._store = None
                    if self.view.seq:
                        self.view = RunView()
                    self._cache = None
                if self._store is None:
                    self._store = SQLiteStore(self.path)
                    self._ident = ident
                new = self._store.read(after=self.view.seq)
                self.view.update(new)
                self._alive = self._store.writer_alive()
                self.error = None
                return self.view
            except StoreError as e:
                self._fail(str(e))
            except (ValueError, KeyError, TypeError) as e:
                self._fail(
                    f"{self.path}: the event log is inconsistent ({type(e).__name__}: {e}); "
                    "it may be damaged or written by a newer hyperpop"
                )
            except Exception as e:  # sqlite3 errors the store did not wrap, OS errors
                self._fail(f"cannot read {self.path}: {type(e).__name__}: {e}")
            return None

    def _fail(self, message: str) -> None:
        self.error = message
        if self._store is not None:
            self._store.close()
            self._store = None
        if "inconsistent" in message:
            self.view = RunView()  # start over next time: the log may have been replaced
            self._cache = None

    @property
    def alive(self) -> bool | None:
        """Whether a live driver wrote the store at the last refresh (None: another host)."""
        return self._alive

    def cached(self, key: str, build: Any) -> Any:
        """``build(view, alive)`` for the current seq, computed once per seq and key."""
        with self._lock:
            seq = self.view.seq
            if self._cache and self._cache[0] == seq and self._cache[1] == key:
                return self._cache[2]
            value = build(self.view, self.alive)
            self._cache = (seq, key, value)
            return value

    def close(self) -> None:
        """Close the store."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
