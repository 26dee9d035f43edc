"""Remember: the append-only event log of a run."""

from hyperpop.store.events import Event
from hyperpop.store.sqlite import (
    SCHEMA_VERSION,
    MemoryStore,
    SQLiteStore,
    StoreError,
    StoreLockedError,
    StoreVersionError,
    open_store,
)

__all__ = [
    "SCHEMA_VERSION",
    "Event",
    "MemoryStore",
    "SQLiteStore",
    "StoreError",
    "StoreLockedError",
    "StoreVersionError",
    "open_store",
]
