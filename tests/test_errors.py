"""Bad input and hostile conditions (issue 10, items 6-13): each refused or survived with one
clear line that names the problem and the fix, and nothing recorded lost."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import hyperpop as hp
from hyperpop.cli import main
from hyperpop.space import Space, SpaceError
from hyperpop.store import events as ev
from hyperpop.store.events import Event, decode_data, encode_data
from hyperpop.store.sqlite import SQLiteStore, StoreError

ROOT = Path(__file__).resolve().parents[1]


def hyperpop(*args, cwd=None, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "hyperpop", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def cli(*args: object) -> Result:
    """``hyperpop ARGS`` in this process (click's runner): what a user sees, in milliseconds
    (:func:`hyperpop` starts a real interpreter where that is the point)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(out: subprocess.CompletedProcess | Result) -> str:
    """The CLI failed with exactly one line on stderr and no traceback; returns that line."""
    if isinstance(out, Result):
        assert out.exit_code != 0, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit), out.exc_info
        code, stdout, stderr = out.exit_code, out.stdout, out.stderr
    else:
        code, stdout, stderr = out.returncode, out.stdout, out.stderr
    assert code != 0, stdout
    assert "Traceback" not in stderr, stderr
    lines = [x for x in stderr.splitlines() if x.strip()]
    # the run's banner and its progress log (-q) are not errors
    lines = [x for x in lines if not x.startswith("hyperpop: running ") and " INFO " not in x]
    assert len(lines) == 1, stderr
    return lines[0]


class Shaped(hp.Trainable):
    """Fails unless its config holds the exact tuple it was given (as a model would)."""

    def setup(self, config):
        self.total = 0.0
        self.apply(config)

    def apply(self, config):
        if not isinstance(config["kernel"], tuple) or config["kernel"] not in ((3, 3), (5, 5)):
            raise TypeError(f"kernel must be a tuple, got {config['kernel']!r}")
        self.lr = config["lr"]

    def train(self):
        self.total += self.lr
        return {"score": self.total}

    def save(self):
        return self.total

    def load(self, state):
        self.total = state


# --- 6. choice values that JSON cannot round-trip -----------------------------------------


def test_tuple_choices_come_back_exact_after_resume(tmp_path):
    db = tmp_path / "r.db"
    space = {"kernel": hp.choice([(3, 3), (5, 5)]), "lr": hp.uniform(0.1, 1.0)}
    seen = []

    def stop_midway(pop):
        seen.append(1)
        if sum(m.step for m in pop.members.values()) >= 8:
            raise KeyboardInterrupt

    kw = dict(metric="score", population=4, workers=1, budget=hp.Steps(8), ready=2, seed=3)
    kw["backend"] = "simulated"  # the log's round trip is the point, not the worker
    with pytest.raises(KeyboardInterrupt):
        hp.run(Shaped, space, storage=db, progress=stop_midway, **kw)
    res = hp.resume(db, Shaped)
    assert [e for e in res.events if e.kind == "failed"] == []
    assert all(m.step == 8 for m in res.members)
    for m in hp.Result.load(db).members:
        assert isinstance(m.config["kernel"], tuple)
    explored = [e for e in res.events if e.kind == "explored"]
    assert explored and all(isinstance(e.data["config"]["kernel"], tuple) for e in explored)


def test_a_tuple_survives_the_log_and_a_list_stays_a_list():
    data = {"config": {"k": (3, (1, 2)), "l": [1, 2], "d": {"t": ()}}, "x": math.inf}
    back = decode_data(encode_data(data))
    assert back == data and isinstance(back["config"]["k"], tuple)
    assert isinstance(back["config"]["k"][1], tuple) and isinstance(back["config"]["l"], list)
    assert isinstance(back["config"]["d"]["t"], tuple)
    space = Space({"k": hp.choice([(3, 3), (5, 5)]), "c": hp.choice([[1], {"a": (1,)}])})
    again = Space.from_dict(decode_data(encode_data({"s": space.to_dict()}))["s"])
    assert again["k"].options == ((3, 3), (5, 5)) and again["c"].options == ([1], {"a": (1,)})


@pytest.mark.parametrize(
    "options",
    [[int, float], [np.zeros(2), np.ones(2)], [object()], [lambda x: x], [{1, 2}], [math.nan]],
)
def test_choices_that_cannot_be_stored_are_refused_when_defined(options):
    with pytest.raises(SpaceError, match="cannot be stored in the run's log.*choice\\(\\['adam'"):
        hp.choice(options)
    from hyperpop.space import Choice

    with pytest.raises(SpaceError, match="parameter 'opt': option .* cannot be stored"):
        Space({"opt": Choice(tuple(options))})


def test_numpy_options_become_plain_values():
    p = hp.choice([np.int64(16), np.float32(0.5), np.str_("a")])
    assert p.options == (16, 0.5, "a") and type(p.options[0]) is int


# --- 11. unknown keys in initial configs --------------------------------------------------


def test_a_typo_in_an_initial_config_is_refused_naming_the_key(tmp_path):
    db = tmp_path / "r.db"
    space = {"lr": hp.uniform(0.1, 1.0), "opt": {"momentum": hp.uniform(0.0, 0.9)}}
    for bad, key in (({"lrr": 0.5}, "'lrr'"), ({"opt": {"momentun": 0.5}}, "'opt/momentun'")):
        with pytest.raises(SpaceError, match=f"{key} is not in the search space") as info:
            hp.run(Shaped, space, metric="score", configs=[bad], storage=db)
        assert "'lr', 'opt/momentum'" in str(info.value)
        assert not db.exists()


def test_initial_configs_may_be_partial_nested_or_whole_dict_options():
    from hyperpop.run import _initial_configs

    space = Space(
        {
            "lr": hp.uniform(0.1, 1.0),
            "opt": {"momentum": hp.uniform(0.0, 0.9), "name": "sgd"},
            "arch": hp.choice([{"depth": 2}, {"depth": 4}]),
        }
    )
    cfgs = _initial_configs(
        space, 3, [{"lr": 0.5}, {"opt": {"momentum": 0.25}}, {"arch": {"depth": 4}}], 0
    )
    assert cfgs[0]["lr"] == 0.5 and cfgs[1]["opt"] == {"momentum": 0.25, "name": "sgd"}
    assert cfgs[2]["arch"] == {"depth": 4}


# --- 12. ranges as wide as the floats allow -----------------------------------------------


def test_the_widest_uniform_range_samples_over_the_whole_range():
    p = hp.uniform(-1e308, 1e308)
    Space({"x": p})  # valid
    rng = np.random.default_rng(0)
    xs = np.array([p.sample(rng) for _ in range(2000)])
    assert np.all(np.isfinite(xs)) and np.all((xs >= -1e308) & (xs <= 1e308))
    assert (xs < 0).mean() == pytest.approx(0.5, abs=0.05)
    assert np.quantile(xs, 0.25) == pytest.approx(-5e307, rel=0.15)
    assert len(set(xs.tolist())) == len(xs)
    assert p.to_unit(0.0) == pytest.approx(0.5) and p.to_unit(5e307) == pytest.approx(0.75)
    assert p.from_unit(0.25) == pytest.approx(-5e307) and p.from_unit(0.5) == pytest.approx(0.0)
    moved = p.perturb(0.0, 1.2, rng)
    assert moved == pytest.approx(4e307) and p.perturb(0.0, 0.8, rng) == pytest.approx(-4e307)
    assert p.perturb(9e307, 1.2, rng) == 1e308  # clipped at the bound, never inf


# --- 9. resume on a mistyped path ---------------------------------------------------------


def test_resume_on_a_mistyped_path_refuses_without_writing(tmp_path):
    missing = tmp_path / "typo" / "toy.db"
    out = hyperpop("resume", missing)
    line = one_line_error(out)
    assert "no hyperpop store" in line and "check the path" in line
    assert not (tmp_path / "typo").exists()
    with pytest.raises(StoreError, match="no hyperpop store"):
        hp.resume(missing)
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="not a hyperpop store"):
        hp.resume(empty)
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


# --- 10. bad settings on the command line: one line each ----------------------------------

JOB = """
import hyperpop as hp


class Job(hp.Trainable):
    def setup(self, config):
        self.x = 0.0

    def apply(self, config):
        pass

    def train(self):
        self.x += 1.0
        return {{"score": self.x}}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


trainable = Job
space = {{"lr": hp.uniform(0.1, 1.0)}}
settings = dict(metric="score", population=2, workers=1, {extra})
"""


def job(tmp_path, extra=""):
    f = tmp_path / "job.py"
    f.write_text(JOB.format(extra=extra if "budget" in extra else f"budget=2, {extra}"))
    return f


@pytest.mark.parametrize(
    "extra, args, expect",
    [
        ("", ["-p", "0"], "population must be a positive int"),
        ("", ["-w", "0"], "workers must be a positive int"),
        ("mode='maximize'", [], "mode must be 'max' or 'min', got 'maximize'"),
        ("ready=-1", [], "must be a positive int, got -1"),
        ("exploit='truncate'", [], "unknown exploit strategy 'truncate'"),
        ("explore='perturbb'", [], "unknown explore strategy 'perturbb'"),
        ("backend='rey'", [], "unknown backend 'rey'"),
        ("ready='often'", [], "ready must be an int (steps) or hp.Ready"),
        ("budget=[10]", [], "budget entries must be hp.Steps"),
    ],
)
def test_bad_settings_are_one_line_on_the_command_line(tmp_path, extra, args, expect):
    db = tmp_path / "r.db"
    line = one_line_error(cli("run", job(tmp_path, extra), "-s", db, "-q", *args))
    assert expect in line
    assert not db.exists() and not (tmp_path / "r.db-ckpt").exists()


def test_workers_zero_is_refused_in_python_too():
    with pytest.raises(ValueError, match="workers must be a positive int.*got 0"):
        hp.run(Shaped, {"lr": hp.uniform(0.1, 1.0)}, metric="score", workers=0)


def test_a_stored_run_tells_cli_users_about_overwrite(tmp_path):
    db = tmp_path / "r.db"
    f = job(tmp_path)
    assert cli("run", f, "-s", db, "-q").exit_code == 0
    line = one_line_error(cli("run", f, "-s", db, "-q"))
    assert "already holds a run" in line and "--overwrite" in line
    assert "overwrite=True" not in line and f"hyperpop resume {db}" in line
    with pytest.raises(StoreError, match="overwrite=True"):
        hp.run(Shaped, {"lr": hp.uniform(0.1, 1.0)}, metric="score", storage=db)


def test_best_before_any_report_is_one_line(tmp_path):
    db = tmp_path / "r.db"
    store = SQLiteStore(db, write=True)
    store.append(
        [
            Event(ev.RUN_STARTED, None, {"settings": {"metric": "score", "mode": "max"}}),
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 0.5}}),
        ]
    )
    store.close()
    for cmd in (["best"], ["schedule"], ["best", "--format", "csv"]):
        line = one_line_error(cli(*cmd, db))
        assert "no member has reported" in line and f"hyperpop status {db}" in line


# --- 13. a script without the main guard ---------------------------------------------------

NO_GUARD = """
import hyperpop as hp


class Job(hp.Trainable):
    def setup(self, config):
        self.x = 0.0

    def apply(self, config):
        pass

    def train(self):
        self.x += 1.0
        return {"score": self.x}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


hp.run(Job, {"lr": hp.uniform(0.1, 1.0)}, metric="score", population=2, workers=1,
       budget=2, storage="r.db", overwrite=True)
"""


def test_a_script_without_the_main_guard_runs(tmp_path):
    """Workers are fresh interpreters that get the trainable by value: they never import the
    script, so a script (or ``python -c``, or ``python - < file``) needs no main guard."""
    script = tmp_path / "noguard.py"
    script.write_text(NO_GUARD)
    ways = {
        "script": dict(args=[str(script)]),
        "stdin": dict(args=["-"], input=NO_GUARD),
        "-c": dict(args=["-c", NO_GUARD]),
    }
    for way, how in ways.items():
        out = subprocess.run(
            [sys.executable, *how["args"]],
            input=how.get("input"),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert out.returncode == 0, f"{way}:\n{out.stderr}"
        assert "Traceback" not in out.stderr, way
        result = hp.Result.load(tmp_path / "r.db")
        assert result.summary()["status"] == "finished", way
        assert [m.step for m in result.members] == [2, 2], way


# --- 7. a full disk -----------------------------------------------------------------------


def _fill(store: SQLiteStore) -> None:
    """Make the database full where it stands: SQLite's own SQLITE_FULL from now on."""
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count={pages}").fetchone()


def test_a_full_disk_says_so_and_keeps_what_was_recorded(tmp_path):
    db = tmp_path / "r.db"
    store = SQLiteStore(db, write=True)
    store.append([Event(ev.RUN_STARTED, None, {"settings": {}})])
    _fill(store)
    big = [Event(ev.REPORTED, 0, {"step": i, "pad": "x" * 4000}) for i in range(50)]
    with pytest.raises(StoreError) as info:
        store.append(big)
    msg = str(info.value)
    assert "disk is full" in msg and f"hyperpop resume {db}" in msg
    assert "cannot rollback" not in msg and "\n" not in msg
    assert [e.kind for e in store.read()] == [ev.RUN_STARTED]  # nothing half-written
    store._conn.execute("PRAGMA max_page_count=1000000").fetchone()  # space again
    assert len(store.append(big)) == 50 and len(store.read()) == 51
    store.close()


FULL_JOB = """
import os
import sqlite3

import hyperpop as hp
from hyperpop.store.sqlite import SQLiteStore

if os.environ.get("FILL_AFTER"):  # the disk fills up after this many writes of the driver
    append, calls = SQLiteStore.append, []

    def filling(self, events):
        calls.append(1)
        if len(calls) == int(os.environ["FILL_AFTER"]):
            pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
            self._conn.execute(f"PRAGMA max_page_count={pages}").fetchone()
        return append(self, events)

    SQLiteStore.append = filling


class Job(hp.Trainable):
    def setup(self, config):
        self.x = 0.0

    def apply(self, config):
        pass

    def train(self):
        self.x += 1.0
        return {"score": self.x, "pad": "x" * 5000}

    def save(self):
        return self.x

    def load(self, state):
        self.x = state


trainable = Job
space = {"lr": hp.uniform(0.1, 1.0)}
settings = dict(metric="score", population=2, workers=1, budget=8, ready=2)
"""


def test_a_run_stopped_by_a_full_disk_resumes_once_there_is_space(tmp_path):
    f = tmp_path / "job.py"
    f.write_text(FULL_JOB)
    db = tmp_path / "r.db"
    env = {**os.environ, "FILL_AFTER": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "hyperpop", "run", f, "-s", db, "-q"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    line = one_line_error(out)
    assert "disk is full" in line and f"hyperpop resume {db}" in line
    before = [e for e in hp.Result.load(db).events if e.kind == ev.REPORTED]
    assert hyperpop("resume", db, "-q").returncode == 0
    res = hp.Result.load(db)
    reported = [(e.member, e.data["step"]) for e in res.events if e.kind == ev.REPORTED]
    assert len(set(reported)) == len(reported) and res.population.finished
    assert all(m.step == 8 for m in res.members) and len(before) < len(reported)
    kept = {(e.member, e.data["step"]): e.seq for e in res.events if e.kind == ev.REPORTED}
    assert all(kept[(e.member, e.data["step"])] == e.seq for e in before)


# --- 8. a store on a read-only filesystem -------------------------------------------------

READERS = """
D="$1"
mount --bind "$D" "$D" && mount -o remount,bind,ro "$D" || exit 99
touch "$D/probe" 2>/dev/null && exit 98  # the folder must really be read-only now
for cmd in "status $D/r.db --json" "table $D/r.db" "best $D/r.db" "lineage $D/r.db"; do
    echo "== $cmd"
    "$PY" -m hyperpop $cmd 2>&1
done
echo "== report"
"$PY" -m hyperpop report "$D/r.db" -o "$OUT/report.html" 2>&1 && echo "wrote report"
echo "== dashboard"
"$PY" - "$D/r.db" <<'PY' 2>&1
import sys
from starlette.testclient import TestClient
from hyperpop.dashboard.app import create_app
with TestClient(create_app(sys.argv[1]), base_url="http://127.0.0.1:8000") as c:
    r = c.get("/api/view")
    print(r.status_code, sorted(r.json()))
PY
"""


def _read_only_commands(folder: Path, out: Path) -> dict[str, str]:
    """Run every read-only command on the store in ``folder`` mounted read-only (a real
    read-only filesystem: a bind mount in a private mount namespace)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs root (a private read-only bind mount) on Linux")
    script = out / "readers.sh"
    script.write_text(READERS)
    env = {**os.environ, "PY": sys.executable, "OUT": str(out)}
    done = subprocess.run(
        ["unshare", "-m", "sh", str(script), str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode in (99, 98) or "unshare failed" in done.stderr:
        pytest.skip(f"cannot mount read-only here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    parts = done.stdout.split("== ")[1:]
    return {p.split("\n", 1)[0].split()[0]: p.split("\n", 1)[1] for p in parts}


def _toy_store(folder: Path) -> Path:
    """The paper's toy, 8 steps, stored in ``folder`` (in-process on the simulated backend:
    the readers are what these tests run as processes)."""
    from hyperpop.userfile import load_file

    folder.mkdir()
    db = folder / "r.db"
    toy = load_file(ROOT / "examples" / "toy.py").module
    kw = {k: v for k, v in toy.settings.items() if k not in ("storage", "budget")}
    kw.update(storage=db, budget=hp.Steps(8), backend="simulated", progress=False)
    hp.run(toy.trainable, toy.space, **kw)
    return db


def _check_readers(res: dict[str, str], reports: int, resumes: int) -> None:
    import json

    for name, text in res.items():
        assert "Traceback" not in text and "Error" not in text, (name, text)
    status = json.loads(res["status"])
    assert status["reports"] == reports and status["resumes"] == resumes
    assert len(res["table"].strip().splitlines()) == reports + 1
    assert json.loads(res["best"])["step"] == 8
    assert "wrote report" in res["report"]
    assert "200 ['seq', 'summary', 'view']" in res["dashboard"].splitlines()


def test_a_finished_run_on_a_read_only_filesystem_is_readable(tmp_path):
    db = _toy_store(tmp_path / "ro")
    assert not Path(f"{db}-wal").exists()  # closed cleanly: everything is in the main file
    before = sorted(p.name for p in db.parent.iterdir())
    _check_readers(_read_only_commands(db.parent, tmp_path), reports=16, resumes=0)
    assert sorted(p.name for p in db.parent.iterdir()) == before


KILLED_WRITER = """
import os, sys
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1], write=True)
store.append([Event("run_resumed", None, {"pid": os.getpid(), "version": "test"})])
os._exit(0)  # killed: the last event is only in the -wal file
"""


def test_a_killed_run_on_a_read_only_filesystem_is_read_with_its_last_writes(tmp_path):
    db = _toy_store(tmp_path / "ro")
    subprocess.run([sys.executable, "-c", KILLED_WRITER, db], check=True, timeout=60)
    assert Path(f"{db}-wal").stat().st_size > 0 and Path(f"{db}-shm").exists()
    _check_readers(_read_only_commands(db.parent, tmp_path), reports=16, resumes=1)


def test_readers_open_the_store_read_only(tmp_path):
    """Whatever the filesystem: a reader's connection cannot write (so it never needs to)."""
    db = _toy_store(tmp_path / "rw")
    store = SQLiteStore(db)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._conn.execute("INSERT INTO meta VALUES ('x', 'y')")
        assert len(store.read()) > 16
    finally:
        store.close()


def test_chmod_read_only_store_and_folder_are_readable(tmp_path):
    """Permissions instead of a read-only mount: only meaningful when not root (root ignores
    them), so it runs in unprivileged CI and is skipped here as root."""
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions; the read-only mount tests cover this")
    db = _toy_store(tmp_path / "ro")
    for p in db.parent.iterdir():
        if p.is_file():
            p.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        for cmd in ("status", "table", "best", "lineage"):
            out = hyperpop(cmd, db)
            assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    finally:
        db.parent.chmod(0o755)


def test_resume_with_zero_workers_is_refused(tmp_path):
    db = tmp_path / "r.db"
    assert cli("run", job(tmp_path), "-s", db, "-q").exit_code == 0
    line = one_line_error(cli("resume", db, "-w", "0"))
    assert "workers must be a positive int" in line and "got 0" in line
