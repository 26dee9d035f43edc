"""A member of N processes on Ray: the group of processes an actor runs on its own node.

With ``processes_per_member=N``, each actor reserves the resources of all N ranks (``num_cpus``
each, and the member's ``num_gpus``), so Ray places the whole member on one node, and runs the
interval on a :class:`~hyperpop.backends.process_group.ProcessGroup` there: the launcher the local
backend uses, with ``torchrun``'s environment, rank 0 reporting and saving, and one dead, hung or
failing rank failing the whole interval (the group is killed and started afresh for the next).

The ranks read and write blobs in a folder of the actor's own (they need not see the driver's
checkpoint folder): a task's starting blob is written there from the object Ray sent, the blob
rank 0 saves goes back to the driver through the object store, and the folder keeps only the
latest blob of each member the group holds, so a member that trains on here is sent nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from typing import Any

from hyperpop.backends.base import Task, TaskResult
from hyperpop.backends.process_group import ProcessGroup
from hyperpop.checkpoints import CheckpointStore

__all__ = ["RayGroup"]


class RayGroup:
    """The ranks of one actor's members (started at once, ready when this returns).

    Args:
        size: processes per member.
        factory_bytes: the trainable's factory, pickled.
        name: the actor's name (named in errors).
        cache_size: members each rank keeps in memory (None: no limit).
        threads: each rank's thread pools.
        dist_timeout: seconds a collective may wait for a peer (None: the launcher's default).
    """

    def __init__(
        self,
        size: int,
        factory_bytes: bytes,
        name: str,
        cache_size: int | None,
        threads: int,
        dist_timeout: float | None = None,
    ):
        self.root = tempfile.mkdtemp(prefix="hyperpop-ray-group-")
        self.store = CheckpointStore(self.root)
        init = {
            "factory": factory_bytes,
            "root": self.root,
            "name": name,
            "cache": cache_size,
            "threads": threads,
            "log_dir": None,
        }
        self.group = ProcessGroup(size, init, dist_timeout=dist_timeout, threads=threads)
        #: member -> its latest blob, in this folder (the driver sends nothing for it)
        self.held: dict[int, str] = {}
        try:
            self.group.start()
        except BaseException:
            self.close()
            raise

    def run(self, task: Task, data: bytes | None) -> tuple[TaskResult, bytes | None]:
        """Train one interval on the group; returns its result and the saved blob's bytes."""
        start = task.checkpoint
        if start is not None and data is not None and not self.store.exists(start):
            self.store.write(start, data)
        result = self.group.run(task)
        blob = result.checkpoint
        if result.error is not None or blob is None:
            return result, None
        previous = self.held.get(task.member)
        self.held[task.member] = blob
        self._drop({previous, start} - {None, blob})
        return result, self.store.read(blob)

    def forget(self, member: int) -> None:
        """Drop a member: its ranks' trainables and its blob here."""
        self.group.send(("forget", member))
        blob = self.held.pop(member, None)
        self._drop({blob} - {None})

    def _drop(self, blobs: set[Any]) -> None:
        """Delete blobs no member held here names any more."""
        for blob in blobs - set(self.held.values()):
            with contextlib.suppress(Exception):
                self.store.delete(blob)

    def close(self) -> None:
        """Stop the ranks and delete the folder."""
        self.group.stop()
        self.held.clear()
        shutil.rmtree(self.root, ignore_errors=True)
