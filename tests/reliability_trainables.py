"""Trainables for the reliability and fault-injection tests (importable by worker processes)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import hyperpop as hp


class Walker(hp.Trainable):
    """``x`` grows by the lr it trains with; ``n`` counts its own steps.

    Both are in every report, so a test can check from the log alone that each member's state
    continues its own recorded history (``n`` equals the logged step, ``x`` adds ``lr_used``
    to the value recorded at the checkpoint it started from). ``config['sleep']`` slows steps.
    """

    def setup(self, config):
        self.x, self.n = 0.0, 0
        self.apply(config)

    def apply(self, config):
        self.lr = config["lr"]
        self.sleep = config.get("sleep", 0.0)

    def train(self):
        if self.sleep:
            time.sleep(self.sleep)
        self.x += self.lr
        self.n += 1
        return {"score": self.x, "x": self.x, "n": self.n, "lr_used": self.lr}

    def save(self):
        return {"x": self.x, "n": self.n}

    def load(self, state):
        self.x, self.n = state["x"], state["n"]


class Hangs(hp.Trainable):
    """A train() that never returns, as a deadlocked data loader would.

    The member tagged ``config['always']`` blocks at step ``config['at']`` on every attempt;
    the one tagged ``config['once']`` only on its first (counted in a file under
    ``config['dir']``, so it survives the worker being killed).
    """

    def setup(self, config):
        self.config, self.n, self.x = config, 0, 0.0

    def apply(self, config):
        self.config = config

    def train(self):
        self.n += 1
        c = self.config
        if self.n == c["at"]:
            marker = Path(c["dir"]) / f"hung-{c['tag']}"
            if c["tag"] == c["always"] or (c["tag"] == c["once"] and not marker.exists()):
                marker.write_text(str(os.getpid()))
                threading.Event().wait()  # never set: blocks forever
        self.x += c["lr"]
        return {"score": self.x}

    def save(self):
        return {"n": self.n, "x": self.x}

    def load(self, state):
        self.n, self.x = state["n"], state["x"]


class Blocks(hp.Trainable):
    """Writes ``config['flag']`` at its first step, then waits until ``config['release']``
    exists (for tests that need a driver to stay alive at a known point)."""

    def setup(self, config):
        self.config, self.n = config, 0

    def apply(self, config):
        self.config = config

    def train(self):
        self.n += 1
        Path(self.config["flag"]).write_text(str(os.getpid()))
        deadline = time.time() + 120
        while not Path(self.config["release"]).exists() and time.time() < deadline:
            time.sleep(0.02)
        return {"score": float(self.n)}

    def save(self):
        return self.n

    def load(self, state):
        self.n = state


class Clashing(hp.Trainable):
    """Reports metrics named like hyperpop's own columns (``step``, ``time``, ``score``,
    ``member``, a ``config/`` one) next to the optimised ``loss``."""

    def setup(self, config):
        self.n = 0

    def apply(self, config):
        pass

    def train(self):
        self.n += 1
        return {
            "loss": 1.0 / self.n,
            "step": 1000 + self.n,
            "time": f"epoch-{self.n}",
            "score": -self.n,
            "member": "mine",
            "config/lr": "not the config",
            "metric/step": "already prefixed",
        }

    def save(self):
        return self.n

    def load(self, state):
        self.n = state


class LeavesLitter(Walker):
    """A Walker that, at its step 2, drops what a worker killed at the wrong moment leaves in
    the checkpoint folder ``config['ckpt']``: a complete blob no event names, and a half-written
    one."""

    def train(self):
        out = super().train()
        if self.n == 2:
            root = Path(self.config_dir)
            (root / f"m9-s{os.getpid()}-orphan.ckpt").write_bytes(b"HYPERPOP-CKPT-1\n")
            (root / f".m9-s{os.getpid()}-half.ckpt.tmp").write_bytes(b"HYPER")
        return out

    def apply(self, config):
        super().apply(config)
        self.config_dir = config["ckpt"]
