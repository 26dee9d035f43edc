"""The run test_member_processes kills and resumes: two members of two processes each."""

from __future__ import annotations

import os

from group_trainables import GroupWalker

import hyperpop as hp

trainable = GroupWalker
space = {"lr": hp.uniform(0.1, 1.0), "dir": os.environ.get("GROUP_DIR", "."), "sleep": 0.05}
settings = dict(metric="score", population=2, workers=1, budget=hp.Steps(8), ready=2, seed=0)
