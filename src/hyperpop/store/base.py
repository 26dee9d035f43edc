"""The contract every event store keeps (:class:`~hyperpop.store.sqlite.SQLiteStore` on disk,
:class:`~hyperpop.store.sqlite.MemoryStore` for scratch runs and tests)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hyperpop.errors import StoreError
from hyperpop.store.events import Event
from hyperpop.store.requests import Request

__all__ = ["Store", "number"]


class Store(ABC):
    """An append-only event log, and a read of the requests people send to a running driver
    (they write those through :class:`~hyperpop.store.requests.RequestLog`, not the store).

    Contract:
        - One writer (the driver) appends; any number of readers read while it does.
        - :meth:`append` is atomic: every event of the call is written, or none is.
        - Sequence numbers start at 1 and have no gaps. An event that comes numbered (the
          driver numbers events before it folds them) must continue the log exactly, or the
          call raises :class:`~hyperpop.errors.StoreError` and writes nothing; an unnumbered
          one gets the next number.
        - :meth:`read` returns copies, in ``seq`` order; a reader never sees half an append.
    """

    #: the file behind the store, or None for one held in memory
    path: Path | None = None

    def writer(self) -> dict[str, Any] | None:
        """The driver holding the store's writer lease (``pid``, ``host``, ``since``: when it
        took it), or None when none holds one (or the store has no lease, as in memory)."""
        return None

    @abstractmethod
    def append(self, events: Sequence[Event]) -> list[Event]:
        """Append ``events`` atomically (see the contract); sets their ``seq``, and their
        ``time`` if unset. Returns them."""

    @abstractmethod
    def read(self, after: int = 0) -> list[Event]:
        """Events with ``seq > after``, in order."""

    @abstractmethod
    def read_requests(self, after: int = 0) -> list[Request]:
        """Requests with ``id > after``, in order."""

    @abstractmethod
    def close(self) -> None:
        """Release what the store holds (the writer lease, the connection)."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def number(events: Sequence[Event], last: int, where: object) -> float:
    """Check or assign the sequence numbers of ``events`` appended after ``last`` (the
    contract of :meth:`Store.append`), and return the time to give events that have none.

    Raises:
        StoreError: a numbered event does not continue the log.
    """
    for i, e in enumerate(events, start=last + 1):
        if e.seq is None:
            e.seq = i
        elif e.seq != i:
            raise StoreError(
                f"{where}: event {e.kind!r} is numbered {e.seq} but the log's next number is "
                f"{i}: two writers, or events folded out of order; nothing was written"
            )
    return time.time()
