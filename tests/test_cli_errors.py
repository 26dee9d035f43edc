"""Bad input and hostile conditions on the command line, each one clear line instead of a
traceback (issue 19, item 5 and the rough edges), through click's runner in this process."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from cli_jobs import counter_job
from click.testing import CliRunner, Result

from hyperpop.cli import main


def job(tmp_path: Path, extra: str = "", name: str = "job") -> Path:
    return counter_job(tmp_path, extra=extra, name=name)


def cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(res: Result) -> str:
    """The command failed with exactly one line of output and no traceback; that line."""
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    lines = [
        x
        for x in res.output.splitlines()
        if x.strip() and not x.startswith("hyperpop: running ") and " INFO " not in x
    ]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_steps_below_one_is_one_line_and_creates_nothing(tmp_path, steps):
    db = tmp_path / "r.db"
    line = one_line(cli("run", job(tmp_path), "-s", db, "-q", "--steps", steps))
    assert f"--steps must be a positive number of training steps per member, got {steps}" in line
    assert not db.exists()


def test_a_typo_in_a_run_files_settings_names_it_and_the_close_match(tmp_path):
    db = tmp_path / "r.db"
    line = one_line(cli("run", job(tmp_path, ", populaton=3"), "-s", db, "-q"))
    assert "unknown setting 'populaton'" in line and "did you mean 'population'?" in line
    assert not db.exists()
    line = one_line(cli("run", job(tmp_path, ", zzz=3", "other"), "-s", db, "-q"))
    assert "unknown setting 'zzz'" in line and "metric, mode, population" in line


def test_export_into_a_missing_folder_is_one_line(tmp_path):
    db = tmp_path / "r.db"
    assert cli("run", job(tmp_path), "-s", db, "-q").exit_code == 0
    target = tmp_path / "missing_dir" / "x.pt"
    line = one_line(cli("export", db, "-o", target))
    assert f"cannot write {target}" in line and f"mkdir -p {target.parent}" in line
    assert cli("export", db, "-o", tmp_path / "x.pt").exit_code == 0


def test_a_store_under_a_file_is_one_line(tmp_path):
    """A folder that cannot be created (a file is in the way): the lock file cannot be made,
    as on a read-only filesystem."""
    (tmp_path / "afile").write_text("")
    line = one_line(cli("run", job(tmp_path), "-s", tmp_path / "afile" / "x.db", "-q"))
    assert "cannot write to" in line and "needs a writable folder" in line


def _finished(tmp_path: Path) -> Path:
    db = tmp_path / "r.db"
    assert cli("run", job(tmp_path), "-s", db, "-q").exit_code == 0
    return db


def test_resume_on_a_read_only_filesystem_is_one_line(tmp_path, monkeypatch):
    """EROFS on the lock file, as a read-only mount gives it (simulated: this works as root,
    where a read-only folder made with chmod would still be writable)."""
    db = _finished(tmp_path)
    real = os.open

    def read_only(path, flags, *args, **kw):
        if str(path).endswith(".lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    line = one_line(cli("resume", db, "-q"))
    assert "cannot write to" in line and "Read-only file system" in line
    assert "needs a writable folder" in line
    line = one_line(cli("run", job(tmp_path, name="new"), "-s", tmp_path / "new.db", "-q"))
    assert "Read-only file system" in line


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into a chmod 555 folder; the simulated read-only test covers this",
)
def test_resume_in_a_read_only_folder_is_one_line(tmp_path):
    db = _finished(tmp_path)
    Path(f"{db}.lock").unlink()  # the lock file must be created anew
    tmp_path.chmod(0o555)
    try:
        line = one_line(cli("resume", db, "-q"))
    finally:
        tmp_path.chmod(0o755)
    assert "cannot write to" in line


def test_pin_with_a_member_id_past_64_bits_is_one_line(tmp_path):
    """A live driver holds the store (this process holds its lease), so the request is
    checked, and refused in words instead of SQLite's OverflowError."""
    from hyperpop.store.sqlite import WriterLock

    db = _finished(tmp_path)
    lease = WriterLock(db).acquire()
    try:
        line = one_line(cli("pin", db, "999999999999999999999", "--timeout", "1"))
    finally:
        lease.release()
    assert "member must be an int" in line and "OverflowError" not in line
