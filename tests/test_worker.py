"""WorkerCore: state kept in memory, load-then-apply, reloads, eviction, corrupt checkpoints."""

from __future__ import annotations

from core_trainables import Counter

from hyperpop.backends.base import Task
from hyperpop.backends.worker import WorkerCore
from hyperpop.checkpoints import CheckpointStore
from hyperpop.trainable import make_factory


def core(tmp_path, cache_size=None):
    return WorkerCore(make_factory(Counter), CheckpointStore(tmp_path), cache_size=cache_size)


def test_continues_in_memory_and_applies_a_new_config(tmp_path):
    w = core(tmp_path)
    r1 = w.run(Task(0, {"lr": 1.0}, None, 0, 2))
    assert r1.error is None and r1.restored and [m["score"] for m in r1.reports] == [1.0, 2.0]
    r2 = w.run(Task(0, {"lr": 0.5}, r1.checkpoint, 2, 2))
    assert not r2.restored  # same blob: trained on in memory, no load
    assert [m["lr_used"] for m in r2.reports] == [0.5, 0.5]
    assert [m["setups"] for m in r2.reports] == [1, 1]
    assert r2.end_step == 4 and r2.checkpoint != r1.checkpoint


def test_another_blob_is_loaded_then_applied(tmp_path):
    w = core(tmp_path)
    donor = w.run(Task(1, {"lr": 3.0}, None, 0, 2))
    mine = w.run(Task(0, {"lr": 1.0}, None, 0, 2))
    # member 0 exploits member 1: load the donor's blob, then apply the explored lr
    r = w.run(Task(0, {"lr": 0.25}, donor.checkpoint, 2, 1))
    assert r.restored and r.reports == [
        {"score": 6.25, "lr_used": 0.25, "pid": r.reports[0]["pid"], "setups": 2}
    ]
    assert mine.checkpoint != donor.checkpoint


def test_eviction_beyond_cache_size_reloads_from_the_checkpoint(tmp_path):
    w = core(tmp_path, cache_size=1)
    a = w.run(Task(0, {"lr": 1.0}, None, 0, 1))
    w.run(Task(1, {"lr": 1.0}, None, 0, 1))  # evicts member 0
    assert list(w.held) == [1]
    r = w.run(Task(0, {"lr": 1.0}, a.checkpoint, 1, 1))
    assert r.restored and r.reports[0]["score"] == 2.0


def test_a_corrupt_checkpoint_is_a_clear_retryable_error(tmp_path):
    w = core(tmp_path)
    a = w.run(Task(0, {"lr": 1.0}, None, 0, 1))
    store = CheckpointStore(tmp_path)
    store.path(a.checkpoint).write_bytes(b"\x00garbage")
    w2 = core(tmp_path)  # a fresh worker must read the file
    r = w2.run(Task(0, {"lr": 1.0}, a.checkpoint, 1, 1))
    assert r.error is not None and "is corrupt" in r.error and a.checkpoint in r.error
    assert not r.fatal and r.reports == [] and r.checkpoint is None
    r = w2.run(Task(0, {"lr": 1.0}, "m0-s9-missing", 1, 1))
    assert "is missing" in r.error


def test_a_non_dict_from_train_is_fatal(tmp_path):
    class Bad(Counter):
        def train(self):
            return 3.0

    w = WorkerCore(make_factory(Bad), CheckpointStore(tmp_path))
    r = w.run(Task(0, {"lr": 1.0}, None, 0, 1))
    assert r.fatal and "must return a dict" in r.error
