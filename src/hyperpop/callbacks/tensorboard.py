"""TensorBoard: one run folder per member, hyperparameters as scalars, exploits as text."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hyperpop.callbacks._tracker import RunInfo, Tracker, import_extra
from hyperpop.population import Population

__all__ = ["TensorBoard"]

#: the file in the log folder that says which run it holds and how far it is logged
MARK = "hyperpop.json"


class _EventFile:
    """One TensorBoard event file, written in the TFRecord framing (length, its CRC, the
    serialised ``Event``, its CRC), appended to by one process, no thread of its own."""

    def __init__(self, folder: Path, crc: Any, event: Any):
        folder.mkdir(parents=True, exist_ok=True)
        self._crc = crc
        # TensorBoard reads a folder's files in name order: the time in ns keeps a file written
        # after a resume (or within the same second) after the earlier ones
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{time.time_ns()}"
        self.path = folder / name
        self._file = open(self.path, "ab")  # kept open between batches
        self.write(event(wall_time=now, file_version="brain.Event:2"))

    def reopen(self) -> None:
        if self._file.closed:
            self._file = open(self.path, "ab")

    def write(self, event: Any) -> None:
        self.reopen()
        data = event.SerializeToString()
        head = struct.pack("<Q", len(data))
        crc = self._crc
        self._file.write(head + struct.pack("<I", crc(head)) + data + struct.pack("<I", crc(data)))

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()  # to the OS: what a killed process wrote survives it

    def close(self) -> None:
        self._file.close()


class TensorBoard(Tracker):
    """Write a run to TensorBoard event files (with ``tensorboardX``'s protocol buffers; no
    TensorFlow needed).

    ``logdir/member-03/`` holds member 3: every metric it reports as a scalar at its step, each
    hyperparameter as a scalar ``hp/<name>`` at every report (a schedule shows as a step curve
    that changes at explores), its initial config as text ``config``, and a text entry ``pbt``
    at every exploit, explore, rejuvenation and failure ("member-03 copied member-05 at step
    40; lr 0.01 -> 0.012"). ``logdir/population/`` holds the same notes for the whole run in
    one place. After an exploit a member's steps go on from the donor's step (the age of the
    weights it now holds).

    Pass the same ``logdir`` to :func:`hyperpop.resume` to continue the same folders: the
    file ``logdir/hyperpop.json`` records how far the log is written there, so nothing is
    written twice; a fresh ``logdir`` is filled with the run's whole history first. A
    ``logdir`` that holds another run is refused.

    Args:
        logdir: the folder to point ``tensorboard --logdir`` at.
        max_open: event files kept open at once (a larger population's files are closed and
            reopened as their members report).

    Example:
        >>> hp.run(..., callbacks=[hp.callbacks.TensorBoard("runs/tb")])  # doctest: +SKIP
    """

    def __init__(self, logdir: str | os.PathLike[str], *, max_open: int = 128):
        super().__init__()
        what = "hyperpop.callbacks.TensorBoard"
        self._crc = import_extra("tensorboardX.record_writer", "tensorboard", what).masked_crc32c
        self._Event = import_extra("tensorboardX.proto.event_pb2", "tensorboard", what).Event
        self._Summary = import_extra("tensorboardX.proto.summary_pb2", "tensorboard", what).Summary
        self._text_summary = import_extra("tensorboardX.summary", "tensorboard", what).text
        self.logdir = Path(logdir)
        self.max_open = max(1, max_open)
        self._files: dict[str, _EventFile] = {}
        #: files open now, least recently written first
        self._open_files: OrderedDict[str, _EventFile] = OrderedDict()
        self._dirty: set[str] = set()

    def __repr__(self) -> str:
        return f"TensorBoard({str(self.logdir)!r})"

    def _write(self, folder: str, step: int, summary: Any, t: float) -> None:
        f = self._files.get(folder)
        if f is None:
            f = self._files[folder] = _EventFile(self.logdir / folder, self._crc, self._Event)
        f.write(self._Event(wall_time=t, step=step, summary=summary))
        self._dirty.add(folder)
        self._open_files[folder] = f
        self._open_files.move_to_end(folder)
        while len(self._open_files) > self.max_open:
            _, oldest = self._open_files.popitem(last=False)
            oldest.close()

    def _text(self, folder: str, tag: str, step: int, text: str, t: float) -> None:
        self._write(folder, step, self._text_summary(tag, text), t)

    def _open(self, pop: Population, info: RunInfo) -> int:
        self._files, self._open_files, self._dirty = {}, OrderedDict(), set()
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
        self._text(self._name(member), "config", 0, f"initial config:\n\n{lines}", t)

    def _report(self, member: int, step: int, values: dict[str, float], t: float) -> None:
        value = self._Summary.Value
        summary = self._Summary(value=[value(tag=k, simple_value=v) for k, v in values.items()])
        self._write(self._name(member), step, summary, t)

    def _note(self, member: int | None, step: int, text: str, t: float) -> None:
        if member is not None:
            self._text(self._name(member), "pbt", step, text, t)
        self._text("population", "pbt", step, text, t)

    def _member_end(self, member: int, status: str) -> None:
        if status != "running":  # a finished member's file is closed (reopened if revived)
            f = self._open_files.pop(self._name(member), None)
            if f is not None:
                f.close()

    def _commit(self, seq: int) -> None:
        for folder in self._dirty:
            self._files[folder].flush()
        self._dirty = set()
        info = self.info
        assert info is not None
        held = {"run": info.key, "store": str(info.store) if info.store else None, "seq": seq}
        tmp = self.logdir / f".{MARK}.tmp"
        tmp.write_text(json.dumps(held))
        os.replace(tmp, self.logdir / MARK)

    def _close(self, pop: Population, reason: str) -> None:
        for f in self._files.values():
            f.close()
        self._files, self._open_files = {}, OrderedDict()
