"""Trainables used by the core's tests (importable by worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import hyperpop as hp


class Counter(hp.Trainable):
    """Score = sum of the lr it trained with; state = (total, steps, pid history)."""

    def setup(self, config):
        self.total = 0.0
        self.steps = 0
        self.lr = config["lr"]
        self.setups = 1

    def apply(self, config):
        self.lr = config["lr"]

    def train(self):
        self.total += self.lr
        self.steps += 1
        return {"score": self.total, "lr_used": self.lr, "pid": os.getpid(), "setups": self.setups}

    def save(self):
        return {"total": self.total, "steps": self.steps}

    def load(self, state):
        self.total = state["total"]
        self.steps = state["steps"]
        self.setups += 1


class OptimiserLike(hp.Trainable):
    """Carries its learning rate inside its saved state, like a torch optimiser's state_dict.

    A framework that restored the state after applying the explored config (ray#62173) would
    silently train with the donor's old lr; ``lr_used`` exposes which one trains.
    """

    def setup(self, config):
        self.w = 0.0
        self.opt = {"lr": config["lr"]}

    def apply(self, config):
        self.opt["lr"] = config["lr"]

    def train(self):
        self.w += self.opt["lr"]
        return {"score": self.w, "lr_used": self.opt["lr"]}

    def save(self):
        return {"w": self.w, "opt": dict(self.opt)}

    def load(self, state):
        self.w = state["w"]
        self.opt = dict(state["opt"])  # brings back the donor's lr: apply() must win


class Flaky(hp.Trainable):
    """Member 0 raises at every step ``fail_at`` it reaches, on its first ``failures`` tries.

    Failures are counted in files under ``config['dir']`` so they survive worker restarts.
    """

    def setup(self, config):
        self.config = config
        self.steps = 0
        self.x = 0.0

    def apply(self, config):
        self.config = config

    def train(self):
        self.steps += 1
        c = self.config
        if c["member_tag"] == 0 and self.steps == c["fail_at"]:
            marker = Path(c["dir"]) / "failures"
            n = int(marker.read_text()) if marker.exists() else 0
            if n < c["failures"]:
                marker.write_text(str(n + 1))
                if c.get("hard"):
                    os._exit(3)  # the worker process dies
                raise ValueError(f"boom at step {self.steps}")
        self.x += c["lr"]
        return {"score": self.x}

    def save(self):
        return {"steps": self.steps, "x": self.x}

    def load(self, state):
        self.steps, self.x = state["steps"], state["x"]


class SlowToy(hp.Trainable):
    """The paper's toy; blocks at a given member/step until a release file appears (for kill
    tests), but only while ``block_file`` does not exist yet."""

    def setup(self, config):
        import numpy as np

        self.np = np
        self.theta = np.array([0.9, 0.9])
        self.config = config
        self.apply(config)

    def apply(self, config):
        self.h = self.np.array([config["h0"], config["h1"]])
        self.config = config

    def train(self):
        self.theta = self.theta - 0.02 * self.h * self.theta
        step = getattr(self, "step", 0) + 1
        self.step = step
        block = self.config.get("block")
        if block and block["step"] == step and self.config.get("tag") == block["member"]:
            flag = Path(block["flag"])
            if not flag.exists():
                flag.write_text(str(os.getpid()))
                deadline = time.time() + 60
                while time.time() < deadline and not Path(block["release"]).exists():
                    time.sleep(0.05)
        return {"Q": 1.2 - float(self.np.sum(self.theta**2))}

    def save(self):
        return {"theta": self.theta.tolist(), "step": self.step}

    def load(self, state):
        self.theta = self.np.array(state["theta"])
        self.step = state["step"]


class Grow(hp.Trainable):
    """The score grows by the learning rate every step (issue 9's population-8 case)."""

    def setup(self, config):
        self.score, self.lr = 0.0, config["lr"]

    def train(self):
        self.score += self.lr
        return {"score": self.score}

    def save(self):
        return self.score

    def load(self, state):
        self.score = state

    def apply(self, config):
        self.lr = config["lr"]
