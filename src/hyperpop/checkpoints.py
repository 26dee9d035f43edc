"""Checkpoints: immutable blobs of member state, referenced by id from the event log.

A blob is written once (atomically: a temporary file renamed into place) and never changed. An
exploit records a reference to the donor's blob instead of copying it; blobs that no member can
reach any more are collected by the driver.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cloudpickle

__all__ = [
    "BlobStore",
    "CheckpointError",
    "CheckpointStore",
    "StateStore",
    "check_blob_id",
    "write_atomic",
    "checkpoint_dir_for",
    "log_dir_for",
    "log_path_for",
    "decode",
    "encode",
    "new_blob_id",
]

_MAGIC = b"HYPERPOP-CKPT-1\n"
_SUFFIX = ".ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def checkpoint_dir_for(db_path: str | os.PathLike[str]) -> Path:
    """The folder beside ``runs/x.db`` that holds its checkpoints (``runs/x.ckpt``)."""
    p = Path(db_path)
    return p.with_name(p.name.rsplit(".", 1)[0] + _SUFFIX)


def log_dir_for(db_path: str | os.PathLike[str]) -> Path:
    """The folder beside ``runs/x.db`` that holds its members' logs (``runs/x.db-logs``)."""
    return Path(f"{os.fspath(db_path)}-logs")


def log_path_for(db_path: str | os.PathLike[str], member: int) -> Path:
    """Member ``member``'s log file (its stdout and stderr) of the run stored at ``db_path``."""
    return log_dir_for(db_path) / f"member-{int(member)}.log"


def new_blob_id(member: int, step: int) -> str:
    """A fresh, unique blob id for ``member``'s state at ``step``."""
    return f"m{member}-s{step}-{uuid.uuid4().hex[:10]}"


def encode(state: Any, member: int | None = None) -> bytes:
    """The bytes of a blob holding ``state`` (the format written to disk)."""
    try:
        data = cloudpickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        raise CheckpointError(
            f"member {member}: the state returned by save() cannot be pickled ({e}); return "
            "plain data such as state_dicts, arrays and numbers"
        ) from e
    return _MAGIC + data


def _torch_location(storage: Any, location: str) -> Any:
    """Where a pickled PyTorch storage goes: the device it was saved on if this process has
    it, else the current GPU for a GPU storage, else the CPU."""
    import torch

    try:
        return torch.serialization.default_restore_location(storage, location)
    except Exception:  # noqa: BLE001 - a device this process lacks (cuda:1 with one GPU, no GPU)
        if location.startswith("cuda") and torch.cuda.is_available():
            return storage.cuda()
        return storage


def _torch_storage(data: bytes) -> Any:
    """``torch.storage._load_from_bytes`` with a device map: a tensor saved on a GPU loads on
    a machine without one (on the CPU), or with fewer (on the current GPU)."""
    import torch

    buffer = io.BytesIO(data)
    try:
        return torch.load(buffer, weights_only=True, map_location=_torch_location)
    except Exception:  # noqa: BLE001 - a storage kind the safe loader refuses: torch's own
        from torch.storage import _load_from_bytes

        return _load_from_bytes(data)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            return _torch_storage
        return super().find_class(module, name)


def decode(raw: bytes, blob: str, where: object = "") -> Any:
    """The state held in a blob's bytes (from :func:`encode`). PyTorch tensors saved on a
    device this process lacks (a GPU state on a CPU-only machine) load on the CPU."""
    if not raw.startswith(_MAGIC):
        raise CheckpointError(f"checkpoint {blob!r} is corrupt: bad header ({where})")
    try:
        try:
            return pickle.loads(memoryview(raw)[len(_MAGIC) :])
        except Exception:
            if "torch" not in sys.modules:
                raise
            # maybe a tensor on a device this process lacks: again, mapping devices
            f = io.BytesIO(raw)
            f.seek(len(_MAGIC))
            return _Unpickler(f).load()
    except Exception as e:
        raise CheckpointError(f"checkpoint {blob!r} is corrupt ({where}): {e}") from None


def check_blob_id(blob: str) -> str:
    """``blob`` if it is a valid blob id (a file name: no separators, not hidden), else a
    :class:`CheckpointError`. Every blob store names its files ``<blob>.ckpt``."""
    if not blob or "/" in blob or os.sep in blob or blob.startswith("."):
        raise CheckpointError(f"invalid checkpoint id {blob!r}")
    return blob


def write_atomic(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing: a hidden temporary
    file beside it, synced to disk (unless ``fsync`` is False), then renamed into place
    (half-written temporaries are collected with ``temporaries=True``)."""
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)


class BlobStore(ABC):
    """Where checkpoint bytes live: a folder (:class:`CheckpointStore`) or shared storage seen
    by every node (:class:`~hyperpop.backends.transfer.SharedStorage`).

    Contract: a blob is written once, atomically (readers never see part of it), under an id
    that :func:`check_blob_id` accepts, and never changed; :meth:`read` of a missing blob
    raises :class:`CheckpointError`; :meth:`delete` of a missing blob does nothing.
    """

    @abstractmethod
    def write(self, blob: str, data: bytes) -> None:
        """Write a blob's bytes (from :func:`encode`) atomically under the id ``blob``."""

    @abstractmethod
    def read(self, blob: str) -> bytes:
        """A blob's bytes, as written."""

    @abstractmethod
    def exists(self, blob: str) -> bool:
        """Whether the blob is present."""

    @abstractmethod
    def delete(self, blob: str) -> None:
        """Remove a blob (no error if it is already gone)."""


class StateStore(ABC):
    """What a worker saves member states to and loads them from: the driver's
    :class:`CheckpointStore`, or a Ray actor's
    :class:`~hyperpop.backends.transfer.WorkerStore` (object store or shared storage)."""

    @abstractmethod
    def save(self, member: int, step: int, state: Any) -> str:
        """Write ``state`` as a new blob and return its id."""

    @abstractmethod
    def load(self, blob: str) -> Any:
        """The state held in ``blob``."""


class CheckpointStore(BlobStore, StateStore):
    """A folder of immutable checkpoint blobs.

    Args:
        root: the folder (created if missing). Workers write into it; the driver collects.
        fsync: sync each blob to disk before it is renamed into place (a blob the log names
            survives a power cut); False skips it where no crash is to be survived (the
            simulated backend). A killed process loses nothing either way.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def _path(self, blob: str) -> Path:
        return self.root / (check_blob_id(blob) + _SUFFIX)

    def path(self, blob: str) -> Path:
        """The file that holds ``blob``."""
        return self._path(blob)

    def save(self, member: int, step: int, state: Any) -> str:
        """Write ``state`` as a new blob and return its id."""
        blob = new_blob_id(member, step)
        self.write(blob, encode(state, member))
        return blob

    def write(self, blob: str, data: bytes) -> None:
        """Write a blob's bytes (from :func:`encode`) atomically under the id ``blob``."""
        write_atomic(self._path(blob), data, fsync=self.fsync)

    def read(self, blob: str) -> bytes:
        """A blob's bytes, as written."""
        path = self._path(blob)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {blob!r} is missing ({path})") from None

    def load(self, blob: str) -> Any:
        """Read a blob back."""
        return decode(self.read(blob), blob, self._path(blob))

    def exists(self, blob: str) -> bool:
        """Whether the blob is present."""
        return self._path(blob).exists()

    def blobs(self) -> set[str]:
        """Ids of every blob in the folder."""
        return {p.name[: -len(_SUFFIX)] for p in self.root.glob("*" + _SUFFIX)}

    def delete(self, blob: str) -> None:
        """Remove a blob (no error if it is already gone)."""
        self._path(blob).unlink(missing_ok=True)

    def collect(self, live: Iterable[str], *, temporaries: bool = False) -> list[str]:
        """Delete every blob not in ``live``; return the deleted ids.

        ``temporaries`` also removes half-written files: only when no worker is writing.
        """
        keep = set(live)
        dead = sorted(self.blobs() - keep)
        for blob in dead:
            self.delete(blob)
        if temporaries:
            for tmp in self.root.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        return dead
