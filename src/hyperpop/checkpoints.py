"""Checkpoints: immutable blobs of member state, referenced by id from the event log.

A blob is written once (atomically: a temporary file renamed into place) and never changed. An
exploit records a reference to the donor's blob instead of copying it; blobs that no member can
reach any more are collected by the driver.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cloudpickle

__all__ = ["CheckpointError", "CheckpointStore", "checkpoint_dir_for"]

_MAGIC = b"HYPERPOP-CKPT-1\n"
_SUFFIX = ".ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read."""


def checkpoint_dir_for(db_path: str | os.PathLike[str]) -> Path:
    """The folder beside ``runs/x.db`` that holds its checkpoints (``runs/x.ckpt``)."""
    p = Path(db_path)
    return p.with_name(p.name.rsplit(".", 1)[0] + _SUFFIX)


class CheckpointStore:
    """A folder of immutable checkpoint blobs.

    Args:
        root: the folder (created if missing). Workers write into it; the driver collects.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, blob: str) -> Path:
        if not blob or "/" in blob or os.sep in blob or blob.startswith("."):
            raise CheckpointError(f"invalid checkpoint id {blob!r}")
        return self.root / (blob + _SUFFIX)

    def path(self, blob: str) -> Path:
        """The file that holds ``blob``."""
        return self._path(blob)

    def save(self, member: int, step: int, state: Any) -> str:
        """Write ``state`` as a new blob and return its id."""
        blob = f"m{member}-s{step}-{uuid.uuid4().hex[:10]}"
        path = self._path(blob)
        tmp = path.with_name("." + path.name + ".tmp")
        try:
            data = cloudpickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            raise CheckpointError(
                f"member {member}: the state returned by save() cannot be pickled ({e}); return "
                "plain data such as state_dicts, arrays and numbers"
            ) from e
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return blob

    def load(self, blob: str) -> Any:
        """Read a blob back."""
        path = self._path(blob)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {blob!r} is missing ({path})") from None
        if not raw.startswith(_MAGIC):
            raise CheckpointError(f"checkpoint {blob!r} is corrupt: bad header ({path})")
        try:
            return pickle.loads(raw[len(_MAGIC) :])
        except Exception as e:
            raise CheckpointError(f"checkpoint {blob!r} is corrupt ({path}): {e}") from None

    def exists(self, blob: str) -> bool:
        """Whether the blob is present."""
        return self._path(blob).exists()

    def blobs(self) -> set[str]:
        """Ids of every blob in the folder."""
        return {p.name[: -len(_SUFFIX)] for p in self.root.glob("*" + _SUFFIX)}

    def delete(self, blob: str) -> None:
        """Remove a blob (no error if it is already gone)."""
        try:
            self._path(blob).unlink()
        except FileNotFoundError:
            pass

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
