"""A trainable for members of several processes (importable by worker processes).

:class:`GroupWalker` is the Walker of ``reliability_trainables`` run as the ranks of one job:
every step each rank publishes its state at a barrier and waits for the others (as a
collective would: a peer that is gone blocks it), and rank 0 checks that every rank holds the
same state and hyperparameters before it reports. Each rank appends what it saw to
``config['dir']/ranks.jsonl``. A fault can be injected once per run on rank 1: ``config['fault']``
is ``"kill"`` (SIGKILL to itself), ``"raise"`` or ``"hang"``, at model step ``config['at']``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import hyperpop as hp

_CALLS = [0]  # barriers this process has entered: the same sequence on every rank of a group


class GroupWalker(hp.Trainable):
    def setup(self, config):
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.group = os.environ.get("HYPERPOP_GROUP_ID", "")
        self.x, self.n = 0.0, 0
        self.apply(config)

    def apply(self, config):
        self.config = dict(config)
        self.lr = config["lr"]

    def _fault(self) -> None:
        c = self.config
        if self.rank != 1 or self.n != c.get("at") or not c.get("fault"):
            return
        try:  # once per run: the first rank 1 to get here
            fd = os.open(Path(c["dir"]) / "fault-done", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        if c["fault"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if c["fault"] == "raise":
            raise RuntimeError("rank 1 fails on purpose")
        threading.Event().wait()  # "hang": never returns

    def _barrier(self) -> list[dict]:
        """Publish this rank's state and wait for every rank's (this step, this group)."""
        folder = Path(self.config["dir"]) / f"barrier-{self.group}"
        folder.mkdir(exist_ok=True)
        _CALLS[0] += 1
        call = _CALLS[0]
        mine = {"x": self.x, "n": self.n, "lr": self.lr}
        tmp = folder / f".{call}-{self.rank}"
        tmp.write_text(json.dumps(mine))
        tmp.rename(folder / f"{call}-{self.rank}")
        names = [folder / f"{call}-{r}" for r in range(self.world)]
        while not all(p.exists() for p in names):
            time.sleep(0.002)
        return [json.loads(p.read_text()) for p in names]

    def train(self):
        self.n += 1
        self._fault()
        if self.config.get("sleep"):
            time.sleep(self.config["sleep"])
        self.x += self.lr
        seen = self._barrier() if self.world > 1 else [{"x": self.x, "n": self.n, "lr": self.lr}]
        with open(Path(self.config["dir"]) / "ranks.jsonl", "a") as f:
            record = {"rank": self.rank, "world": self.world, "group": self.group}
            f.write(json.dumps({**record, "pid": os.getpid(), "n": self.n, "lr": self.lr}) + "\n")
        if self.rank == 0 and any(s != seen[0] for s in seen):
            raise AssertionError(f"the ranks disagree: {seen}")
        return {
            "score": self.x,
            "x": self.x,
            "n": self.n,
            "lr_used": self.lr,
            "rank": self.rank,
            "world": self.world,
        }

    def save(self):
        return {"x": self.x, "n": self.n, "rank": self.rank}

    def load(self, state):
        self.x, self.n = state["x"], state["n"]
        assert state["rank"] == 0, "every rank loads rank 0's checkpoint"
