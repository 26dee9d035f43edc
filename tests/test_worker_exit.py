"""A worker process's exit: what its members left behind is still finalized."""

from __future__ import annotations

from pathlib import Path

import hyperpop as hp


class Marker:
    """Writes its file when it is finalized."""

    def __init__(self, path: str):
        self.path = path
        self.cycle = self  # only a garbage collection, not reference counting, frees it

    def __del__(self):
        Path(self.path).write_text("finalized\n")


class Leaves(hp.Trainable):
    """Leaves a :class:`Marker` behind in a reference cycle."""

    def setup(self, config):
        self.path = config["path"]

    def apply(self, config):
        pass

    def train(self):
        Marker(self.path)
        return {"score": 1.0}

    def save(self):
        return None

    def load(self, state):
        pass


def test_an_object_a_member_left_in_a_cycle_is_finalized_when_its_worker_exits(tmp_path):
    """A worker that stops spares itself the interpreter's slow teardown collections but
    still collects what its members left (a finalizer that writes a file runs)."""
    path = tmp_path / "marker.txt"
    hp.run(
        Leaves,
        {"path": hp.choice([str(path)])},
        metric="score",
        population=1,
        workers=1,
        budget=hp.Steps(1),
        storage=None,
        seed=0,
    )
    assert path.read_text() == "finalized\n"
