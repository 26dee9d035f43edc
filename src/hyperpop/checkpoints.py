"""Checkpoints: immutable blobs of member state, referenced by id from the event log.

A blob is written once (atomically: a temporary file renamed into place) and never changed. An
exploit records a reference to the donor's blob instead of copying it; blobs that no member can
reach any more are collected by the driver.

Each store has a checkpoint folder of its own, named after the store's whole file name
(``runs/x.db`` → ``runs/x.db-ckpt``), and the folder holds a marker naming the run that owns it:
collection deletes nothing in a folder another run owns. Stores written before this layout kept
their blobs in ``runs/x.ckpt``, a folder that ``x.db``, ``x.sqlite`` and ``x`` shared; such a
folder is only read (a blob the store's own log names, looked up by its unique id), and a resume
moves the store's live blobs out of it into the store's own folder. It is never collected.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cloudpickle

from hyperpop.errors import StoreFullError

__all__ = [
    "BlobStore",
    "CheckpointError",
    "CheckpointFullError",
    "CheckpointStore",
    "StateStore",
    "check_blob_id",
    "write_atomic",
    "write_blob_file",
    "checkpoint_dir_for",
    "full_disk_error",
    "legacy_checkpoint_dir_for",
    "log_dir_for",
    "log_path_for",
    "decode",
    "encode",
    "new_blob_id",
]

log = logging.getLogger("hyperpop")

_MAGIC = b"HYPERPOP-CKPT-1\n"
_SUFFIX = ".ckpt"
#: a checkpoint folder's name: the store's whole file name and this
_DIR_SUFFIX = "-ckpt"
#: the file in a checkpoint folder that names the run owning it (its ``run_id``)
_OWNER = ".hyperpop-run"
#: the store in a message written where it is not known (the driver fills it in)
_NO_STORE = "DB"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


class CheckpointFullError(StoreFullError):
    """The disk that holds the checkpoint folder is full: no member can save its state."""


def checkpoint_dir_for(db_path: str | os.PathLike[str]) -> Path:
    """The folder beside ``runs/x.db`` that holds its checkpoints (``runs/x.db-ckpt``): named
    after the store's whole file name, like its ``-logs`` folder, so two stores never share
    one."""
    return Path(f"{os.fspath(db_path)}{_DIR_SUFFIX}")


def legacy_checkpoint_dir_for(db_path: str | os.PathLike[str]) -> Path | None:
    """The folder where hyperpop kept a store's checkpoints before each store had its own
    (``runs/x.ckpt`` for ``runs/x.db``, ``runs/x.sqlite`` and ``runs/x`` alike), if it is a
    folder no run has claimed; else None. Only read (see the module's docstring)."""
    p = Path(db_path)
    old = p.with_name(p.name.rsplit(".", 1)[0] + _SUFFIX)
    if old == p or not old.is_dir() or (old / _OWNER).exists():
        return None
    return old


def _store_of(root: Path) -> str:
    """The store whose checkpoint folder ``root`` is (for messages)."""
    name = root.name
    return (
        str(root.with_name(name[: -len(_DIR_SUFFIX)])) if name.endswith(_DIR_SUFFIX) else _NO_STORE
    )


def full_disk_error(
    error: str | None, *, store: str | os.PathLike[str] | None = None
) -> CheckpointFullError | None:
    """The :class:`CheckpointFullError` a worker's failure reports (the last line of the
    traceback it sent), or None for any other failure. ``store``: the run's store, named in
    the resume command where the writer could not know it (shared storage elsewhere)."""
    if not error:
        return None
    last = error.rstrip().rsplit("\n", 1)[-1]
    prefix = f"{CheckpointFullError.__module__}.{CheckpointFullError.__qualname__}: "
    if not last.startswith(prefix):
        return None
    message = last[len(prefix) :]
    if store is not None:
        message = message.replace(f"`hyperpop resume {_NO_STORE}`", f"`hyperpop resume {store}`")
    return CheckpointFullError(message)


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
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt blob
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
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def write_blob_file(
    path: str | os.PathLike[str], data: bytes, *, folder: str | os.PathLike[str], fsync: bool = True
) -> None:
    """:func:`write_atomic` for a blob of the checkpoint folder or of shared storage
    (``folder``): a full disk is one :class:`CheckpointFullError` whichever writes it.

    Raises:
        CheckpointFullError: the disk is full (nothing is left half-written).
    """
    try:
        write_atomic(path, data, fsync=fsync)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise CheckpointFullError(
            f"cannot write a checkpoint to {folder}: the disk is full ({e.strerror}); "
            f"every event recorded so far is kept: free some space, then `hyperpop resume "
            f"{_store_of(Path(folder))}` continues"
        ) from None


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
        root: the folder (created if missing, unless ``create`` is False). Workers write into
            it; the driver collects.
        fsync: sync each blob to disk before it is renamed into place (a blob the log names
            survives a power cut); False skips it where no crash is to be survived (the
            simulated backend). A killed process loses nothing either way.
        fallback: a folder read for a blob missing from ``root`` (a store's folder from before
            each store had its own: :func:`legacy_checkpoint_dir_for`); never written to or
            collected.
        create: create ``root`` (False for a reader).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fsync: bool = True,
        fallback: str | os.PathLike[str] | None = None,
        create: bool = True,
    ):
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.fallback = None if fallback is None else Path(fallback)
        #: the run this store was claimed for (:meth:`claim`); None: not claimed
        self.owner: str | None = None

    @classmethod
    def for_store(cls, db_path: str | os.PathLike[str], *, create: bool = True) -> CheckpointStore:
        """The checkpoints of the store at ``db_path``: its own folder, and the folder of an
        older layout to read from if there is one."""
        return cls(
            checkpoint_dir_for(db_path),
            fallback=legacy_checkpoint_dir_for(db_path),
            create=create,
        )

    def _owner(self) -> str | None:
        try:
            return (self.root / _OWNER).read_text().strip() or None
        except FileNotFoundError:
            return None

    def check(self, run_id: str, *, new: bool) -> str | None:
        """Whether the run ``run_id`` may use the folder (see :meth:`claim`), writing nothing;
        returns the run that owns it now, if any.

        Raises:
            CheckpointError: the folder holds blobs of another run.
        """
        owner = self._owner() if self.root.is_dir() else None
        if owner != run_id and (owner is not None or new) and self.root.is_dir() and self.blobs():
            whose = f"run {owner}" if owner else "no run this store knows"
            raise CheckpointError(
                f"{self.root} holds checkpoints of {whose}, not of this store's run {run_id} "
                "(a store moved or deleted without its folder?); move that folder away or "
                "choose another store path (nothing was deleted)"
            )
        return owner

    def claim(self, run_id: str, *, new: bool) -> None:
        """Tie the folder to the run ``run_id`` (a marker file in it), before anything is
        written or collected there.

        Args:
            run_id: the run the store holds.
            new: the run starts now (the store's log names no blob yet).

        Raises:
            CheckpointError: the folder holds blobs of another run (its store was moved or
                deleted, or the folder was copied here): nothing is deleted.
        """
        owner = self.check(run_id, new=new)
        if owner != run_id:
            write_atomic(self.root / _OWNER, run_id.encode(), fsync=self.fsync)
        self.owner = run_id

    def adopt(self, blobs: Iterable[str]) -> list[str]:
        """Move ``blobs`` (the store's live ones) from the fallback folder into this one, so
        the run goes on in its own folder; the fallback keeps everything else and is removed
        only once empty. Returns the moved ids."""
        if self.fallback is None:
            return []
        moved = []
        for blob in sorted(blobs):
            src = self.fallback / (check_blob_id(blob) + _SUFFIX)
            dst = self._path(blob)
            if not src.exists() or dst.exists():
                continue
            try:
                os.replace(src, dst)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                self.write(blob, src.read_bytes())  # the old folder is on another disk
                src.unlink()
            moved.append(blob)
        try:
            self.fallback.rmdir()
        except OSError:
            pass  # not empty: other stores' blobs, or blobs no log names
        return moved

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
        """Write a blob's bytes (from :func:`encode`) atomically under the id ``blob``.

        Raises:
            CheckpointFullError: the disk is full (nothing is left half-written).
        """
        write_blob_file(self._path(blob), data, folder=self.root, fsync=self.fsync)

    def read(self, blob: str) -> bytes:
        """A blob's bytes, as written."""
        path = self._path(blob)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            pass
        if self.fallback is not None:
            try:
                with open(self.fallback / path.name, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                pass
        raise CheckpointError(f"checkpoint {blob!r} is missing ({path})") from None

    def load(self, blob: str) -> Any:
        """Read a blob back."""
        return decode(self.read(blob), blob, self._path(blob))

    def exists(self, blob: str) -> bool:
        """Whether the blob is present."""
        path = self._path(blob)
        return path.exists() or (self.fallback is not None and (self.fallback / path.name).exists())

    def blobs(self) -> set[str]:
        """Ids of every blob in the folder."""
        return {p.name[: -len(_SUFFIX)] for p in self.root.glob("*" + _SUFFIX)}

    def delete(self, blob: str) -> None:
        """Remove a blob (no error if it is already gone)."""
        self._path(blob).unlink(missing_ok=True)

    def collect(self, live: Iterable[str], *, temporaries: bool = False) -> list[str]:
        """Delete every blob not in ``live``; return the deleted ids. Only in the store's own
        folder, and nothing when the folder is claimed by another run than this store's.

        ``temporaries`` also removes half-written files: only when no worker is writing.
        """
        if self.owner is not None and self._owner() != self.owner:
            log.warning(
                "not collecting %s: it is not marked as run %s's folder any more",
                self.root,
                self.owner,
            )
            return []
        keep = set(live)
        dead = sorted(self.blobs() - keep)
        for blob in dead:
            self.delete(blob)
        if temporaries:
            for tmp in self.root.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        return dead
