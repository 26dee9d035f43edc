"""TensorBoard: one run folder per member, hyperparameters as scalars, exploits as text."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from hyperpop.callbacks._tracker import RunInfo, Tracker, import_extra
from hyperpop.population import Population

__all__ = ["TensorBoard"]

#: the file in the log folder that says which run it holds and how far it is logged
MARK = "hyperpop.json"


class TensorBoard(Tracker):
    """Write a run to TensorBoard event files (with ``tensorboardX``; no TensorFlow, no torch).

    ``logdir/member-03/`` holds member 3: every metric it reports as a scalar at its step, each
    hyperparameter as a scalar ``hp/<name>`` at every report (a schedule shows as a step curve
    that changes at explores), and a text entry ``pbt`` at every exploit, explore,
    rejuvenation and failure ("member-03 copied member-05 at step 40; lr 0.01 -> 0.012").
    ``logdir/population/`` holds the same notes for the whole run in one place. After an
    exploit a member's steps go on from the donor's step (the age of the weights it now holds).

    Pass the same ``logdir`` to :func:`hyperpop.resume` to continue the same folders: the
    file ``logdir/hyperpop.json`` records how far the log is written there, so nothing is
    written twice; a fresh ``logdir`` is filled with the run's whole history first. A
    ``logdir`` that holds another run is refused.

    Args:
        logdir: the folder to point ``tensorboard --logdir`` at.
        flush_secs: how often the writers flush on their own (they also flush after every
            batch of events).

    Example:
        >>> hp.run(..., callbacks=[hp.callbacks.TensorBoard("runs/tb")])  # doctest: +SKIP
    """

    def __init__(self, logdir: str | os.PathLike[str], *, flush_secs: float = 10.0):
        super().__init__()
        self._tbx = import_extra("tensorboardX", "tensorboard", "hyperpop.callbacks.TensorBoard")
        self.logdir = Path(logdir)
        self.flush_secs = flush_secs
        self._writers: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"TensorBoard({str(self.logdir)!r})"

    def _writer(self, folder: str) -> Any:
        w = self._writers.get(folder)
        if w is None:
            # tensorboardX names a file by the second and the host: a writer reopened within
            # that second (a resume, a revived member) would truncate the earlier file, and
            # TensorBoard reads a folder's files in name order, so the suffix is the time in ns
            w = self._writers[folder] = self._tbx.SummaryWriter(
                str(self.logdir / folder),
                flush_secs=self.flush_secs,
                filename_suffix=f".{time.time_ns()}",
            )
        return w

    def _open(self, pop: Population, info: RunInfo) -> int:
        self._writers = {}
        mark = self.logdir / MARK
        if mark.exists():
            held = json.loads(mark.read_text())
            if held.get("run") != info.key:
                raise ValueError(
                    f"{self.logdir} holds the TensorBoard logs of another run "
                    f"({held.get('store') or held.get('run')}); give this run its own logdir"
                )
            return int(held.get("seq", 0))
        self.logdir.mkdir(parents=True, exist_ok=True)
        return 0

    def _member(self, member: int, config: dict[str, Any], t: float) -> None:
        lines = "\n".join(f"    {k} = {v!r}" for k, v in config.items())
        self._writer(self.info.member(member)).add_text(  # type: ignore[union-attr]
            "config", f"initial config:\n\n{lines}", 0, walltime=t
        )

    def _report(self, member: int, step: int, values: dict[str, float], t: float) -> None:
        w = self._writer(self.info.member(member))  # type: ignore[union-attr]
        for k, v in values.items():
            w.add_scalar(k, v, step, walltime=t)

    def _note(self, member: int | None, step: int, text: str, t: float) -> None:
        if member is not None:
            self._writer(self.info.member(member)).add_text(  # type: ignore[union-attr]
                "pbt", text, step, walltime=t
            )
        self._writer("population").add_text("pbt", text, step, walltime=t)

    def _member_end(self, member: int, status: str) -> None:
        if status != "running":  # a finished member's file is closed (reopened if revived)
            w = self._writers.pop(self.info.member(member), None)  # type: ignore[union-attr]
            if w is not None:
                w.close()

    def _commit(self, seq: int) -> None:
        for w in self._writers.values():
            w.flush()
        info = self.info
        assert info is not None
        held = {"run": info.key, "store": str(info.store) if info.store else None, "seq": seq}
        tmp = self.logdir / f".{MARK}.tmp"
        tmp.write_text(json.dumps(held))
        os.replace(tmp, self.logdir / MARK)

    def _close(self, pop: Population, reason: str) -> None:
        for w in self._writers.values():
            w.close()
        self._writers = {}
