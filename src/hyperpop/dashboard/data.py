"""Views of a run for the dashboard and reports, built incrementally from the event log.

:class:`RunView` is the read side's :class:`~hyperpop.summary.RunData` (the folded population
and every report) plus the series the plots need, and can be fed the new events of a live
store as they arrive, so the dashboard never re-reads a whole log. :class:`StoreSource` does
that over an SQLite store, read-only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hyperpop.space import flatten_config
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore, StoreError
from hyperpop.summary import Report, RunData, json_safe, member_rows, num, run_status, summary

__all__ = ["RunView", "StoreSource", "num"]

#: a break in a line series (plotly draws nothing between points on either side of it)
GAP: tuple[None, None] = (None, None)


class RunView(RunData):
    """The population, every report and what the plots need, folded from events.

    Attributes:
        pop: the folded population.
        scores: per member, its ``(step, score)`` points in report order, with the jump to the
            donor's step and score at each exploit and a :data:`GAP` at each rejuvenation
            (scores are JSON-safe: see :func:`~hyperpop.summary.num`).
        sources: per member, what is behind each point of ``scores``: the
            :class:`~hyperpop.summary.Report` that holds every metric of the point; at a jump,
            ``(time, report)``: the exploit's time and the copied weights' report (None if
            the log holds none); None at a gap.
        configs: per member, ``(step, flat config)`` at each change of its hyperparameters.
        nodes: per member, ``(step, score)`` at each ready point (checkpoint).
        exploits: one dict per exploit: member, donor, step, at, score (inherited), before,
            time, by, and ``report`` (the copied weights' report at ``step``).
        rejuvenations: one dict per rejuvenation: member, at, score (before).
        params: the flattened hyperparameter names, in first-seen order.
    """

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.scores: dict[int, list[tuple[Any, Any]]] = {}
        self.sources: dict[int, list[Report | tuple[float, Report | None] | None]] = {}
        self.configs: dict[int, list[tuple[Any, dict[str, Any] | None]]] = {}
        self.nodes: dict[int, list[tuple[int, float | None]]] = {}
        self.exploits: list[dict[str, Any]] = []
        self.rejuvenations: list[dict[str, Any]] = []
        self.params: list[str] = []
        super().__init__(events)

    @classmethod
    def of_result(cls, result: Any) -> RunView:
        """The view of a :class:`hyperpop.Result` (its events)."""
        return cls(result.events)

    def _config_point(self, member: int, step: Any, config: dict[str, Any]) -> None:
        flat = flatten_config(config)
        for k in flat:
            if k not in self.params:
                self.params.append(k)
        pts = self.configs.setdefault(member, [])
        if pts and pts[-1][0] == step and pts[-1][1] is not None and len(pts) > 1:
            pts[-1] = (step, flat)
        else:
            pts.append((step, flat))

    def _point(self, member: int, point: tuple[Any, Any], source: Any) -> None:
        self.scores[member].append(point)
        self.sources[member].append(source)

    def apply(self, e: Event) -> None:
        """Fold one event."""
        pop = self.pop
        k = e.kind
        m = pop.members.get(e.member) if e.member is not None else None
        if k == ev.EXPLOITED and m is not None:
            at = e.data.get("at", m.step)
            before = m.last_score
            super().apply(e)
            score = num(m.ready_score)
            report = self.recorded(m.id, m.step)  # the donor's, as its weights were then
            self._point(m.id, (m.step, score), (e.time, report))
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
                    "report": report,
                }
            )
            self._config_point(m.id, m.step, m.config)
            return
        if k == ev.REJUVENATED and m is not None:
            before = m.last_score
            at = m.step
            super().apply(e)
            self._point(m.id, GAP, None)
            self.configs[m.id].append((None, None))
            self._config_point(m.id, 0, m.config)
            self.rejuvenations.append({"member": m.id, "at": at, "score": num(before)})
            return
        super().apply(e)
        if k == ev.MEMBER_CREATED:
            mid = int(e.member)  # type: ignore[arg-type]
            self.scores[mid] = []
            self.sources[mid] = []
            self.nodes[mid] = []
            self.configs[mid] = []
            self._config_point(mid, 0, pop.members[mid].config)
        elif m is None:
            return
        elif k == ev.REPORTED:
            self._point(m.id, (m.step, num(m.last_score)), self.reports[-1])
        elif k == ev.CHECKPOINTED:
            self.nodes[m.id].append((m.step, num(m.ready_score)))
        elif k == ev.EXPLORED:
            self._config_point(m.id, m.step, m.config)

    # --- summaries -------------------------------------------------------------------------
    def status(self, alive: bool | None = False) -> str:
        """``finished``, ``running``, ``interrupted`` or, when the driver runs on another host,
        ``running or interrupted`` (``alive``: :meth:`SQLiteStore.writer_alive`)."""
        return run_status(self.pop, alive)

    def summary(self, alive: bool | None = False, now: float | None = None) -> dict[str, Any]:
        """:func:`hyperpop.summary.summary`, JSON-safe; a running run's elapsed time counts
        up to ``now`` (default: now).

        Args:
            alive: whether the store's writer is alive (see :meth:`status`).
            now: the time to count a running run's elapsed time to (default: now).
        """
        now = time.time() if now is None else now
        return json_safe(summary(self.pop, alive=alive, now=now))

    def member_rows(self) -> list[dict[str, Any]]:
        """:func:`hyperpop.summary.member_rows` by id, JSON-safe."""
        return json_safe(member_rows(self.pop))

    def best_lineage(self) -> list[dict[str, Any]]:
        """The best member's schedule: ``{"step", "member", "config"}`` segments, oldest first,
        ending at its current step (``end``)."""
        best = self.pop.best()
        if best is None:
            return []
        return [
            {"step": s.step, "member": s.member, "config": flatten_config(s.config)}
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
