"""A run file for the kill -9 test: the toy, synchronous, blocking once mid-run."""

from __future__ import annotations

import os

from core_trainables import SlowToy

import hyperpop as hp

trainable = SlowToy
space = {
    "h0": hp.uniform(0.0, 1.0),
    "h1": hp.uniform(0.0, 1.0),
    "tag": 0,
    "block": {
        "member": 0,
        "step": int(os.environ.get("BLOCK_STEP", "13")),
        "flag": os.environ["BLOCK_FLAG"],
        "release": os.environ["BLOCK_RELEASE"],
    },
}
settings = dict(
    metric="Q",
    population=4,
    workers=2,
    budget=hp.Steps(24),
    ready=4,
    synchronous=True,
    seed=0,
)
