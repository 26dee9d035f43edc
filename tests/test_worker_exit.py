"""The exit of a worker process and of the command line: quick, and what was left behind is
still finalized."""

from __future__ import annotations

import subprocess
import sys
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


def test_the_command_line_finalizes_what_is_left_and_runs_every_exit_handler(tmp_path):
    """The command line's last exit handler collects once and spares the interpreter's teardown
    the rest: a script's own exit handler still runs, and an object left in a cycle is still
    finalized."""
    code = (
        "import atexit, sys\n"
        "import hyperpop.cli\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_worker_exit import Marker\n"
        f"Marker({str(tmp_path / 'marker.txt')!r})\n"
        f"atexit.register(open({str(tmp_path / 'handler.txt')!r}, 'w').write, 'ran')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "marker.txt").read_text() == "finalized\n"
    assert (tmp_path / "handler.txt").read_text() == "ran"
