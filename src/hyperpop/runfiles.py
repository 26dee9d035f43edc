"""A stored run's files: the SQLite store, its writer lease, its checkpoints and its logs.

``runs/x.db`` keeps its checkpoints in ``runs/x.db-ckpt/``, members' output in
``runs/x.db-logs/`` and its writer lease in ``runs/x.db.lock``. A store written before each store
had its own checkpoint folder may still have blobs in ``runs/x.ckpt/`` (a folder ``x.db``,
``x.sqlite`` and ``x`` shared); that folder is only read, and never deleted here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hyperpop.checkpoints import checkpoint_dir_for, log_dir_for
from hyperpop.store.sqlite import WriterLock

__all__ = ["checkpoint_dir_for", "log_dir_for", "remove_run"]


def remove_run(path: str | os.PathLike[str], *, lock: WriterLock | None = None) -> None:
    """Delete a stored run: its SQLite file (with its WAL files), checkpoint folder and logs
    (an older layout's shared ``x.ckpt`` folder is left alone: it may hold another store's blobs).

    Deletes under the writer lease (the lock file ``<path>.lock`` stays), so a run that a live
    driver writes is never deleted and two removals (two ``--overwrite`` starts) never race.

    Args:
        path: the run's SQLite file.
        lock: the lease, already held by the caller, who keeps it (e.g. to create a new run
            there); by default it is taken and released here.

    Raises:
        StoreLockedError: a live driver is writing the run.
    """
    path = Path(path)
    held = lock if lock is not None else WriterLock(path).acquire()
    try:
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
        shutil.rmtree(checkpoint_dir_for(path), ignore_errors=True)
        shutil.rmtree(log_dir_for(path), ignore_errors=True)
    finally:
        if lock is None:
            held.release()
