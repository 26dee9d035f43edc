"""Steer a running run from another process: stop it, pin, stop, edit or copy members, add
members, change the budget or the number of workers.

Each call appends a request to the run's store (:mod:`hyperpop.store.requests`); the driver reads
it within a second, acts, and records what it did in the event log. By default a call waits for
that answer and returns it::

    import hyperpop as hp

    s = hp.steer("runs/digits.db")
    s.pin(3)                    # member 3 is never exploited, reset or explored
    s.set(5, lr=0.01)           # member 5 trains on with lr=0.01 (its schedule says: by user)
    s.copy(2, donor=3)          # member 2 copies member 3's weights and hyperparameters now
    s.add(4)                    # four more members, sampled from the space
    s.budget(hp.Steps(400))     # train longer
    s.workers(4)                # train four members at once from now on
    s.stop()                    # stop the run (resume it later)
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperpop.criteria import Budget
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store import requests as rq
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import decode_data
from hyperpop.store.requests import Request, RequestLog
from hyperpop.store.sqlite import SQLiteStore, StoreError, WriterLock

__all__ = ["Answer", "Steer", "SteerError", "steer"]


class SteerError(StoreError):
    """A request could not be made (no live driver, a bad value) or was refused."""


@dataclass(frozen=True)
class Answer:
    """The driver's answer to a request.

    Attributes:
        id: the request's id.
        kind: what was asked (``stop``, ``pin``, ``set_config``, ``copy``, ``add``, ``budget``,
            ``workers``).
        status: ``done``, ``refused``, or ``pending`` (no answer yet when the wait ended).
        reason: what the driver did, or why not.
    """

    id: int
    kind: str
    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        """Whether the driver carried the request out."""
        return self.status == "done"


class Steer:
    """Requests to the driver of the run stored at ``db``.

    Args:
        db: the run's SQLite store.
        timeout: seconds each call waits for the driver's answer (None or 0: do not wait).
        origin: who asks (kept with the request).
    """

    def __init__(
        self, db: str | os.PathLike[str], *, timeout: float | None = 30.0, origin: str = "python"
    ):
        self.db = Path(db)
        self.timeout = timeout
        self.origin = origin
        self._space: Space | None = None

    # --- the requests ---------------------------------------------------------------------
    def stop(self, member: int | None = None, *, wait: bool = True) -> Answer:
        """Stop the run (``member=None``; resumable, like Ctrl-C) or one member (it finishes
        after its current interval; the others go on)."""
        return self.request(rq.STOP, member, {}, wait=wait)

    def pin(self, member: int, *, wait: bool = True) -> Answer:
        """Pin a member: it is never exploited, reset or explored (it may still be a donor)."""
        return self.request(rq.PIN, member, {"pinned": True}, wait=wait)

    def unpin(self, member: int, *, wait: bool = True) -> Answer:
        """Let PBT decide for a pinned member again."""
        return self.request(rq.PIN, member, {"pinned": False}, wait=wait)

    def set(
        self,
        member: int,
        config: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        **values: Any,
    ) -> Answer:
        """Set some of a member's hyperparameters (validated against the space); it trains with
        them from its next interval on, and its schedule records them ``by: user``."""
        if config is not None and not isinstance(config, Mapping):
            raise SteerError(f"set() takes a dict of hyperparameters, got {config!r}")
        changes = {**dict(config or {}), **values}
        if not changes:
            raise SteerError("set() needs the hyperparameters to change, e.g. set(3, lr=0.01)")
        self._space_of().flatten_partial(changes)  # a typo is refused here, naming the key
        return self.request(rq.SET_CONFIG, member, {"config": changes}, wait=wait)

    def copy(self, member: int, donor: int, *, wait: bool = True) -> Answer:
        """Make ``member`` copy ``donor``'s latest checkpoint and hyperparameters now."""
        return self.request(rq.COPY, member, {"donor": _integral(donor)}, wait=wait)

    def add(
        self,
        count: int = 1,
        *,
        configs: Sequence[Mapping[str, Any]] | None = None,
        wait: bool = True,
    ) -> Answer:
        """Add members to the running population: ``configs`` (partial configs are completed
        by sampling), or ``count`` members sampled from the space."""
        if configs is not None:
            if isinstance(configs, Mapping) or not all(isinstance(c, Mapping) for c in configs):
                raise SteerError(f"configs must be a list of dicts, got {configs!r}")
            data: dict[str, Any] = {"configs": [dict(c) for c in configs]}
            for c in data["configs"]:
                self._space_of().flatten_partial(c)
        else:
            data = {"count": _integral(count)}
        return self.request(rq.ADD, None, data, wait=wait)

    def budget(self, *budget: Any, wait: bool = True) -> Answer:
        """Replace the run's budget (``hp.Steps(n)``, ``hp.WallTime(s)``, ``hp.Target(score)``,
        any of them). Members that finished for lack of steps train on under a larger one."""
        # hp.Steps, hp.WallTime, hp.Target, or their dicts (anything else is refused, named)
        items = [b.to_dict() if isinstance(b, Budget) else b for b in budget]
        if not items:
            raise SteerError("budget() needs at least one of hp.Steps, hp.WallTime, hp.Target")
        return self.request(rq.BUDGET, None, {"budget": items}, wait=wait)

    def workers(self, workers: int, *, wait: bool = True) -> Answer:
        """Train ``workers`` members at once from now on (at most one per member). More
        workers start at once; with fewer, the intervals running end first. A resume starts
        with the last number asked for."""
        return self.request(rq.WORKERS, None, {"workers": _integral(workers)}, wait=wait)

    # --- the channel ----------------------------------------------------------------------
    def request(
        self,
        kind: str,
        member: int | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
    ) -> Answer:
        """Append a request and (with ``wait``) return the driver's answer.

        The request is checked first (:func:`hyperpop.store.requests.parse`, the rules the
        driver applies to every request it reads).

        Raises:
            SteerError: the request is malformed (nothing is written), no live driver writes
                the store, or the store takes no requests.
        """
        member = _integral(member)
        try:
            rq.parse(kind, member, {} if data is None else data)
        except rq.RequestError as e:
            raise SteerError(f"{e}") from None
        self._need_driver()
        req = Request(kind, member, dict(data or {}), origin=self.origin)
        after = _last_seq(self.db)  # the answer comes later in the log
        try:
            RequestLog(self.db).append(req)
        except (LookupError, OSError) as e:
            raise SteerError(str(e)) from None
        assert req.id is not None
        if not wait or not self.timeout:
            return Answer(req.id, kind, "pending", "sent; the driver reads it within a second")
        return self.answer(
            req.id, kind, timeout=self.timeout, stopping=kind == rq.STOP, after=after
        )

    def answer(
        self,
        request: int,
        kind: str = "",
        *,
        timeout: float = 30.0,
        stopping: bool = False,
        after: int = 0,
    ) -> Answer:
        """Wait up to ``timeout`` seconds for the answer to request ``request`` (written after
        event ``after``). With ``stopping``, a done stop of the run also waits for the driver
        to let go of the store (so that ``resume`` may follow at once)."""
        deadline = time.monotonic() + timeout
        lock = WriterLock(self.db)
        store = SQLiteStore(self.db)
        seen = after
        try:
            while True:
                for e in store.read(seen):
                    seen = e.seq or seen
                    answer = e.payload if e.kind == ev.REQUEST_HANDLED else None
                    if isinstance(answer, voc.RequestHandled) and answer.id == request:
                        a = Answer(
                            request, kind or answer.request_kind, answer.status, answer.reason
                        )
                        if stopping and a.ok and answer.member is None:
                            while lock.held() and time.monotonic() < deadline:
                                time.sleep(0.05)
                        return a
                if not lock.held():
                    return Answer(
                        request,
                        kind,
                        "pending",
                        "the driver stopped before it answered; the request is acted on when "
                        f"the run is resumed (hyperpop resume {self.db})"
                        + (" (a stop made then is dropped)" if kind == rq.STOP else ""),
                    )
                if time.monotonic() >= deadline:
                    return Answer(
                        request,
                        kind,
                        "pending",
                        f"no answer within {timeout:g}s: the request is in the store, and a "
                        "request for a member waits for its current interval to end",
                    )
                time.sleep(0.05)
        finally:
            store.close()

    def _need_driver(self) -> None:
        if not self.db.is_file():
            raise SteerError(f"no hyperpop store at {self.db} (check the path)")
        if not WriterLock(self.db).held():
            raise SteerError(
                f"no driver is writing {self.db}, so nobody would act on a request; "
                f"`hyperpop resume {self.db}` continues the run"
            )

    def _space_of(self) -> Space:
        if self._space is None:
            store = SQLiteStore(self.db)
            try:
                row = store._conn.execute(
                    "SELECT data FROM events WHERE kind=? ORDER BY seq LIMIT 1", (ev.RUN_STARTED,)
                ).fetchone()
            finally:
                store.close()
            if row is None:
                raise SteerError(f"{self.db} holds no run")
            self._space = Space.from_dict(decode_data(row[0]).get("space", {}))
        return self._space


def _integral(value: Any) -> Any:
    """A numpy or other integral number as an int; anything else as it is (to be refused by
    the request's check, naming it)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def _last_seq(db: Path) -> int:
    store = SQLiteStore(db)
    try:
        return int(store._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])
    finally:
        store.close()


def steer(db: str | os.PathLike[str], *, timeout: float | None = 30.0) -> Steer:
    """Requests to the driver of the run stored at ``db`` (see :class:`Steer`)."""
    return Steer(db, timeout=timeout)
