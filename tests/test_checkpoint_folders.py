"""Each store has a checkpoint folder of its own (issue 19, items 1 and 8): stores whose names
once mapped to one folder (``x.db``, ``x.sqlite``, ``x`` → ``x.ckpt``) never lose each other's
checkpoints, run one after another or at once; a store of the older layout still finds its
blobs; collection never deletes what another run wrote; a full disk under the checkpoint folder
alone stops the run with the store's one-line full-disk error."""

from __future__ import annotations

import errno
import itertools
import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest
from cli_jobs import Counter, counter_job
from click.testing import CliRunner

import hyperpop as hp
import hyperpop.checkpoints as ckpt
from hyperpop.checkpoints import (
    CheckpointError,
    CheckpointStore,
    checkpoint_dir_for,
    legacy_checkpoint_dir_for,
)
from hyperpop.cli import main

NAMES = ["x.db", "x.sqlite", "x"]  # the old layout gave all three x.ckpt
PAIRS = list(itertools.combinations(NAMES, 2))


SPACE = {"lr": hp.uniform(0.1, 1.0)}


def _run(db: Path, *, seed: int = 0, steps: int = 8, progress=False, callbacks=()) -> hp.Result:
    return hp.run(
        Counter,
        SPACE,
        metric="score",
        population=3,
        workers=2,
        budget=hp.Steps(steps),
        ready=2,
        seed=seed,
        storage=db,
        backend="simulated",
        progress=progress,
        callbacks=list(callbacks),
    )


def _export_all(db: Path, out: Path) -> list[float]:
    """Export every member's checkpoint and the best one through the CLI; their totals."""
    totals = []
    for member in ["best", *(str(m.id) for m in hp.Result.load(db).members)]:
        target = out / f"{db.name}-{member}.pkl"
        res = CliRunner().invoke(main, ["export", str(db), "-m", member, "-o", str(target)])
        assert res.exit_code == 0, res.output
        with open(target, "rb") as f:
            totals.append(pickle.load(f)["total"])
    return totals


def _expected(db: Path) -> list[float]:
    """What each export must hold: the scores the store's log recorded."""
    r = hp.Result.load(db)
    return [r.best.score, *(m.score for m in r.members)]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_two_stores_with_one_old_stem_run_one_after_another_keep_their_checkpoints(tmp_path, a, b):
    _run(tmp_path / a, seed=1)
    _run(tmp_path / b, seed=2)
    assert checkpoint_dir_for(tmp_path / a) != checkpoint_dir_for(tmp_path / b)
    for name in (a, b):
        assert _export_all(tmp_path / name, tmp_path) == pytest.approx(_expected(tmp_path / name))


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_two_stores_with_one_old_stem_run_at_once_keep_their_checkpoints(tmp_path, a, b):
    """Both drivers in one process, each in its thread, writing in lockstep (a barrier at
    every batch of events written) until one ends: checkpoints of both are on disk while the
    other collects."""
    barrier = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    class Together(hp.callbacks.Callback):
        def on_events(self, events, pop):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass  # the other run ended: go on alone

    def go(name, seed):
        try:
            _run(tmp_path / name, seed=seed, steps=12, callbacks=[Together()])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            barrier.abort()

    threads = [threading.Thread(target=go, args=(n, s)) for s, n in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for name in (a, b):
        assert _export_all(tmp_path / name, tmp_path) == pytest.approx(_expected(tmp_path / name))


def _interrupted(db: Path, seed: int) -> None:
    """A run stopped part way (Ctrl-C once every member has reported 4 steps), resumable."""

    class Stop(hp.callbacks.Callback):
        def on_events(self, events, pop):
            if all(m.step >= 4 for m in pop.members.values()):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(db, seed=seed, steps=12, callbacks=[Stop()])


def _to_old_layout(tmp_path: Path, names: list[str]) -> Path:
    """Move the stores' blobs into the one folder the older layout gave them all."""
    old = tmp_path / "x.ckpt"
    old.mkdir()
    for name in names:
        folder = checkpoint_dir_for(tmp_path / name)
        for blob in folder.glob("*.ckpt"):
            blob.rename(old / blob.name)
        shutil.rmtree(folder)
    return old


def test_stores_of_the_old_layout_find_their_blobs_and_resume_into_their_own_folders(tmp_path):
    for seed, name in enumerate(NAMES):
        _interrupted(tmp_path / name, seed)
    old = _to_old_layout(tmp_path, NAMES)
    assert legacy_checkpoint_dir_for(tmp_path / "x.db") == old
    for name in NAMES:  # read from the old folder: the checkpoints each log names
        r = hp.Result.load(tmp_path / name)
        assert not r.population.finished
        scores = {round(e.data["metrics"]["score"], 9) for e in r.events if e.kind == "reported"}
        for m in r.members:  # its own state, or a donor's after an exploit
            assert round(r.load_checkpoint(m.id)["total"], 9) in scores
    for i, name in enumerate(NAMES):
        db = tmp_path / name
        res = hp.resume(db, Counter, progress=False)
        assert [m.step for m in res.members] == [12, 12, 12]
        # its own folder holds what it needs; the others' blobs stay in the old folder
        for other in NAMES[i + 1 :]:
            live = hp.Result.load(tmp_path / other).population.live_checkpoints()
            assert live and all((old / f"{b}.ckpt").exists() for b in live)
        assert _export_all(db, tmp_path) == pytest.approx(_expected(db))
    live = set().union(*(hp.Result.load(tmp_path / n).population.live_checkpoints() for n in NAMES))
    left = {p.name[: -len(".ckpt")] for p in old.glob("*.ckpt")}
    assert live and not live & left  # the old folder keeps only blobs no log needs


def test_a_folder_left_by_another_run_is_refused_not_collected(tmp_path):
    """A store deleted without its folder: a new run at that path refuses to use the folder
    (its blobs may be someone's), in one line, and deletes nothing."""
    db = tmp_path / "r.db"
    _run(db)
    folder = checkpoint_dir_for(db)
    before = sorted(p.name for p in folder.glob("*.ckpt"))
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="holds checkpoints of run .*move that folder away"):
        _run(db)
    assert sorted(p.name for p in folder.glob("*.ckpt")) == before
    assert not db.exists()  # refused before the store was created
    shutil.move(folder, tmp_path / "kept")  # moved away, as the message says: a new run starts
    assert _run(db).members


def test_collection_deletes_nothing_in_a_folder_another_run_claimed(tmp_path):
    store = CheckpointStore(tmp_path / "c")
    store.claim("run-a", new=True)
    CheckpointStore(tmp_path / "c").claim("run-b", new=True)  # empty: it changes hands
    blob = store.save(0, 1, {"total": 1.0})
    assert store.collect([]) == [] and store.exists(blob)
    with pytest.raises(CheckpointError, match="holds checkpoints of run run-b"):
        CheckpointStore(tmp_path / "c").claim("run-c", new=False)


def _job(tmp_path: Path) -> Path:
    return counter_job(tmp_path, budget=8)


@pytest.mark.parametrize("name", ["x.ckpt", "x.db-ckpt"])
def test_a_store_named_like_a_checkpoint_folder_is_refused_creating_nothing(tmp_path, name):
    job = _job(tmp_path)
    before = set(os.listdir(tmp_path))
    res = CliRunner().invoke(main, ["run", str(job), "-s", str(tmp_path / name), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    last = res.output.strip().splitlines()[-1]
    assert f"a store's name cannot end in {name[name.index('ckpt') - 1 :]}" in last
    assert last.endswith(f"name it e.g. {tmp_path / name.split('ckpt')[0][:-1]}.db")
    assert set(os.listdir(tmp_path)) - before <= {"__pycache__"}


# --- item 8: a full disk under the checkpoint folder only ---------------------------------


class _FullAfter:
    """``write_atomic`` that fails with ENOSPC for blobs once ``n`` were written (the disk of
    the checkpoint folder fills; the store's disk does not)."""

    def __init__(self, n: int):
        self.n, self.real = n, ckpt.write_atomic

    def __call__(self, path, data, *, fsync=True):
        if str(path).endswith(".ckpt"):
            if self.n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            self.n -= 1
        self.real(path, data, fsync=fsync)


def test_a_full_checkpoint_disk_stops_the_run_with_one_line_and_resume_goes_on(
    tmp_path, monkeypatch
):
    db = tmp_path / "r.db"
    monkeypatch.setattr(ckpt, "write_atomic", _FullAfter(4))
    with pytest.raises(hp.StoreFullError) as err:
        _run(db)
    msg = str(err.value)
    assert "\n" not in msg and "the disk is full" in msg
    assert str(checkpoint_dir_for(db)) in msg and f"hyperpop resume {db}" in msg
    held = hp.Result.load(db)
    assert [e for e in held.events if e.kind == "failed"] == []  # no member blamed
    assert not list(checkpoint_dir_for(db).glob(".*.tmp"))  # nothing half-written
    monkeypatch.undo()  # space freed
    res = hp.resume(db, Counter, progress=False)
    assert [m.step for m in res.members] == [8, 8, 8]
    steps = [(e.member, e.data["step"]) for e in res.events if e.kind == "reported"]
    assert len(steps) == len(set(steps))  # every (member, step) recorded once


def test_a_full_checkpoint_disk_is_one_line_on_the_command_line(tmp_path, monkeypatch):
    job = _job(tmp_path)
    monkeypatch.setattr(ckpt, "write_atomic", _FullAfter(2))
    db = tmp_path / "j.db"
    res = CliRunner().invoke(main, ["run", str(job), "-s", str(db), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: CheckpointFullError: cannot write a checkpoint to ")
    assert "the disk is full" in last and f"hyperpop resume {db}" in last
