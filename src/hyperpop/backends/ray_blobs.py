"""How members' blobs travel between the Ray backend's driver side and its actors.

A blob an actor saved comes back through Ray's object store (the driver writes a durable copy
into the checkpoint folder, for resume, and keeps the object for the next actor that needs it)
or through shared storage (:mod:`hyperpop.backends.transfer`). A task's starting blob goes
to its actor by reference: nothing when the actor holds the member in memory, nothing when the
actor reads it from shared storage, else one object shared by every receiver of that blob.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

import ray

from hyperpop.backends.transfer import SharedStorage, Transfer
from hyperpop.checkpoints import CheckpointError, CheckpointStore

__all__ = ["RayBlobs"]

log = logging.getLogger("hyperpop")


class RayBlobs:
    """The driver's side of blob transfer for one run.

    Args:
        transfer: ``"object"``, ``"shared"`` or ``"auto"`` (see :class:`RayBackend`).
        shared_location: the shared storage (None: the run's checkpoint folder).
    """

    def __init__(self, transfer: Transfer, shared_location: str | None):
        self.transfer, self.shared_location = transfer, shared_location
        self.refs: dict[str, Any] = {}  # blob -> ObjectRef of its bytes (owned by the driver)
        self.checkpoints: CheckpointStore | None = None
        self.shared: SharedStorage | None = None
        self.shared_is_local = False
        self.probe: str | None = None
        #: blobs saved through each path ("object", "shared")
        self.saved: Counter[str] = Counter()
        #: starting blobs sent with a task through each path ("object", "shared"); "cached"
        #: counts tasks whose actor already held the member's state in memory
        self.sent: Counter[str] = Counter()

    def open(self, checkpoints: CheckpointStore) -> None:
        """A run starts with ``checkpoints`` as its durable copy (and shared storage, with a
        probe file that tells each actor whether it sees it)."""
        self.checkpoints = checkpoints
        if self.transfer != "object":
            location = self.shared_location or str(checkpoints.root.resolve())
            self.shared = SharedStorage(location)
            self.shared_is_local = not self.shared.is_url and os.path.realpath(
                self.shared._root
            ) == os.path.realpath(checkpoints.root)
            self.probe = self.shared.make_probe()

    @property
    def location(self) -> str | None:
        """The shared storage, if any."""
        return self.shared.location if self.shared else None

    def release(self, blob: str) -> None:
        """The driver collected ``blob``: free its object and its shared copy."""
        self.refs.pop(blob, None)
        if self.shared is not None and not self.shared_is_local:
            try:
                self.shared.delete(blob)
            except Exception as e:  # noqa: BLE001 - garbage left behind, not an error
                log.debug("cannot delete %s from %s: %s", blob, self.shared.location, e)

    def _in_shared(self, blob: str) -> bool:
        if self.shared is None:
            return False
        if self.shared_is_local:
            assert self.checkpoints is not None
            return self.checkpoints.exists(blob)
        try:
            return self.shared.exists(blob)
        except Exception:  # noqa: BLE001
            return False

    def data_for(self, blob: str | None, held: bool, sees_shared: bool) -> Any:
        """What to send with a task starting from ``blob``: None (none, held in the actor's
        memory, or read from shared storage) or an ObjectRef."""
        if blob is None:
            return None
        if held:
            self.sent["cached"] += 1
            return None
        ref = self.refs.get(blob)
        if ref is not None:
            self.sent["object"] += 1
            return ref
        if sees_shared and self._in_shared(blob):
            self.sent["shared"] += 1
            return None
        assert self.checkpoints is not None
        try:
            if self.checkpoints.exists(blob):
                data = self.checkpoints.read(blob)
            elif self.shared is not None:
                data = self.shared.read(blob)
            else:
                return None  # the worker reports the missing checkpoint
        except CheckpointError:
            return None
        ref = ray.put(data)
        self.refs[blob] = ref
        self.sent["object"] += 1
        return ref

    def saved_by_actor(self, blob: str | None, where: str, ref: Any) -> None:
        """An actor saved ``blob`` through ``where``: one through the object store (``ref``)
        gets its durable copy in the checkpoint folder now."""
        if where:
            self.saved[where] += 1
        if blob is not None and where == "object":
            data = ray.get(ref)
            assert self.checkpoints is not None
            self.checkpoints.write(blob, data)
            self.refs[blob] = ref

    def lost(self, blob: str | None) -> None:
        """The object holding ``blob`` may be lost (with its node): resend from the copy."""
        if blob is not None:
            self.refs.pop(blob, None)

    def close(self) -> None:
        """The run ended: drop the objects and the probe file."""
        self.refs.clear()
        if self.shared is not None and self.probe:
            self.shared.remove_probe(self.probe)
            self.probe = None
