"""The driver loop: joins decide (controller), do (backend) and remember (store) in one direction.

A worker's result reaches the driver, becomes events, is folded into the population, the
controller decides, the decisions become events, the results of one poll are written to the store
in one transaction, and only then are the workers told what to do next.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.callbacks import CallbackList
from hyperpop.checkpoints import CheckpointStore, full_disk_error
from hyperpop.controller import Controller, Decision, Finish, Wait, decision_events
from hyperpop.errors import RunError
from hyperpop.journal import Journal, WrittenRefs
from hyperpop.metric import check_diverged, score_of
from hyperpop.monitor import Progress, ProgressMonitor
from hyperpop.population import Population
from hyperpop.scheduling import ResultOrder, RunQueue
from hyperpop.settings import RunSettings
from hyperpop.steering import Steering, unanswered
from hyperpop.store import vocabulary as voc
from hyperpop.store.base import Store
from hyperpop.store.events import Event
from hyperpop.summary import ProgressView

__all__ = ["Driver", "Progress", "RunQueue", "WrittenRefs", "unanswered"]

log = logging.getLogger("hyperpop")


class Driver:
    """Runs one session of a run: schedules members, handles results, writes events."""

    def __init__(
        self,
        *,
        store: Store,
        pop: Population,
        controller: Controller,
        backend: Backend,
        checkpoints: CheckpointStore,
        settings: RunSettings,
        progress: ProgressView | None = None,
        callbacks: CallbackList | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store, self.pop = store, pop
        #: the order results are handled in: as they arrive, or deterministic
        self.order = ResultOrder(backend, settings.deterministic)
        self.controller, self.backend = controller, backend
        self.metric, self.max_failures = settings.metric, settings.max_failures
        self.callbacks = callbacks if callbacks is not None else CallbackList()
        #: events move to the fold, then to the store in one transaction per poll
        self.journal = Journal(store, pop, checkpoints, backend, self.callbacks)
        #: the time of events and of the wall-time budget (a simulated one in tests)
        self.clock = clock
        #: the end of the session is written: the fold and the log agree
        self.recorded = False
        self.session_start = clock()
        #: members waiting for a worker; the one furthest behind trains next
        self.queue = RunQueue(lambda member: self.pop.members[member].step)
        self.inflight: dict[int, Task] = {}
        self.user_seconds = self.worker_seconds = 0.0
        #: members given up before that this session retries (a resume's ``retry``)
        self.retrying: set[int] = set()
        #: the requests of this session (hyperpop.store.requests)
        self.steering = Steering(self)
        #: records and shows progress between ready points
        self.monitor = ProgressMonitor(progress, self)

    # --- events (the journal) --------------------------------------------------------------
    def commit(self, events: list[Event]) -> None:
        """Number events, fold them in and queue them for the next write (:class:`Journal`)."""
        self.journal.commit(events)

    def flush(self, *, collect: bool = True) -> None:
        """Write what is queued in one transaction, then collect dead checkpoints."""
        self.journal.flush(collect=collect)

    @property
    def written(self) -> WrittenRefs | None:
        """What the written log names (set when the session starts)."""
        return self.journal.written

    @written.setter
    def written(self, refs: WrittenRefs | None) -> None:
        self.journal.written = refs

    def _decide_with(
        self, events: list[Event], decide: Callable[[Population, float], list[Decision]], now: float
    ) -> None:
        """Fold ``events``, let the controller ``decide`` over the population with them folded
        in, then queue the events and the decisions as one unit: if anything raises in between,
        none of it is queued (and the loop's flush then deletes no checkpoint: the fold is
        ahead of the log)."""
        self.journal.fold(events)
        decisions = decide(self.pop, now)
        decided = self.journal.fold(decision_events(decisions, self.pop, now))
        self.journal.queue(events + decided)
        self._after(decisions)

    def elapsed(self) -> float:
        """Seconds the run has been active, across resumes."""
        return self.pop.active_seconds_before + (self.clock() - self.session_start)

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
            member = self.queue.pick(
                None if self.order.deterministic else slot, self.backend.affinity
            )
            m = self.pop.members[member]
            decide = m.alive and self.order.fresh(member)  # else decided before an interruption
            decisions = self.controller.decide(self.pop, member, self.clock()) if decide else []
            if decisions:
                decided = True
                self.commit(decision_events(decisions, self.pop, self.clock()))
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
                attempt=m.failed_in_a_row,
                reset=m.pending_reset,
            )
            self.inflight[member] = task
            picked.append((task, slot))
            self.order.started(task)
        if decided:
            self.flush()
        for task, slot in picked:
            self.backend.submit(task, slot)

    # --- results -------------------------------------------------------------------------
    def handle(self, r: TaskResult) -> None:
        self.inflight.pop(r.member, None)
        self.user_seconds += r.user_seconds
        self.worker_seconds += r.seconds
        m = self.pop.members[r.member]
        now = self.clock()
        if r.error is not None:
            self._failed(r, now)
            return
        events = [
            Event.of(voc.Reported(step, score_of(metrics, self.metric, m.id), metrics), m.id, now)
            for step, metrics in enumerate(r.reports, r.task.step + 1)
        ]
        if r.checkpoint is None:  # a backend's defect: only a failed interval saves none
            raise RunError(f"member {m.id}'s interval ended without a checkpoint")
        events.append(Event.of(voc.Checkpointed(r.end_step, r.checkpoint), m.id, now))
        # decide over the population with this interval folded in: one unit (_decide_with)
        self._decide_with(events, lambda pop, t: self.controller.on_ready(pop, r.member, t), now)
        if math.isnan(m.ready_score if m.ready_score is not None else 0.0):
            check_diverged(self.pop, self.metric)

    def _after(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Finish):
                self.backend.forget(d.member)
            elif not isinstance(d, Wait):
                self.queue.append(d.member)

    def _failed(self, r: TaskResult, now: float) -> None:
        full = full_disk_error(r.error, store=self.store.path)
        if full is not None:  # the checkpoint folder's disk is full: no member's fault
            raise full
        m = self.pop.members[r.member]
        # counted by the fold from the log, so a resume goes on counting where it stood
        attempt = m.failed_in_a_row + 1
        fatal = r.fatal or attempt > self.max_failures
        log.warning(
            "member %d failed at step %d (attempt %d%s):\n%s",
            r.member,
            r.task.step,
            attempt,
            ", giving up" if fatal else ", retrying from its last checkpoint",
            r.error,
        )
        failed = Event.of(voc.Failed(r.task.step, r.error, attempt, fatal), r.member, now)
        if not fatal:
            self.commit([failed])
            self.queue.append(r.member)
            return
        # the failure and the decisions it releases are queued as one unit
        self._decide_with([failed], self.controller.release, now)
        self.backend.forget(r.member)
        if r.fatal and r.member not in self.retrying:
            raise RunError(f"member {m.id} failed with an error a retry cannot fix:\n{r.error}")
        if r.fatal:  # given up before, retried by this resume: given up again, the run goes on
            log.warning("member %d, retried on resume, failed again: given up", r.member)

    # --- the loop ------------------------------------------------------------------------
    def loop(self) -> str:
        # a deterministic resume goes on where the log stood; else the one furthest behind first
        queue = self.order.resume(self.store.read, self.controller) if self.pop.resumes else None
        waiting = self.controller.waiting
        alive = sorted(self.pop.alive(), key=lambda m: (m.step, m.id))
        for step, member in queue or [(m.step, m.id) for m in alive if m.id not in waiting]:
            self.queue.append(member, step)
        while True:
            self.steering.serve()
            if self.steering.stop_request is not None:
                return "stopped on request"
            reason = self.controller.stop_reason(self.pop, self.elapsed())
            if reason is None:
                self.fill()
                if not self.inflight and not self.queue:
                    reason = "every member finished"
            if reason is not None:
                if self.goes_on_after_answering(reason):
                    continue
                return reason
            if not self.inflight:
                continue
            # every result of one poll is written in one transaction, before any worker is
            # told what to do next
            try:
                for r in self.order.poll():
                    self.handle(r)
            except BaseException:
                # keep every whole result already queued, but delete nothing: what raised may
                # have folded events that will never be written
                self.flush(collect=False)
                raise
            self.commit(self.monitor.record())
            self.flush()
            self.monitor.show()

    def goes_on_after_answering(self, reason: str) -> bool:
        """The run is about to finish for ``reason``: answer every request still waiting
        (a larger budget or added members may give it more to do). Whether it goes on."""
        self.steering.serve(force=True, ending=reason)
        if self.controller.stop_reason(self.pop, self.elapsed()) is not None:
            return False
        return bool(self.queue or self.inflight)

    # --- a member leaves -------------------------------------------------------------------
    def finish(self, member: int, reason: str, now: float, request: int | None = None) -> None:
        """A member leaves the population (``request``: a person's request stopped it): its
        ``finished`` event, and in synchronous mode the decisions its leaving releases (folded
        and queued here, with the finish)."""
        self.queue.remove(member)
        self.order.drop(member)
        self.backend.forget(member)
        step = self.pop.members[member].step
        by = None if request is None else "user"
        finished = Event.of(voc.Finished(step, reason, by, request), member, now)
        self._decide_with([finished], self.controller.release, now)

    def open(self, events: list[Event]) -> None:
        """Write the session's opening events (``run_started`` and the first members, or
        ``run_resumed``): callbacks see them in the population they get at the start. They
        are timed by the driver's clock, like every event of the session."""
        now = self.clock()
        for e in events:
            e.time = e.time or now
        self.commit(events)
        self.flush(collect=False)
        # what the controller keeps in memory follows the fold (a resume may revive members)
        self.controller.restore(self.pop)
        for e in events:
            if isinstance(e.payload, voc.RunResumed):
                self.retrying.update(e.payload.retry)

    def execute(self) -> None:
        """Run the session to its end and record how it ended. The caller owns every
        lifetime: it starts the backend before and shuts it down after (then
        :meth:`collect_leftovers`), and opens and closes the store.

        Raises:
            RunError: every member failed (after the end is recorded).
        """
        pop = self.pop
        self.session_start = self.clock()
        self.journal.start()
        reason = "error"
        self.callbacks.on_start(pop, self.store.path)
        try:
            reason = self.loop()
            now = self.clock()
            stop = self.steering.stop_request
            ending = stop is None  # stopped on request: the run stays resumable
            events = [
                Event.of(voc.Finished(m.step, reason), m.id, now)
                for m in (pop.alive() if ending else [])
            ]
            if ending:
                events.append(Event.of(voc.RunFinished(reason), None, now))
            else:
                reason = "stopped"
                log.warning(
                    "stopped on request %s; continue with: hyperpop resume %s",
                    stop.id if stop else "?",
                    self.store.path or "DB",
                )
            self.commit(events)
            self.flush()
            self.recorded = True
            if pop.members and all(m.status == "failed" for m in pop.members.values()):
                first = min(pop.members.values(), key=lambda m: m.id)
                raise RunError(
                    f"every member failed; member {first.id}'s last error:\n{first.last_error}"
                )
            self.monitor.show(now=True)
        finally:
            self.callbacks.on_end(pop, reason)
            self.monitor.close()

    def collect_leftovers(self) -> None:
        """Once no worker writes any more (the backend is shut down): delete the blobs the log
        does not name (:meth:`Journal.collect_leftovers`), once the end is recorded."""
        if self.recorded:
            self.journal.collect_leftovers()
