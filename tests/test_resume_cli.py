"""Resume and replay from the command line a run started from Python (issue 11, item 4).

Real driver processes killed mid-run, then ``hyperpop resume``/``replay`` as a user types them:
in a real interpreter for the first script, through click's runner in this process after that.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from in_process import hyperpop_in_process as _in_process

import hyperpop as hp
from hyperpop.store import events as ev
from hyperpop.store.sqlite import SQLiteStore, StoreError

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "hyperpop"]

# a class defined in the script itself (in __main__), the space only under the main guard:
# nothing a run file would define at module level
SCRIPT = """
import time
import hyperpop as hp


class Climber(hp.Trainable):
    def setup(self, config):
        self.x, self.lr = 0.0, config["lr"]

    def apply(self, config):
        self.lr = config["lr"]

    def train(self):
        time.sleep(0.02)
        self.x += self.lr
        return {"score": self.x}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


if __name__ == "__main__":
    hp.run(Climber, {"lr": hp.uniform(0.1, 1.0)}, metric="score", population=2, workers=1,
           budget=40, ready=4, storage=DB)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _reports(db: Path) -> int:
    try:
        store = SQLiteStore(db)
    except StoreError:
        return 0
    try:
        return sum(1 for e in store.read() if e.kind == ev.REPORTED)
    finally:
        store.close()


def _killed_midway(cmd: list[str], db: Path, cwd: Path) -> None:
    """Start a driver, wait for its first reports, kill it with SIGKILL."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    try:
        while _reports(db) < 4:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no reports in 90 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def _cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=180, cwd=cwd, env=_env()
    )


def test_a_script_run_resumes_and_replays_from_the_command_line(tmp_path):
    db = tmp_path / "script.db"
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT.replace("storage=DB", f"storage={str(db)!r}"))
    _killed_midway([sys.executable, str(script)], db, tmp_path)
    out = _cli("resume", db, "-q")
    assert out.returncode == 0, out.stderr
    assert all(m.step == 40 for m in hp.load(db).members)
    # replay names the class in the script; the script defines no `trainable = ...`
    out = _cli("replay", db, "--trainable", f"{script}:Climber", "--steps", 8)
    assert out.returncode == 0 and "replayed member" in out.stdout, out.stderr


def test_a_run_from_python_c_needs_trainable_and_the_error_says_what_to_pass(tmp_path):
    db = tmp_path / "c.db"
    code = (
        "import hyperpop as hp\n"
        "from reliability_trainables import Walker\n"
        "if __name__ == '__main__':\n"
        f"    hp.run(Walker, {{'lr': hp.uniform(0.1, 1.0), 'sleep': 0.02}}, metric='score',"
        f" population=2, workers=1, budget=40, ready=4, storage={str(db)!r})\n"
    )
    _killed_midway([sys.executable, "-c", code], db, tmp_path)
    # the store names the module, so a plain resume works; a wrong spec says what to pass
    out = _in_process("resume", db, "--trainable", "reliability_trainables", "-q")
    assert out.returncode == 1 and "FILE.py:Name or module:Name" in out.stderr
    out = _in_process("resume", db, "--trainable", "reliability_trainables:Nope", "-q")
    assert out.returncode == 1 and "defines no 'Nope'" in out.stderr
    out = _in_process("resume", db, "--trainable", "reliability_trainables:Walker", "-q")
    assert out.returncode == 0, out.stderr
    assert all(m.step == 40 for m in hp.load(db).members)


def test_a_run_from_stdin_resumes_with_trainable_from_the_script(tmp_path):
    """``python - < script.py`` leaves no file to import: resume says to pass --trainable,
    and importing the script for its class does not start the script's own run."""
    db = tmp_path / "stdin.db"
    script = tmp_path / "unguarded.py"
    body = SCRIPT.replace('if __name__ == "__main__":\n    ', "").replace("\n           ", " ")
    script.write_text(body.replace("storage=DB", f"storage={str(db)!r}"))
    with open(script) as f:
        proc = subprocess.Popen(
            [sys.executable, "-"],
            stdin=f,
            cwd=tmp_path,
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 90
        try:
            while _reports(db) < 4:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait()
    out = _in_process("resume", db, "-q")
    assert out.returncode == 1 and "--trainable" in out.stderr, out.stderr
    out = _in_process("resume", db, "--trainable", f"{script}:Climber", "-q")
    assert out.returncode == 0, out.stderr
    assert all(m.step == 40 for m in hp.load(db).members)
    # the script's own hp.run(...) (storage=the same db) never started: it would have refused
    # the path, and the log would say so
    assert [e.kind for e in hp.load(db).events].count("run_started") == 1
