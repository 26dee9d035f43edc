"""What the written log names: the checkpoint each member holds according to the events the
store has (not the fold, which may be ahead of it)."""

from __future__ import annotations

from hyperpop.population import Population
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event

__all__ = ["WrittenRefs"]


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
