"""The driver loop: joins decide (controller), do (backend) and remember (store) in one direction.

A worker's result reaches the driver, becomes events, is folded into the population, the
controller decides, the decisions become events, the results of one poll are written to the store
in one transaction, and only then are the workers told what to do next.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from hyperpop.backends.base import Backend, Task, TaskResult
from hyperpop.backends.simulated import SimulatedClock
from hyperpop.callbacks import CallbackList
from hyperpop.checkpoints import CheckpointStore, full_disk_error
from hyperpop.controller import Controller, Decision, Finish, Wait, decision_events
from hyperpop.errors import MetricError, RunError
from hyperpop.population import Population
from hyperpop.scheduling import RunQueue
from hyperpop.settings import RunSettings
from hyperpop.steering import Steering, unanswered
from hyperpop.store import vocabulary as voc
from hyperpop.store.base import Store
from hyperpop.store.events import Event
from hyperpop.summary import ProgressView, RunState
from hyperpop.written import WrittenRefs

__all__ = ["Driver", "Progress", "RunQueue", "WrittenRefs", "unanswered"]

log = logging.getLogger("hyperpop")


Progress = Callable[[Population], None]


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
        #: handle results in the order of a simulated clock (each interval takes its number of
        #: steps), not in the order they arrive: the same decisions whatever the timing
        self.deterministic = settings.deterministic
        self._sim = SimulatedClock()
        self._arrived: dict[int, TaskResult] = {}
        self.controller, self.backend = controller, backend
        self.checkpoints = checkpoints
        self.metric, self.max_failures = settings.metric, settings.max_failures
        self.progress = progress
        self.callbacks = callbacks if callbacks is not None else CallbackList()
        #: the time of events and of the wall-time budget (a simulated one in tests)
        self.clock = clock
        #: callbacks hear of events once the session has started (they see the run's opening
        #: events in the population they get at the start)
        self._started = False
        #: the end of the session is written: the fold and the log agree
        self.recorded = False
        #: what the written log names (set when the session starts)
        self.written: WrittenRefs | None = None
        self.session_start = clock()
        #: members waiting for a worker; the one furthest behind trains next
        self.queue = RunQueue(lambda member: self.pop.members[member].step)
        self.inflight: dict[int, Task] = {}
        self.attempts: dict[int, int] = {}
        self.user_seconds = 0.0
        self.worker_seconds = 0.0
        #: events folded in but not yet written (written together after each poll)
        self.pending: list[Event] = []
        #: members given up before that this session retries (a resume's ``retry``)
        self.retrying: set[int] = set()
        #: the requests of this session (hyperpop.store.requests)
        self.steering = Steering(self)
        #: member -> (step, time) of its last progress event
        self._progress_seen: dict[int, tuple[int, float]] = {}

    # --- events --------------------------------------------------------------------------
    def commit(self, events: list[Event]) -> None:
        """Number events, queue them for the next write and fold them into the population
        (queued first: the fold never runs ahead of what will be written). The store checks
        that the numbers follow on from what it holds."""
        self.pending.extend(self._fold(events))

    def _fold(self, events: list[Event]) -> list[Event]:
        """Number events after the last one folded, and fold them in (not queued: the caller
        queues a unit of folded events together, or none of it if something raises)."""
        seq = self.pop.last_seq
        for e in events:
            seq += 1
            e.seq = seq
        self.pop.extend(events)
        return events

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
        written = self.written
        if self.pending:
            self.store.append(self.pending)
            if written is not None:
                written.written(self.pending)
            events, self.pending = self.pending, []
            if self._started:
                self.callbacks.on_events(events, self.pop)
        if not collect:
            return
        for blob in self.pop.drain_dead():
            if written is None or not written.names(blob):
                self.checkpoints.delete(blob)
                self.backend.release(blob)

    def elapsed(self) -> float:
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
            member = self.queue.pick(None if self.deterministic else slot, self.backend.affinity)
            m = self.pop.members[member]
            decisions = self.controller.decide(self.pop, member, self.clock()) if m.alive else []
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
                attempt=self.attempts.get(member, 0),
                reset=m.pending_reset,
            )
            self.inflight[member] = task
            picked.append((task, slot))
            if self.deterministic:
                self._sim.start(member, task.steps or 1)
        if decided:
            self.flush()
        for task, slot in picked:
            self.backend.submit(task, slot)

    def _poll(self) -> list[TaskResult]:
        """Finished intervals to handle now: as they arrive, or in deterministic mode one at a
        time in simulated-clock order (the next by (end, submission) once it has arrived),
        which is the order ``backend="simulated"`` produces."""
        if not self.deterministic:
            return self.backend.poll(timeout=0.5)
        for r in self.backend.poll(timeout=0.0 if self._next_arrived() else 0.5):
            self._arrived[r.member] = r
        member = self._next_arrived()
        if member is None:
            return []
        self._sim.end(member)
        return [self._arrived.pop(member)]

    def _next_arrived(self) -> int | None:
        member = self._sim.next()
        return member if member in self._arrived else None

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
        self.attempts.pop(r.member, None)
        events = [
            Event.of(voc.Reported(r.task.step + i + 1, self._score(metrics, r), metrics), m.id, now)
            for i, metrics in enumerate(r.reports)
        ]
        if r.checkpoint is None:  # a backend's defect: only a failed interval saves none
            raise RunError(f"member {m.id}'s interval ended without a checkpoint")
        events.append(Event.of(voc.Checkpointed(r.end_step, r.checkpoint), m.id, now))
        # Decide over the population with this interval folded in, then queue the interval and
        # its decisions as one unit: if anything raises in between, none of it is queued (and
        # the loop's flush then deletes no checkpoint: the fold is ahead of the log).
        self._fold(events)
        decisions = self.controller.on_ready(self.pop, r.member, now)
        decided = self._fold(decision_events(decisions, self.pop, now))
        self.pending.extend(events + decided)
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

    def _after(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Finish):
                self.backend.forget(d.member)
            elif not isinstance(d, Wait):
                self.queue.append(d.member)

    def _failed(self, r: TaskResult, now: float) -> None:
        full = full_disk_error(r.error)
        if full is not None:  # the checkpoint folder's disk is full: no member's fault
            raise full
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
        failed = Event.of(voc.Failed(r.task.step, r.error, attempt, fatal), r.member, now)
        if not fatal:
            self.commit([failed])
            self.queue.append(r.member)
            return
        # the failure and the decisions it releases are queued as one unit (see handle)
        self._fold([failed])
        decisions = self.controller.release(self.pop, now)
        decided = self._fold(decision_events(decisions, self.pop, now))
        self.pending.extend([failed, *decided])
        self.backend.forget(r.member)
        self._after(decisions)
        if r.fatal and r.member not in self.retrying:
            raise RunError(f"member {m.id} failed with an error a retry cannot fix:\n{r.error}")
        if r.fatal:  # given up before, retried by this resume: given up again, the run goes on
            log.warning("member %d, retried on resume, failed again: given up", r.member)

    # --- the loop ------------------------------------------------------------------------
    def loop(self) -> str:
        waiting = self.controller.waiting
        for m in sorted(self.pop.alive(), key=lambda m: (m.step, m.id)):
            if m.id not in waiting:
                self.queue.append(m.id)
        last_progress = 0.0
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
                for r in self._poll():
                    self.handle(r)
            except BaseException:
                # keep every whole result already queued, but delete nothing: what raised may
                # have folded events that will never be written
                self.flush(collect=False)
                raise
            self.record_progress()
            self.flush()
            if self.progress is not None and time.time() - last_progress > 0.2:
                self.show_progress()
                last_progress = time.time()

    def goes_on_after_answering(self, reason: str) -> bool:
        """The run is about to finish for ``reason``: answer every request still waiting
        (a larger budget or added members may give it more to do). Whether it goes on."""
        self.steering.serve(force=True, ending=reason)
        if self.controller.stop_reason(self.pop, self.elapsed()) is not None:
            return False
        return bool(self.queue or self.inflight)

    #: seconds between two progress events of one member (reports of a running interval)
    PROGRESS_INTERVAL = 1.0

    def record_progress(self) -> None:
        """Count the reports of intervals still running (from backends that tell), as
        ``progress`` events: readers see a run move between ready points. Counted only: the
        reports themselves are recorded with the interval's checkpoint, as before."""
        steps = self.backend.progress()
        if not steps:
            return
        now = self.clock()
        events = []
        for member, n in steps.items():
            task = self.inflight.get(member)
            if task is None or n <= 0:
                continue
            step = task.step + n
            last = self._progress_seen.get(member)
            if last is not None and (last[0] >= step or now - last[1] < self.PROGRESS_INTERVAL):
                continue
            self._progress_seen[member] = (step, now)
            events.append(Event.of(voc.Progress(step), member, now))
        if events:
            self.commit(events)

    def state(self) -> RunState:
        """Who trains now, who waits for a worker, and for how long the run has been active."""
        return RunState(
            running=frozenset(self.inflight),
            queued=frozenset(self.queue),
            elapsed=self.elapsed(),
            max_steps=self.controller.max_steps,
        )

    def show_progress(self) -> None:
        """Hand the population and the run's state to the progress display."""
        if self.progress is not None:
            self.progress(self.pop, self.state())

    # --- a member leaves -------------------------------------------------------------------
    def finish(self, member: int, reason: str, now: float, request: int | None = None) -> None:
        """A member leaves the population (``request``: a person's request stopped it): its
        ``finished`` event, and in synchronous mode the decisions its leaving releases (folded
        and queued here, with the finish)."""
        self.queue.remove(member)
        self.backend.forget(member)
        step = self.pop.members[member].step
        by = None if request is None else "user"
        finished = Event.of(voc.Finished(step, reason, by, request), member, now)
        self._fold([finished])
        decisions = self.controller.release(self.pop, now)
        decided = self._fold(decision_events(decisions, self.pop, now))
        self.pending.extend([finished, *decided])
        self._after(decisions)

    def best_state(self) -> Any:
        """The state of the run's best checkpoint, or None."""
        blob = self.pop.best_checkpoint
        if blob is None:
            return None
        try:
            return self.checkpoints.load(blob)
        except Exception as e:  # noqa: BLE001 - the run's outcome matters more
            log.warning("could not keep the best checkpoint %s: %s", blob, e)
            return None

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
        #: what the written log names (the fold and the log agree here: nothing is pending)
        self.written = WrittenRefs(pop) if not self.pending else None
        reason = "error"
        self._started = True
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
            if self.progress is not None:
                self.show_progress()
        finally:
            self.callbacks.on_end(pop, reason)
            if self.progress is not None:
                self.progress.close()

    def collect_leftovers(self) -> None:
        """Once no worker writes any more (the backend is shut down): delete the blobs the log
        does not name (saved by a worker killed before its result arrived, half-written
        files). Only after the end is recorded: the fold and the log agree then."""
        if not self.recorded:
            return
        keep = self.pop.live_checkpoints()
        if self.written is not None:
            keep |= set(self.written.count)
        self.checkpoints.collect(keep, temporaries=True)
