"""The run the fault-injection suite kills and resumes: a small, slowed-down Walker population."""

from __future__ import annotations

import os

from reliability_trainables import Walker

import hyperpop as hp

trainable = Walker
space = {"lr": hp.uniform(0.1, 1.0), "sleep": 0.015}
settings = dict(
    metric="score",
    population=4,
    workers=int(os.environ.get("FAULT_WORKERS", "2")),
    budget=hp.Steps(int(os.environ.get("FAULT_STEPS", "36"))),
    ready=3,
    synchronous=os.environ.get("FAULT_SYNC") == "1",
    seed=int(os.environ.get("FAULT_SEED", "0")),
)
