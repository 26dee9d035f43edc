"""The command line, as a user runs it on the toy example: real subprocesses for one command of
each kind (run, a view, the entry point), click's runner in this process for the rest."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from in_process import hyperpop_in_process

ROOT = Path(__file__).resolve().parents[1]


def hyperpop(*args, cwd=None, check=True):
    """``hyperpop ARGS`` in a real interpreter."""
    out = subprocess.run(
        [sys.executable, "-m", "hyperpop", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def cli(*args, check=True):
    """``hyperpop ARGS`` in this process."""
    out = hyperpop_in_process(*args)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def toy_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("cli") / "toy.db"
    out = hyperpop("run", ROOT / "examples" / "toy.py", "--storage", db, "-q")
    assert "best member" in out.stdout and "its schedule" in out.stdout
    return db


def test_status(toy_db):
    out = hyperpop("status", toy_db)
    assert "finished" in out.stdout and "Q" in out.stdout
    s = json.loads(hyperpop("status", toy_db, "--json").stdout)
    assert s["status"] == "finished" and s["members"] == 2 and s["reports"] == 400
    assert s["best_score"] > 1.18


def test_best_and_schedule_in_json_and_csv(toy_db):
    best = json.loads(cli("best", toy_db).stdout)
    assert best["score"] > 1.18 and best["step"] == 200
    assert best["schedule"][0]["step"] == 0
    rows = json.loads(cli("schedule", toy_db).stdout)
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert {"step", "trained_by", "h0", "h1"} <= set(rows[0])
    table = list(csv.DictReader(io.StringIO(cli("schedule", toy_db, "--format", "csv").stdout)))
    assert len(table) == len(rows) and float(table[0]["step"]) == 0
    one = json.loads(cli("best", toy_db).stdout)
    member = json.loads(cli("schedule", toy_db, "-m", one["member"]).stdout)
    assert member == rows


def test_table_and_lineage(toy_db):
    rows = list(csv.DictReader(io.StringIO(cli("table", toy_db).stdout)))
    assert len(rows) == 400 and {"member", "step", "score", "config/h0"} <= set(rows[0])
    edges = list(csv.DictReader(io.StringIO(cli("lineage", toy_db).stdout)))
    assert edges and {"member", "donor", "step"} <= set(edges[0])


def test_clear_errors_without_tracebacks(tmp_path):
    out = cli("status", tmp_path / "missing.db", check=False)
    assert out.returncode != 0 and "no hyperpop store" in out.stderr
    assert "Traceback" not in out.stderr
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    out = cli("best", bad, check=False)
    assert "not a hyperpop store" in out.stderr and "Traceback" not in out.stderr


def test_a_store_from_a_newer_version_is_refused(toy_db, tmp_path):
    copy = tmp_path / "newer.db"
    copy.write_bytes(toy_db.read_bytes())
    con = sqlite3.connect(copy)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    out = cli("resume", copy, check=False)
    assert out.returncode != 0 and "schema version 99" in out.stderr
    assert "upgrade hyperpop" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_run_file_is_explained(tmp_path):
    f = tmp_path / "job.py"
    f.write_text("import hyperpop as hp\nspace = {'lr': hp.uniform(1.0, 0.1)}\n")
    out = cli("run", f, check=False)
    assert "must define `trainable" in out.stderr
    f = tmp_path / "job2.py"  # a new file: this process already imported job.py
    f.write_text(
        "import hyperpop as hp\n"
        "def trainable(config, checkpoint):\n    pass\n"
        "space = {'lr': hp.uniform(1.0, 0.1)}\nsettings = dict(metric='x')\n"
    )
    out = cli("run", f, "--storage", tmp_path / "x.db", check=False)
    assert "SpaceError" in out.stderr and "'lr'" in out.stderr and "Traceback" not in out.stderr


def test_python_dash_m_and_version():
    out = hyperpop("--version")
    assert "version" in out.stdout
    assert "run" in hyperpop("--help").stdout


def test_default_storage_is_runs_folder(tmp_path, monkeypatch):
    job = tmp_path / "tiny.py"
    job.write_text((ROOT / "examples" / "toy.py").read_text().replace('storage="runs/toy.db",', ""))
    monkeypatch.chdir(tmp_path)
    cli("run", job, "--steps", "8", "-q")
    assert (tmp_path / "runs" / "tiny.db").exists()
    assert os.path.isdir(tmp_path / "runs" / "tiny.db-ckpt")
