"""Requests into a running driver (:mod:`hyperpop.store.requests`): read, check, act, answer.

The driver's loop calls :meth:`Steering.serve` on every poll. Each request is checked
(:func:`hyperpop.store.requests.parse`) before anything is done about it; what it asks is done
through the events it leads to, and its answer (``request_handled``: done or refused, with a
reason) is queued with them, so that both are written in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from hyperpop.backends.base import Backend
from hyperpop.controller import Controller, budget_from_dict
from hyperpop.population import MemberState, Population
from hyperpop.space import SpaceError
from hyperpop.store import requests as rq
from hyperpop.store import vocabulary as voc
from hyperpop.store.base import Store
from hyperpop.store.events import Event
from hyperpop.store.requests import Request

__all__ = ["Host", "Steering", "describe_parameter", "unanswered"]

log = logging.getLogger("hyperpop")


class _Queue(Protocol):
    def __contains__(self, member: object) -> bool: ...

    def append(self, member: int) -> None: ...


class Host(Protocol):
    """What request handling needs of the driver it serves."""

    @property
    def pop(self) -> Population:
        """The fold of the run's events."""

    @property
    def controller(self) -> Controller:
        """Decides (its space, its budget, its random generator)."""

    @property
    def store(self) -> Store:
        """Where the requests are read."""

    @property
    def backend(self) -> Backend:
        """Runs the members (a ``workers`` request resizes it)."""

    @property
    def queue(self) -> _Queue:
        """Members waiting for a worker."""

    @property
    def inflight(self) -> Mapping[int, Any]:
        """Members training now."""

    @property
    def clock(self) -> Callable[[], float]:
        """The time of events."""

    @property
    def session_start(self) -> float:
        """When the session started (by :attr:`clock`)."""

    def commit(self, events: list[Event]) -> None:
        """Number events, fold them in and queue them for the next write."""

    def flush(self) -> None:
        """Write what is queued, in one transaction."""

    def finish(self, member: int, reason: str, now: float, request: int | None = None) -> None:
        """A member leaves the run (with what its leaving releases)."""


class _Refused(Exception):
    """A request the driver cannot carry out (the reason is recorded with its answer)."""


def describe_parameter(d: Mapping[str, Any]) -> str:
    """A parameter's range in words, from its ``to_dict()`` (``a float from 0.1 to 1``)."""
    kind = d.get("type")
    if kind in ("float", "int"):
        scale = " on a log scale" if d.get("log") else ""
        what = "a float" if kind == "float" else "an int"
        return f"{what} from {d['low']:g} to {d['high']:g}{scale}"
    if kind == "choice":
        return f"one of {d['options']!r}"
    if kind == "constant":
        return f"the constant {d['value']!r}"
    return repr(dict(d))


def unanswered(store: Store, pop: Population) -> list[Request]:
    """The requests in ``store`` that the run's log has not answered yet."""
    return [r for r in store.read_requests() if r.id not in pop.handled]


class Steering:
    """The requests of one driver session.

    Args:
        host: the driver it serves.
    """

    #: seconds between two reads of the request table (a poll waits at most 0.5 s)
    REQUEST_INTERVAL = 0.2

    def __init__(self, host: Host):
        self.host = host
        #: requests waiting for their member's interval to come back (in request order)
        self.deferred: list[tuple[Request, rq.Action]] = []
        #: the stop request that ends this session (the run stays resumable)
        self.stop_request: Request | None = None
        self._requests_read = 0.0
        self._read_upto = 0  # the last request id read this session

    def serve(self, *, force: bool = False, ending: str | None = None) -> None:
        """Act on the requests made since the last read, and on deferred ones whose member's
        interval came back. Each action and its answer (``request_handled``: done or refused,
        with a reason) are written in one transaction, so a request is acted on exactly once:
        a driver that dies before writing leaves it unanswered, and the next one acts on it.

        Every request is checked (:func:`hyperpop.store.requests.parse`) before anything is
        done about it: a malformed one is refused, naming what is wrong.

        Args:
            force: read the request table now, however recently it was read.
            ending: the run is about to finish for this reason: every request still waiting
                is answered now. A new budget or added members may give the run more to do;
                anything else is refused (the run has finished).
        """
        h = self.host
        now = h.clock()
        if (
            not force
            and ending is None
            and now - self._requests_read < self.REQUEST_INTERVAL
            and not (self.deferred and any(r.member not in h.inflight for r, _ in self.deferred))
        ):
            return
        self._requests_read = now
        fresh = h.store.read_requests(self._read_upto)
        if fresh:
            self._read_upto = max(r.id or 0 for r in fresh)
        # the first read of a session reads every request: one left unanswered by a driver
        # that died (or deferred when it stopped) is acted on now
        todo: list[tuple[Request, rq.Action | None]] = self.deferred + [
            (r, None) for r in fresh if r.id not in h.pop.handled
        ]
        if not todo:
            return
        self.deferred = []
        for r, action in todo:
            if self.stop_request is not None:
                break  # the rest waits for the next session
            if action is None:
                try:
                    action = r.parse()
                except rq.RequestError as e:
                    self._answer(r, "refused", str(e), now)
                    continue
            if ending is not None and not isinstance(action, (rq.Add, rq.SetBudget)):
                self._answer(r, "refused", f"the run has finished ({ending})", now)
                continue
            busy = action.member is not None and (
                action.member in h.inflight
                or any(d.member == action.member for d, _ in self.deferred)
            )
            if busy and isinstance(action, (rq.SetConfig, rq.Copy, rq.Stop)):
                self.deferred.append((r, action))  # acted on when the member's interval is back
                continue
            try:
                self._answer(r, "done", self._act(r, action, now), now)
            except _Refused as e:
                self._answer(r, "refused", str(e), now)
        h.flush()

    def _answer(self, r: Request, status: str, reason: str, now: float) -> None:
        """Queue the answer to ``r`` (written with what was done about it, in one transaction)."""
        m = r.member
        member = m if isinstance(m, int) and not isinstance(m, bool) and abs(m) < 2**63 else None
        if r.id is None:
            raise ValueError("a request is answered once it is stored")
        answer = voc.RequestHandled(r.id, str(r.kind), member, status, reason)
        self.host.commit([Event.of(answer, None, now)])
        if status == "done":
            log.info("request %s (%s) done: %s", r.id, r.kind, reason)
        else:
            log.warning("request %s (%s) refused: %s", r.id, r.kind, reason)

    def _opened(self) -> float:
        """When this driver took the store (a request made before was meant for another)."""
        since = (self.host.store.writer() or {}).get("since")
        return float(since) if isinstance(since, (int, float)) else self.host.session_start

    def _member(self, member: int, *, alive: bool = True) -> MemberState:
        m = self.host.pop.members.get(member)
        if m is None:
            raise _Refused(f"no member {member} in this run")
        if alive and not m.alive:
            raise _Refused(f"member {m.id} has {m.status}")
        return m

    def _act(self, r: Request, action: rq.Action, now: float) -> str:
        """Carry out request ``r`` (``action`` is what it asks): its events are folded and
        queued here. Returns what was done (raises :class:`_Refused` before any event)."""
        if isinstance(action, rq.Stop):
            return self._stop(r, action, now)
        if isinstance(action, rq.Pin):
            m = self._member(action.member)
            pinned = voc.Pinned(action.pinned, voc.USER, r.id)
            self.host.commit([Event.of(pinned, m.id, now)])
            return f"member {m.id} {'pinned' if action.pinned else 'unpinned'}"
        if isinstance(action, rq.SetConfig):
            m = self._member(action.member)
            config = self._merge(m.config, action.config)
            explored = voc.Explored(config, m.config, "user", voc.USER, r.id)
            self.host.commit([Event.of(explored, m.id, now)])
            self._requeue(m.id)
            return f"member {m.id} trains with {m.config} from step {m.step}"
        if isinstance(action, rq.Copy):
            return self._copy(action, now, r.id)
        if isinstance(action, rq.Add):
            return self._add(action, now, r.id)
        if isinstance(action, rq.Workers):
            return self._workers(action, now, r.id)
        return self._budget(action, now, r.id)

    def _stop(self, r: Request, action: rq.Stop, now: float) -> str:
        if action.member is not None:
            m = self._member(action.member)
            self.host.finish(m.id, "stopped by user", now, r.id)
            return f"member {m.id} finished"
        if r.time < self._opened():
            raise _Refused(
                "made while no driver ran (the run had already stopped); nothing to stop"
            )
        self.stop_request = r
        self.host.commit(
            [Event.of(voc.RunStopped(voc.STOPPED_ON_REQUEST, voc.USER, r.id), None, now)]
        )
        return "the run stopped (resume it)"

    def _copy(self, action: rq.Copy, now: float, request: int | None) -> str:
        m = self._member(action.member)
        pop = self.host.pop
        donor = pop.members.get(action.donor)
        if donor is None:
            raise _Refused(f"no member {action.donor} to copy")
        if donor.checkpoint is None or donor.checkpoint not in pop.blobs:
            raise _Refused(
                f"member {donor.id} has no checkpoint yet (wait for its first ready point)"
            )
        copied = voc.Exploited(
            donor.id, donor.checkpoint_step, donor.checkpoint, m.step, voc.USER, request
        )
        self.host.commit([Event.of(copied, m.id, now)])
        self._requeue(m.id)
        return f"member {m.id} copied member {donor.id}"

    def _merge(self, config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with a person's ``changes``, checked against the space (a refusal names
        the parameter's range)."""
        space = self.host.controller.space
        try:
            return space.merge(config, changes)
        except (SpaceError, TypeError, ValueError) as e:
            ranges = []
            try:
                for path in space.flatten_partial(changes):
                    ranges.append(f"{path} is {describe_parameter(space[path].to_dict())}")
            except SpaceError:
                pass  # a key not in the space: the error names the keys
            hint = f" ({'; '.join(ranges)})" if ranges else ""
            raise _Refused(f"{e}{hint}") from None

    def _add(self, action: rq.Add, now: float, request: int | None) -> str:
        controller, pop = self.host.controller, self.host.pop
        configs = []
        for c in action.configs:
            try:
                configs.append(self._merge(controller.new_config(), c))
            except _Refused as e:
                raise _Refused(f"config {c!r}: {e}") from None
        first = max(pop.members, default=-1) + 1
        ids = list(range(first, first + len(configs)))
        self.host.commit(
            [
                Event.of(voc.MemberCreated(c, voc.USER, request), i, now)
                for i, c in zip(ids, configs, strict=True)
            ]
        )
        for i in ids:
            self.host.queue.append(i)
        return f"added members {ids}"

    def _budget(self, action: rq.SetBudget, now: float, request: int | None) -> str:
        h = self.host
        pop, controller = h.pop, h.controller
        budget = [budget_from_dict(b) for b in action.budget]  # parse checked each one
        old = tuple(pop.settings.get("budget") or [])
        controller.set_budget(budget)
        changed = voc.BudgetChanged(tuple(b.to_dict() for b in budget), old, voc.USER, request)
        h.commit([Event.of(changed, None, now)])  # revives members with steps
        finish, train = controller.after_budget_change(pop, h.inflight)
        for member in finish:
            h.finish(member, "step budget reached", now)
        for member in train:
            if member not in h.queue:
                h.queue.append(member)  # finished for lack of steps, and now has some
        return "budget changed"

    def _workers(self, action: rq.Workers, now: float, request: int | None) -> str:
        """Resize the backend: at most one worker per member (more would have nothing to
        train); intervals running on a surplus worker end as they would have."""
        h = self.host
        members = len(h.pop.members)
        workers = min(action.workers, max(members, 1))
        old = h.backend.capacity
        try:
            h.backend.resize(workers)
        except ValueError as e:  # the backend cannot (it says why)
            raise _Refused(str(e)) from None
        except (OSError, RuntimeError) as e:  # a new worker could not start: the run goes on
            raise _Refused(f"the backend could not start {workers} workers: {e}") from None
        changed = voc.WorkersChanged(workers, old, voc.USER, request)
        h.commit([Event.of(changed, None, now)])
        what = f"{workers} worker{'' if workers == 1 else 's'} (was {old})"
        if workers < action.workers:
            log.warning(
                "workers=%d asked for, but the population has %d member%s: %d workers",
                action.workers,
                members,
                "" if members == 1 else "s",
                workers,
            )
            what += (
                f"; {action.workers} asked for, but the population has {members} member"
                f"{'' if members == 1 else 's'} (one worker each at most)"
            )
        if workers < old and len(h.inflight) > workers:
            what += "; the intervals running now end first"
        return what

    def _requeue(self, member: int) -> None:
        """A member whose weights or progress a person changed: its place in the queue follows
        its new progress."""
        if member in self.host.queue:
            self.host.queue.append(member)
