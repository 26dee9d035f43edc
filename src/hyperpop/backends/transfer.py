"""How member state moves between workers on different machines: object store or shared storage.

A worker that saves a member's state either hands the blob's bytes back through the cluster's
object store (``"object"``) or writes them to storage every node sees (``"shared"``: a folder on
a shared filesystem, or an fsspec URL such as ``s3://bucket/run``) and hands back only the id.
Either way a blob is immutable and referenced by id, so an exploit hands over a reference, never
a copy.

Every recorded blob must also be durable for ``resume``. Through the object store that costs the
driver a copy of the bytes (pulled and written beside its SQLite store); through shared storage
the worker's own write is the durable copy. ``"auto"`` picks per blob: blobs of at least
``threshold`` bytes go to shared storage when this worker sees it, smaller ones through the
object store. ``benchmarks/backends.py`` measured shared storage clearly faster for large states
(64 MB) and the two within milliseconds below 16 MB (docs/benchmarks.md, "Backends"), hence
:data:`DEFAULT_THRESHOLD`; the object store needs no shared mount.

Nothing here imports Ray: the same classes run in the driver and in the workers.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Literal

from hyperpop.checkpoints import (
    BlobStore,
    CheckpointError,
    StateStore,
    check_blob_id,
    decode,
    encode,
    new_blob_id,
    write_blob_file,
)

__all__ = ["DEFAULT_THRESHOLD", "SharedStorage", "Transfer", "WorkerStore"]

#: ``"auto"``, ``"object"`` or ``"shared"``
Transfer = Literal["auto", "object", "shared"]

#: under ``"auto"``, blobs of at least this many bytes go through shared storage (when the worker
#: sees it) and smaller ones through the object store: the crossover measured in
#: docs/benchmarks.md, "Backends"
DEFAULT_THRESHOLD = 32 * 2**20

_SUFFIX = ".ckpt"


class SharedStorage(BlobStore):
    """Blobs in a folder every node sees, or under an fsspec URL (``s3://...``, ``gs://...``).

    Files are named like a :class:`~hyperpop.checkpoints.CheckpointStore`'s (``<blob>.ckpt``), so
    the driver's checkpoint folder can itself be the shared storage.

    Args:
        location: a path, a ``file://`` URL, or any fsspec URL.
    """

    def __init__(self, location: str | os.PathLike[str]):
        self.location = str(location)
        self.is_url = "://" in self.location and not self.location.startswith("file://")
        if self.is_url:
            try:
                import fsspec
            except ImportError:
                raise ImportError(
                    f"shared storage at {self.location} needs fsspec and its protocol's package "
                    "(e.g. pip install s3fs)"
                ) from None
            self._fs, self._root = fsspec.core.url_to_fs(self.location)
        else:
            self._fs = None
            self._root = str(Path(self.location.removeprefix("file://")).resolve())

    def _path(self, name: str) -> str:
        return f"{self._root.rstrip('/')}/{name}"

    def _blob_path(self, blob: str) -> str:
        return self._path(check_blob_id(blob) + _SUFFIX)

    def write(self, blob: str, data: bytes) -> None:
        """Write a blob's bytes (atomically on a filesystem: a temporary file renamed).

        Raises:
            CheckpointFullError: the shared folder's disk is full (as for the run's own
                checkpoint folder: the run stops with one line, no member is blamed).
        """
        path = self._blob_path(blob)
        if self._fs is not None:  # object stores make an upload visible whole
            with self._fs.open(path, "wb") as f:
                f.write(data)
            return
        os.makedirs(self._root, exist_ok=True)
        write_blob_file(path, data, folder=self._root)

    def read(self, blob: str) -> bytes:
        """A blob's bytes."""
        path = self._blob_path(blob)
        try:
            if self._fs is not None:
                with self._fs.open(path, "rb") as f:
                    return f.read()
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {blob!r} is missing ({path})") from None

    def exists(self, blob: str) -> bool:
        """Whether the blob is present."""
        return self._exists(self._blob_path(blob))

    def _exists(self, path: str) -> bool:
        if self._fs is not None:
            return bool(self._fs.exists(path))
        return os.path.exists(path)

    def delete(self, blob: str) -> None:
        """Remove a blob (no error if it is already gone)."""
        self._remove(self._blob_path(blob))

    def _remove(self, path: str) -> None:
        try:
            if self._fs is not None:
                self._fs.rm(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass

    def make_probe(self) -> str:
        """Write a marker file and return its name; :meth:`sees` tells who can read it."""
        name = f".hyperpop-probe-{uuid.uuid4().hex[:12]}.tmp"
        path = self._path(name)
        if self._fs is not None:
            try:
                self._fs.makedirs(self._root, exist_ok=True)
            except Exception:  # noqa: BLE001 - object stores have no folders
                pass
            with self._fs.open(path, "wb") as f:
                f.write(b"probe")
        else:
            os.makedirs(self._root, exist_ok=True)
            Path(path).write_bytes(b"probe")
        return name

    def sees(self, probe: str) -> bool:
        """Whether this process sees the marker written by :meth:`make_probe`."""
        try:
            return self._exists(self._path(probe))
        except Exception:  # noqa: BLE001 - no credentials, no network: not visible
            return False

    def remove_probe(self, probe: str) -> None:
        """Remove a marker written by :meth:`make_probe`."""
        try:
            self._remove(self._path(probe))
        except Exception:  # noqa: BLE001
            pass


class WorkerStore(StateStore):
    """The checkpoint store a worker's :class:`~hyperpop.backends.worker.WorkerCore` uses.

    Saves go to shared storage or into :attr:`outgoing` (bytes the backend returns through the
    object store), by :attr:`transfer` and size; loads come from :attr:`incoming` (bytes the
    backend passed with the task) or from shared storage.

    Args:
        shared: the shared storage, if any.
        sees_shared: whether this worker can read and write it.
        transfer: ``"auto"``, ``"object"`` or ``"shared"``.
        threshold: under ``"auto"``, blobs of at least this many bytes go to shared storage.
    """

    def __init__(
        self,
        shared: SharedStorage | None,
        *,
        sees_shared: bool,
        transfer: Transfer = "auto",
        threshold: int = DEFAULT_THRESHOLD,
    ):
        self.shared = shared
        self.sees_shared = bool(shared is not None and sees_shared)
        self.transfer = transfer
        self.threshold = threshold
        self.incoming: dict[str, Any] = {}
        self.outgoing: dict[str, bytes] = {}
        self.written: dict[str, str] = {}  # blob -> "object" | "shared"

    def save(self, member: int, step: int, state: Any) -> str:
        """Encode ``state`` as a new blob; return its id."""
        blob = new_blob_id(member, step)
        data = encode(state, member)
        to_shared = self.sees_shared and (
            self.transfer == "shared" or (self.transfer == "auto" and len(data) >= self.threshold)
        )
        if to_shared:
            assert self.shared is not None
            self.shared.write(blob, data)
            self.written[blob] = "shared"
        else:
            self.outgoing[blob] = data
            self.written[blob] = "object"
        return blob

    def load(self, blob: str) -> Any:
        """The state held in ``blob``."""
        data = self.incoming.get(blob)
        if data is not None:
            return decode(data, blob, "object store")
        if self.shared is None or not self.sees_shared:
            raise CheckpointError(
                f"checkpoint {blob!r} was not sent to this worker and it sees no shared storage"
            )
        return decode(self.shared.read(blob), blob, self.shared.location)
