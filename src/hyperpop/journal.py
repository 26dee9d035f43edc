"""The driver's transaction unit: events move to the fold, then to the store in one write, and
only after that write are the checkpoints they made unreachable deleted.

:class:`Journal` numbers and folds events and queues them; :meth:`Journal.flush` writes the
queue in one transaction, tells the callbacks, and collects the dead checkpoints that the
written log (:class:`WrittenRefs`, which may lag the fold) no longer names either.
"""

from __future__ import annotations

from hyperpop.backends.base import Backend
from hyperpop.callbacks import CallbackList
from hyperpop.checkpoints import CheckpointStore
from hyperpop.population import Population
from hyperpop.store import vocabulary as voc
from hyperpop.store.base import Store
from hyperpop.store.events import Event

__all__ = ["Journal", "WrittenRefs"]


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
            if e.member is None:  # a run-level event holds no checkpoint
                continue
            p = e.payload
            if isinstance(p, (voc.Checkpointed, voc.Exploited)):
                self._hold(e.member, p.checkpoint)
            elif isinstance(p, voc.Rejuvenated) and p.reset in (None, "full"):
                self._hold(e.member, None)

    def names(self, blob: str) -> bool:
        """Whether some member holds ``blob`` in the written log."""
        return blob in self.count


class Journal:
    """Moves one session's events into the fold and the store, in units.

    Args:
        store: where events are written.
        pop: the fold; events are folded in before they are written (never after).
        checkpoints: where dead checkpoints are deleted.
        backend: told of each deleted blob (``release``).
        callbacks: told of each write once :meth:`start` was called.
    """

    def __init__(
        self,
        store: Store,
        pop: Population,
        checkpoints: CheckpointStore,
        backend: Backend,
        callbacks: CallbackList,
    ):
        self.store, self.pop = store, pop
        self.checkpoints, self.backend = checkpoints, backend
        self.callbacks = callbacks
        #: events folded in but not yet written (written together by :meth:`flush`)
        self.pending: list[Event] = []
        #: what the written log names (set by :meth:`start`)
        self.written: WrittenRefs | None = None
        #: callbacks hear of events once the session has started (they see the run's opening
        #: events in the population they get at the start)
        self.started = False

    def start(self) -> None:
        """The session starts: from now on callbacks hear of each write, and the written log
        is followed (the fold and the log agree here, unless something is still queued)."""
        self.written = WrittenRefs(self.pop) if not self.pending else None
        self.started = True

    def commit(self, events: list[Event]) -> None:
        """Number events, queue them for the next write and fold them into the population
        (queued first: the fold never runs ahead of what will be written). The store checks
        that the numbers follow on from what it holds."""
        self.pending.extend(self.fold(events))

    def fold(self, events: list[Event]) -> list[Event]:
        """Number events after the last one folded, and fold them in (not queued: the caller
        queues a unit of folded events together with :meth:`queue`, or none of it if
        something raises)."""
        seq = self.pop.last_seq
        for e in events:
            seq += 1
            e.seq = seq
        self.pop.extend(events)
        return events

    def queue(self, events: list[Event]) -> None:
        """Queue events already folded (:meth:`fold`) for the next write."""
        self.pending.extend(events)

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
            if self.started:
                self.callbacks.on_events(events, self.pop)
        if not collect:
            return
        for blob in self.pop.drain_dead():
            if written is None or not written.names(blob):
                self.checkpoints.delete(blob)
                self.backend.release(blob)

    def collect_leftovers(self) -> None:
        """Delete the blobs the log does not name (saved by a worker killed before its result
        arrived, half-written files). Only once no worker writes any more and the end of the
        session is written: the fold and the log agree then."""
        keep = self.pop.live_checkpoints()
        if self.written is not None:
            keep |= set(self.written.count)
        self.checkpoints.collect(keep, temporaries=True)
