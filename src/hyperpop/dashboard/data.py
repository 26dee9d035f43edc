"""Views of a run for the dashboard and reports, built incrementally from the event log.

:class:`RunView` is the read side's :class:`~hyperpop.summary.RunData` (the folded population
and every report) plus the series the plots need, and can be fed the new events of a live
store as they arrive, so the dashboard never re-reads a whole log. It also remembers which
event last wrote each point of each series, so the page can be sent only what changed since
the event it has (:meth:`RunView.changed_from`). :class:`StoreSource` does that over an SQLite
store, read-only.
"""

from __future__ import annotations

import bisect
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hyperpop.population import Population, Segment
from hyperpop.ranking import Ranking
from hyperpop.space import flatten_config
from hyperpop.store import events as ev
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event, gc_paused
from hyperpop.store.sqlite import SQLiteStore, StoreError
from hyperpop.summary import Report, RunData, json_safe, member_rows, num, run_status, summary

__all__ = ["RunView", "StoreSource", "bulk", "num"]

#: a break in a line series (plotly draws nothing between points on either side of it)
GAP: tuple[None, None] = (None, None)


#: fold many events with the cyclic garbage collector paused (the store's helper, under the name
#: the dashboard and reports use)
bulk = gc_paused


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
        touched: per member, the position in the log of its last event.
    """

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self.scores: dict[int, list[tuple[Any, Any]]] = {}
        self.sources: dict[int, list[Report | tuple[float, Report | None] | None]] = {}
        self.configs: dict[int, list[tuple[Any, dict[str, Any] | None]]] = {}
        self.nodes: dict[int, list[tuple[int, float | None]]] = {}
        self.exploits: list[dict[str, Any]] = []
        self.rejuvenations: list[dict[str, Any]] = []
        self.params: list[str] = []
        self.touched: dict[int, int] = {}
        # where in the log each point of each series was last written (never decreasing along
        # a series: a rewritten point is rewritten with everything after it)
        self._written: dict[str, dict[int, list[int]]] = {"scores": {}, "configs": {}, "nodes": {}}
        self._tail: dict[int, int] = {}  # a member's first point whose wall time may change
        self._exploit_at: list[int] = []
        self._rejuvenation_at: list[int] = []
        self._all_rows_at = -1  # a run-level event: every member's row may read differently
        self._last_edge: dict[int, Any] = {}  # each member's latest edge of the family tree
        self._at = 0
        #: the time of the latest report (every report's wall time is at most its own time)
        self.last_report_time: float | None = None
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
        written = self._written["configs"].setdefault(member, [])
        if pts and pts[-1][0] == step and pts[-1][1] is not None and len(pts) > 1:
            pts[-1] = (step, flat)
            written[-1] = self._at
        else:
            pts.append((step, flat))
            written.append(self._at)

    def _point(self, member: int, point: tuple[Any, Any], source: Any) -> None:
        self.scores[member].append(point)
        self.sources[member].append(source)
        self._written["scores"][member].append(self._at)

    def _settle(self, member: int) -> None:
        # the fold has just spread the wall times of the member's open interval (RunData's
        # _close): its points read differently from now on
        written = self._written["scores"].get(member)
        if written is None:
            return
        for i in range(self._tail.get(member, 0), len(written)):
            written[i] = self._at
        self._tail[member] = len(written)

    def changed_from(self, series: str, member: int, since: int) -> int:
        """The index of the first point of ``member``'s ``series`` (``"scores"``,
        ``"configs"`` or ``"nodes"``) that a reader who has the log up to position ``since``
        has not seen as it is now (the series' length: none)."""
        written = self._written[series].get(member, [])
        return bisect.bisect_right(written, since)

    def exploits_from(self, since: int) -> int:
        """The index of the first exploit after log position ``since``."""
        return bisect.bisect_right(self._exploit_at, since)

    def rejuvenations_from(self, since: int) -> int:
        """The index of the first rejuvenation after log position ``since``."""
        return bisect.bisect_right(self._rejuvenation_at, since)

    def rows_changed(self, since: int) -> list[int]:
        """The members whose table row may have changed after log position ``since``."""
        if since < 0 or self._all_rows_at > since:
            return sorted(self.pop.members)
        return sorted(m for m, at in self.touched.items() if at > since)

    def apply(self, e: Event) -> None:
        """Fold one event."""
        at = self._at = e.seq if e.seq is not None else self._at + 1
        k = e.kind
        if k == ev.REPORTED:  # most of a log: the short way
            super().apply(e)
            mid = int(e.member)  # type: ignore[arg-type]  # checked by the fold
            self.touched[mid] = at
            member = self.pop.members[mid]
            self.scores[mid].append((member.step, num(member.last_score)))
            self.sources[mid].append(self.reports[-1])
            self._written["scores"][mid].append(at)
            if self.last_report_time is None or e.time > self.last_report_time:
                self.last_report_time = e.time
            return
        pop = self.pop
        m = pop.members.get(e.member) if e.member is not None else None
        if e.member is None:
            if k != ev.PROGRESS:
                self._all_rows_at = self._at
        else:
            self.touched[int(e.member)] = self._at
            if m is not None and k != ev.PROGRESS:
                self._settle(m.id)
        exploited = e.payload
        if isinstance(exploited, voc.Exploited) and m is not None:
            at = exploited.at
            before = m.last_score
            super().apply(e)
            score = num(m.ready_score)
            report = self.recorded(m.id, m.step)  # the donor's, as its weights were then
            self._point(m.id, (m.step, score), (e.time, report))
            self._exploit_at.append(self._at)
            self._last_edge[m.id] = pop.edges[-1]
            self.exploits.append(
                {
                    "member": m.id,
                    "donor": m.parent,
                    "step": m.step,
                    "at": at,
                    "score": score,
                    "before": num(before),
                    "time": e.time,
                    "by": exploited.by or "pbt",
                    "report": report,
                }
            )
            self._config_point(m.id, m.step, m.config)
            return
        if k == ev.REJUVENATED and m is not None:
            before = m.last_score
            at = m.step
            super().apply(e)
            self._last_edge[m.id] = pop.edges[-1]
            self._point(m.id, GAP, None)
            self.configs[m.id].append((None, None))
            self._written["configs"][m.id].append(self._at)
            self._config_point(m.id, 0, m.config)
            self.rejuvenations.append({"member": m.id, "at": at, "score": num(before)})
            self._rejuvenation_at.append(self._at)
            return
        super().apply(e)
        if k == ev.MEMBER_CREATED:
            mid = int(e.member)  # type: ignore[arg-type]
            self.scores[mid] = []
            self.sources[mid] = []
            self.nodes[mid] = []
            self.configs[mid] = []
            self._written["scores"][mid] = []
            self._written["nodes"][mid] = []
            self._written["configs"][mid] = []
            self._config_point(mid, 0, pop.members[mid].config)
        elif m is None:
            return
        elif k == ev.CHECKPOINTED:
            self.nodes[m.id].append((m.step, num(m.ready_score)))
            self._written["nodes"][m.id].append(self._at)
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

    def member_rows(self, members: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """:func:`hyperpop.summary.member_rows` by id, JSON-safe; only ``members``' rows if
        given (without walking the whole family tree for them)."""
        if members is None:
            return json_safe(member_rows(self.pop))
        ids = [m for m in members if m in self.pop.members]
        # the rows read a population's members and edges (the last edge of each): these
        part = _Rows(
            members={m: self.pop.members[m] for m in ids},
            edges=[self._last_edge[m] for m in ids if m in self._last_edge],
            ranking=self.pop.ranking,
            settings=self.pop.settings,
        )
        return json_safe(member_rows(cast(Population, part)))

    def best_lineage(self) -> list[dict[str, Any]]:
        """The schedule of the run's best model (:meth:`Population.best_model`, the best
        every view shows): ``{"step", "member", "config"}`` segments, oldest first."""
        best = self.pop.best_model()
        if best is None:
            return []
        if best.seq is not None and best.checkpoint in self.pop.blobs:
            schedule: Iterable[Segment] = self.pop.blobs[best.checkpoint].schedule
        else:
            schedule = self.pop.members[best.member].schedule
        return [
            {"step": s.step, "member": s.member, "config": flatten_config(s.config)}
            for s in schedule
        ]

    def best_reports(self) -> list[Report]:
        """The recorded report of each step of the run's best model (its lineage through
        every copy, as :meth:`RunData.lineage_reports`), oldest first."""
        best = self.pop.best_model()
        if best is None:
            return []
        until = math.inf if best.seq is None else best.seq + 1
        return list(self.lineage_reports(best.member, until).values())


@dataclass
class _Rows:
    """What :func:`hyperpop.summary.member_rows` reads of a population."""

    members: dict[int, Any]
    edges: list[Any]
    ranking: Ranking
    settings: dict[str, Any]


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
        self._cache: dict[Any, Any] = {}
        self._cache_seq = -1
        self._ident: tuple[int, int] | None = None
        self._alive: bool | None = False
        #: names this view of the log: a page holding another epoch's data starts over
        self.epoch = secrets.token_hex(6)

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
                        self._start_over()
                if self._store is None:
                    self._store = SQLiteStore(self.path)
                    self._ident = ident
                with bulk():
                    self.view.update(self._store.read(after=self.view.seq))
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
            except Exception as e:  # noqa: BLE001 - sqlite3 and OS errors the store did not wrap
                self._fail(f"cannot read {self.path}: {type(e).__name__}: {e}")
            return None

    def _fail(self, message: str) -> None:
        self.error = message
        if self._store is not None:
            self._store.close()
            self._store = None
        if "inconsistent" in message:
            self._start_over()  # next time: the log may have been replaced

    def _start_over(self) -> None:
        self.view = RunView()
        self.epoch = secrets.token_hex(6)
        self._cache = {}

    @property
    def alive(self) -> bool | None:
        """Whether a live driver wrote the store at the last refresh (None: another host)."""
        return self._alive

    def cached(self, key: Any, build: Any) -> Any:
        """``build(view, alive)`` for the current seq, computed once per seq and key (a few
        keys per seq: pages that hold different parts of the log ask for different ones)."""
        with self._lock:
            seq = self.view.seq
            if self._cache_seq != seq:
                self._cache, self._cache_seq = {}, seq
            if key in self._cache:
                return self._cache[key]
            value = build(self.view, self.alive)
            if len(self._cache) >= 32:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = value
            return value

    def close(self) -> None:
        """Close the store."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
