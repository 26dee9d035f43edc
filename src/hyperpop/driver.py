"""The driver loop: joins decide (controller), do (backend) and remember (store) in one direction.

A worker's result reaches the driver, becomes events, is folded into the population, the
controller decides, the decisions become events, the results of one poll are written to the store
in one transaction, and only then are the workers told what to do next.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.checkpoints import CheckpointStore
from hyperpop.controller import Controller, Decision
from hyperpop.population import Population
from hyperpop.results import Result
from hyperpop.store import events as ev
from hyperpop.store.events import Event

__all__ = ["Driver", "MetricError", "Progress", "RunError"]

log = logging.getLogger("hyperpop")


class RunError(RuntimeError):
    """The run cannot go on (every member failed, all scores are NaN...)."""


class MetricError(RunError):
    """The trainable does not report the metric being optimised, or reports a non-number."""


Progress = Callable[[Population], None]


class WrittenRefs:
    """The checkpoint each member holds according to the events *written* so far.

    The driver deletes a blob only when both the fold and this say nothing holds it: whatever
    was folded but never written (a decision cut short by an exception) can never get a blob
    the log names deleted.
    """

    def __init__(self, pop: Population):
        self.held: dict[int, str] = {
            m.id: m.checkpoint for m in pop.members.values() if m.checkpoint
        }
        self.count: dict[str, int] = {}
        for blob in self.held.values():
            self.count[blob] = self.count.get(blob, 0) + 1

    def _hold(self, member: int, blob: str | None) -> None:
        old = self.held.pop(member, None)
        if old is not None:
            self.count[old] -= 1
            if not self.count[old]:
                del self.count[old]
        if blob:
            self.held[member] = blob
            self.count[blob] = self.count.get(blob, 0) + 1

    def written(self, events: list[Event]) -> None:
        """Follow events that were just written."""
        for e in events:
            if e.kind in (ev.CHECKPOINTED, ev.EXPLOITED):
                self._hold(e.member, e.data["checkpoint"])  # type: ignore[arg-type]
            elif e.kind == ev.REJUVENATED:
                self._hold(e.member, None)  # type: ignore[arg-type]

    def names(self, blob: str) -> bool:
        """Whether some member holds ``blob`` in the written log."""
        return blob in self.count


class RunQueue:
    """Members waiting for a worker, the one furthest behind first.

    With more members than workers, training the member whose model has the fewest steps next
    keeps the population moving forward evenly, so every ready decision finds members at
    comparable progress to compare with. Among members equally far along, one whose state the
    free worker already holds in memory goes first (no reload), then the one queued longest:
    memory affinity breaks ties, it never lets a member fall behind.

    Args:
        progress: a member's progress (its model's steps) when it is queued.
    """

    #: how many equally-far-along members are looked through for one the worker holds
    AFFINITY_WINDOW = 64

    def __init__(self, progress: Callable[[int], int]):
        self._progress = progress
        self._heap: list[tuple[int, int, int]] = []  # (progress, order, member)
        self._order = 0
        self._queued: dict[int, int] = {}  # member -> its live entry's order

    def __len__(self) -> int:
        return len(self._queued)

    def __bool__(self) -> bool:
        return bool(self._queued)

    def __contains__(self, member: object) -> bool:
        return member in self._queued

    def __iter__(self) -> Iterator[int]:
        return iter([m for _, o, m in sorted(self._heap) if self._queued.get(m) == o])

    def append(self, member: int) -> None:
        """Queue ``member`` (again: its earlier entry is replaced)."""
        self._order += 1
        self._queued[member] = self._order
        heapq.heappush(self._heap, (self._progress(member), self._order, member))

    def remove(self, member: int) -> None:
        """Take ``member`` out of the queue (its heap entry is dropped lazily)."""
        self._queued.pop(member, None)

    def head(self) -> int:
        """Progress of the member that would train next (the queue must not be empty)."""
        return self._top()[0]

    def _top(self) -> tuple[int, int, int]:
        while self._heap:
            entry = self._heap[0]
            if self._queued.get(entry[2]) == entry[1]:
                return entry
            heapq.heappop(self._heap)  # stale
        raise IndexError("pick from an empty queue")

    def pick(self, slot: int | None, affinity: Callable[[int], int | None]) -> int:
        """Take the next member to train on worker ``slot``."""
        head = self._top()
        chosen = head
        if slot is not None and affinity(head[2]) != slot:
            held: list[tuple[int, int, int]] = []
            while self._heap and len(held) < self.AFFINITY_WINDOW:
                entry = heapq.heappop(self._heap)
                if self._queued.get(entry[2]) != entry[1]:
                    continue  # stale
                if entry[0] != head[0]:
                    heapq.heappush(self._heap, entry)
                    break
                held.append(entry)
                if affinity(entry[2]) == slot:
                    chosen = entry
                    break
            for entry in held:
                heapq.heappush(self._heap, entry)
        del self._queued[chosen[2]]
        return chosen[2]


class Driver:
    """Runs one session of a run: schedules members, handles results, writes events."""

    def __init__(
        self,
        *,
        store: Any,
        pop: Population,
        controller: Controller,
        backend: Backend,
        checkpoints: CheckpointStore,
        factory: Callable[[], Any],
        metric: str,
        max_failures: int,
        progress: Progress | None,
    ):
        self.store, self.pop = store, pop
        self.controller, self.backend = controller, backend
        self.checkpoints, self.factory = checkpoints, factory
        self.metric, self.max_failures = metric, max_failures
        self.progress = progress
        self.session_start = time.time()
        #: members waiting for a worker; the one furthest behind trains next
        self.queue = RunQueue(lambda member: self.pop.members[member].step)
        self.inflight: dict[int, Task] = {}
        self.attempts: dict[int, int] = {}
        self.user_seconds = 0.0
        self.worker_seconds = 0.0
        #: events folded in but not yet written (written together after each poll)
        self.pending: list[Event] = []

    # --- events --------------------------------------------------------------------------
    def commit(self, events: list[Event]) -> None:
        """Queue events for the next write and fold them into the population (queued first:
        the fold never runs ahead of what will be written)."""
        self.pending.extend(events)
        self.pop.extend(events)

    def flush(self, *, collect: bool = True) -> None:
        """Write every queued event in one transaction, then delete the checkpoints they made
        unreachable (never before: a crash in between must not leave the log pointing at a
        deleted blob).

        Args:
            collect: delete unreachable checkpoints. Pass False while an exception unwinds: the
                fold may then hold events that were never queued (a decision cut short), so
                the blobs it calls dead may still be named by the written log. Whatever is
                left behind is collected by the next resume.
        """
        written = getattr(self, "written", None)
        if self.pending:
            self.store.append(self.pending)
            self.pop.last_seq = max(self.pop.last_seq, self.pending[-1].seq or 0)
            if written is not None:
                written.written(self.pending)
            self.pending = []
        if not collect:
            return
        for blob in self.pop.drain_dead():
            if written is None or not written.names(blob):
                self.checkpoints.delete(blob)

    def elapsed(self) -> float:
        return self.pop.active_seconds_before + (time.time() - self.session_start)

    # --- scheduling ----------------------------------------------------------------------
    def fill(self) -> None:
        """Give every free worker the member furthest behind. A member whose ready point is
        not decided yet (asynchronous mode) is decided now, over the population as it stands;
        those decisions are written before any worker is told to act on them."""
        picked: list[tuple[Task, int | None]] = []
        free = list(self.backend.free_slots())
        decided = False
        limit = self.controller.lead_limit
        while self.queue and len(self.inflight) < self.backend.capacity:
            if limit is not None and self.inflight:
                behind = min(t.step for t in self.inflight.values())
                if self.queue.head() - behind >= limit:
                    break  # every queued member is too far ahead: wait for the one behind
            slot = free.pop(0) if free else None
            member = self.queue.pick(slot, self.backend.affinity)
            m = self.pop.members[member]
            decisions = self.controller.decide(self.pop, member, time.time()) if m.alive else []
            if decisions:
                decided = True
                self.commit(self._decision_events(decisions, time.time()))
            if not m.alive:  # finished or failed (possibly just now)
                self.backend.forget(member)
                if slot is not None:
                    free.insert(0, slot)
                continue
            iv = self.controller.interval(m)
            task = Task(
                member=member,
                config=m.config,
                checkpoint=m.checkpoint,
                step=m.step,
                steps=iv.steps,
                seconds=iv.seconds,
                attempt=self.attempts.get(member, 0),
            )
            self.inflight[member] = task
            picked.append((task, slot))
        if decided:
            self.flush()
        for task, slot in picked:
            if slot is not None:
                self.backend.submit(task, slot)  # type: ignore[call-arg]
            else:
                self.backend.submit(task)

    # --- results -------------------------------------------------------------------------
    def handle(self, r: TaskResult) -> None:
        self.inflight.pop(r.member, None)
        self.user_seconds += r.user_seconds
        self.worker_seconds += r.seconds
        m = self.pop.members[r.member]
        now = time.time()
        if r.error is not None:
            self._failed(r, now)
            return
        self.attempts.pop(r.member, None)
        events: list[Event] = []
        for i, metrics in enumerate(r.reports):
            events.append(
                Event(
                    ev.REPORTED,
                    r.member,
                    {
                        "step": r.task.step + i + 1,
                        "score": self._score(metrics, r),
                        "metrics": metrics,
                    },
                    now,
                )
            )
        events.append(
            Event(ev.CHECKPOINTED, r.member, {"step": r.end_step, "checkpoint": r.checkpoint}, now)
        )
        # Decide over the population with this interval folded in, then queue the interval and
        # its decisions as one unit: if anything raises in between, none of it is queued (and
        # the loop's flush then deletes no checkpoint: the fold is ahead of the log).
        self.pop.extend(events)
        decisions = self.controller.on_ready(self.pop, r.member, now)
        decided = self._decision_events(decisions, now)
        self.pending.extend(events + decided)
        self.pop.extend(decided)
        self._after(decisions)
        if math.isnan(m.ready_score if m.ready_score is not None else 0.0):
            self._check_all_nan()

    def _score(self, metrics: Mapping[str, Any], r: TaskResult) -> float:
        if self.metric not in metrics:
            raise MetricError(
                f"the trainable reported {sorted(metrics)} but not the metric {self.metric!r} "
                f"(member {r.member}); return it from train() or pass metric= one of those keys"
            )
        value = metrics[self.metric]
        try:
            return float(value)
        except (TypeError, ValueError):
            raise MetricError(
                f"metric {self.metric!r} must be a number, got {value!r} (member {r.member})"
            ) from None

    def _check_all_nan(self) -> None:
        members = [m for m in self.pop.members.values() if m.status != "failed"]
        scored = [m.ready_score for m in members if m.ready_score is not None]
        if members and len(scored) == len(members) and all(math.isnan(s) for s in scored):
            raise RunError(
                f"every member reports NaN for {self.metric!r}: training diverged "
                "everywhere. Narrow the search space (e.g. lower learning rates) or clip "
                "gradients; what was recorded so far is kept in the store"
            )

    def _decision_events(self, decisions: list[Decision], now: float) -> list[Event]:
        """The events that record ``decisions`` (a ``continue`` or ``wait`` records nothing)."""
        out: list[Event] = []
        for d in decisions:
            m = self.pop.members[d.member]
            old = m.config
            if d.kind == "exploit":
                old = self.pop.blobs[d.checkpoint].config
                data = {"donor": d.donor, "step": d.step, "checkpoint": d.checkpoint, "at": m.step}
                out.append(Event(ev.EXPLOITED, d.member, data, now))
            if d.kind in ("exploit", "explore") and d.config != old:
                data = {"config": d.config, "old_config": old, "how": d.how}
                out.append(Event(ev.EXPLORED, d.member, data, now))
            elif d.kind == "rejuvenate":
                data = {"config": d.config, "old_config": old, "at": m.step}
                out.append(Event(ev.REJUVENATED, d.member, data, now))
            elif d.kind == "finish":
                out.append(Event(ev.FINISHED, d.member, {"step": m.step, "reason": d.reason}, now))
        return out

    def _after(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if d.kind == "finish":
                self.backend.forget(d.member)
            elif d.kind != "wait":
                self.queue.append(d.member)

    def _failed(self, r: TaskResult, now: float) -> None:
        m = self.pop.members[r.member]
        attempt = self.attempts.get(r.member, 0) + 1
        self.attempts[r.member] = attempt
        fatal = r.fatal or attempt > self.max_failures
        log.warning(
            "member %d failed at step %d (attempt %d%s):\n%s",
            r.member,
            r.task.step,
            attempt,
            ", giving up" if fatal else ", retrying from its last checkpoint",
            r.error,
        )
        failed = Event(
            ev.FAILED,
            r.member,
            {"step": r.task.step, "error": r.error, "attempt": attempt, "fatal": fatal},
            now,
        )
        if not fatal:
            self.commit([failed])
            self.queue.append(r.member)
            return
        # the failure and the decisions it releases are queued as one unit (see handle)
        self.pop.extend([failed])
        decisions = self.controller.release(self.pop, now)
        decided = self._decision_events(decisions, now)
        self.pending.extend([failed, *decided])
        self.pop.extend(decided)
        self.backend.forget(r.member)
        self._after(decisions)
        if r.fatal:
            raise RunError(f"member {m.id} failed with an error a retry cannot fix:\n{r.error}")

    # --- the loop ------------------------------------------------------------------------
    def loop(self) -> str:
        waiting = self.controller.waiting
        for m in sorted(self.pop.alive(), key=lambda m: (m.step, m.id)):
            if m.id not in waiting:
                self.queue.append(m.id)
        last_progress = 0.0
        while True:
            reason = self.controller.stop_reason(self.pop, self.elapsed())
            if reason is not None:
                return reason
            self.fill()
            if not self.inflight:
                if not self.queue:
                    return "every member finished"
                continue
            # every result of one poll is written in one transaction, before any worker is
            # told what to do next
            try:
                for r in self.backend.poll(timeout=0.5):
                    self.handle(r)
            except BaseException:
                # keep every whole result already queued, but delete nothing: what raised may
                # have folded events that will never be written
                self.flush(collect=False)
                raise
            self.flush()
            if self.progress is not None and time.time() - last_progress > 0.2:
                self.progress(self.pop)
                last_progress = time.time()

    def execute(self, cleanup: Callable[[], None] | None = None) -> Result:
        """Run the session to its end, record how it ended, close everything, and return the
        run's :class:`Result`. ``cleanup`` runs last (e.g. removing a temporary folder)."""
        pop, store, backend, progress = self.pop, self.store, self.backend, self.progress
        self.session_start = time.time()
        #: what the written log names (the fold and the log agree here: nothing is pending)
        self.written = WrittenRefs(pop) if not self.pending else None
        backend.start(self.factory, self.checkpoints)
        recorded = False  # the end is written: the fold and the log agree
        try:
            reason = self.loop()
            now = time.time()
            events = [
                Event(ev.FINISHED, m.id, {"step": m.step, "reason": reason}, now)
                for m in pop.alive()
            ]
            events.append(Event(ev.RUN_FINISHED, None, {"reason": reason}, now))
            self.commit(events)
            self.flush()
            recorded = True
            if pop.members and all(m.status == "failed" for m in pop.members.values()):
                first = min(pop.members.values(), key=lambda m: m.id)
                raise RunError(
                    f"every member failed; member {first.id}'s last error:\n{first.last_error}"
                )
            if progress is not None:
                progress(pop)
        finally:
            close = getattr(progress, "close", None)
            if close is not None:
                close()
            backend.shutdown()
            if recorded:
                # no worker writes any more: drop what the log does not name (blobs saved by
                # a worker killed before its result arrived, half-written files)
                keep = pop.live_checkpoints()
                if self.written is not None:
                    keep |= set(self.written.count)
                self.checkpoints.collect(keep, temporaries=True)
            events = store.read()
            store.close()
            if cleanup is not None:
                cleanup()
        result = Result(events, path=getattr(store, "path", None))
        result.overhead = {
            "user_seconds": self.user_seconds,
            "worker_seconds": self.worker_seconds,
        }
        return result
