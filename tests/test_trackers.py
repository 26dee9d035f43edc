"""Experiment trackers: real runs logged to TensorBoard, MLflow and W&B, read back and checked
against the run's own log (each test skips when its tracker's extra is not installed)."""

from __future__ import annotations

import json
import logging
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from core_trainables import Counter
from in_process import hyperpop_in_process

import hyperpop as hp
from hyperpop.callbacks import Callback
from hyperpop.store.sqlite import SQLiteStore

SPACE = {"x": hp.uniform(0.0, 1.0), "opt": {"lr": hp.loguniform(1e-3, 1e-1)}}


def climb(config, checkpoint):
    start = checkpoint or 0
    for i in range(start, 100):
        hp.report(score=config["x"] * (i + 1), loss=1.0 / (i + 1), checkpoint=i + 1)


class Interrupt(Callback):
    """Ctrl-C after the driver wrote its ``after``-th batch of events (the run stays
    resumable); the callbacks listed after this one never see that batch."""

    def __init__(self, after: int):
        self.after = after
        self.batches = 0

    def on_events(self, events, pop):
        self.batches += 1
        if self.batches == self.after:
            raise KeyboardInterrupt


def run(db: Path, callbacks, *, stop_after: int | None = None, **kw):
    """A seeded simulated run of 4 members (synchronous: every generation exploits), or one
    interrupted after ``stop_after`` batches, before ``callbacks`` saw the last."""
    args = dict(
        metric="score",
        population=4,
        budget=12,
        ready=2,
        synchronous=True,
        backend="simulated",
        storage=db,
        progress=False,
        seed=3,
    )
    args.update(kw)
    if stop_after is None:
        return hp.run(climb, SPACE, callbacks=callbacks, **args)
    with pytest.raises(KeyboardInterrupt):
        hp.run(climb, SPACE, callbacks=[Interrupt(stop_after), *callbacks], **args)
    return None


def logged(db: Path) -> list:
    store = SQLiteStore(db)
    try:
        return store.read()
    finally:
        store.close()


def expected(db: Path):
    """What the log says each member reported: (step, score), (step, x it trained with) and
    its exploits, folded here independently of hyperpop's own fold."""
    config: dict[int, dict] = {}
    blob: dict[str, dict] = {}
    scores, xs, exploits = defaultdict(list), defaultdict(list), defaultdict(int)
    for e in logged(db):
        d = e.data
        if e.kind in ("member_created", "explored", "rejuvenated"):
            config[e.member] = d["config"]
        elif e.kind == "checkpointed":
            blob[d["checkpoint"]] = config[e.member]
        elif e.kind == "exploited":
            config[e.member] = blob[d["checkpoint"]]
            exploits[e.member] += 1
        elif e.kind == "reported":
            scores[e.member].append((d["step"], d["score"]))
            xs[e.member].append((d["step"], config[e.member]["x"]))
    return scores, xs, exploits


# --- TensorBoard --------------------------------------------------------------------------
def tb_read(folder: Path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tb_scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(s.step, s.value) for s in acc.Scalars(tag)]


def tb_texts(acc, tag: str = "pbt/text_summary") -> list[tuple[int, str]]:
    if tag not in acc.Tags()["tensors"]:
        return []
    return [(t.step, t.tensor_proto.string_val[0].decode()) for t in acc.Tensors(tag)]


def check_tensorboard(logdir: Path, db: Path) -> None:
    scores, xs, exploits = expected(db)
    assert json.loads((logdir / "hyperpop.json").read_text())["seq"] == logged(db)[-1].seq
    members = sorted(p.name for p in logdir.iterdir() if p.name.startswith("member-"))
    assert members == [f"member-{i:02d}" for i in range(4)]
    notes = 0
    for m in range(4):
        acc = tb_read(logdir / f"member-{m:02d}")
        # every report once, at its step, in log order (no duplicate history after a resume)
        got = tb_scalars(acc, "score")
        assert [s for s, _ in got] == [s for s, _ in scores[m]]
        assert [v for _, v in got] == pytest.approx([v for _, v in scores[m]])
        assert len(tb_scalars(acc, "loss")) == len(scores[m])
        # the schedule: the value it trained with at each step, changing at explores
        assert tb_scalars(acc, "hp/x") == [(s, pytest.approx(x)) for s, x in xs[m]]
        assert len(tb_scalars(acc, "hp/opt/lr")) == len(xs[m])
        texts = [t for _, t in tb_texts(acc)]
        copied = [t for t in texts if " copied member-" in t]
        assert len(copied) == exploits[m]
        for t in copied:  # "member-01 copied member-02 at step 4; x 0.8 -> 0.96, ..."
            assert t.startswith(f"member-{m:02d} copied member-") and " -> " in t
        notes += len(texts)
    assert sum(exploits.values()) >= 3
    assert len(tb_texts(tb_read(logdir / "population"))) >= notes


def test_tensorboard_folders_scalars_schedules_and_exploit_text(tmp_path):
    pytest.importorskip("tensorboardX")
    TensorBoard = hp.callbacks.TensorBoard
    db = tmp_path / "run.db"
    run(db, [TensorBoard(tmp_path / "tb")])
    check_tensorboard(tmp_path / "tb", db)


def test_tensorboard_resume_continues_the_same_folders_and_backfills_a_fresh_one(tmp_path, caplog):
    pytest.importorskip("tensorboardX")
    TensorBoard = hp.callbacks.TensorBoard
    db = tmp_path / "run.db"
    # Ctrl-C after the 6th batch is written, before this TensorBoard logged it: the resume
    # must log that batch, once
    run(db, [TensorBoard(tmp_path / "tb")], stop_after=6)
    mark = json.loads((tmp_path / "tb" / "hyperpop.json").read_text())["seq"]
    assert 0 < mark < logged(db)[-1].seq  # the interrupted batch is in the log, not in TB
    hp.resume(
        db,
        climb,
        progress=False,
        callbacks=[TensorBoard(tmp_path / "tb"), TensorBoard(tmp_path / "fresh", max_open=2)],
    )
    assert logged(db)[-1].kind == "run_finished"
    check_tensorboard(tmp_path / "tb", db)
    check_tensorboard(tmp_path / "fresh", db)  # a new logdir after a resume: the whole history
    # a logdir that holds another run is refused (the run goes on without it)
    with caplog.at_level(logging.ERROR, logger="hyperpop"):
        result = run(tmp_path / "other.db", [TensorBoard(tmp_path / "tb")])
    assert result.population.finished
    assert "holds the TensorBoard logs of another run" in caplog.text
    assert json.loads((tmp_path / "tb" / "hyperpop.json").read_text())["store"] == str(db)


def test_tensorboard_with_real_worker_processes(tmp_path):
    """The local backend: the hyperparameter curve is the lr each worker really trained with."""
    pytest.importorskip("tensorboardX")
    db = tmp_path / "r.db"
    hp.run(
        Counter,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=3,
        workers=2,
        budget=6,
        ready=2,
        storage=db,
        progress=False,
        seed=1,
        callbacks=[hp.callbacks.TensorBoard(tmp_path / "tb")],
    )
    reports = defaultdict(list)
    for e in logged(db):
        if e.kind == "reported":
            reports[e.member].append((e.data["step"], e.data["metrics"]["lr_used"]))
    for m in range(3):
        acc = tb_read(tmp_path / "tb" / f"member-{m:02d}")
        assert tb_scalars(acc, "lr_used") == [(s, pytest.approx(v)) for s, v in reports[m]]
        assert tb_scalars(acc, "hp/lr") == [(s, pytest.approx(v)) for s, v in reports[m]]


JOB = """
import hyperpop as hp

def climb(config, checkpoint):
    start = checkpoint or 0
    for i in range(start, 100):
        hp.report(score=config["x"] * (i + 1), loss=1.0 / (i + 1), checkpoint=i + 1)

trainable = climb
space = {"x": hp.uniform(0.0, 1.0), "opt": {"lr": hp.loguniform(1e-3, 1e-1)}}
settings = dict(metric="score", population=4, budget=12, ready=2, synchronous=True,
                backend="simulated", seed=3)
"""


def test_the_command_line_adds_trackers_without_code(tmp_path):
    pytest.importorskip("tensorboardX")
    job, db = tmp_path / "job.py", tmp_path / "job.db"
    job.write_text(JOB)
    out = hyperpop_in_process("run", job, "--storage", db, "-q", "--tensorboard", tmp_path / "tb")
    assert out.returncode == 0, out.stderr
    check_tensorboard(tmp_path / "tb", db)
    from click.testing import CliRunner

    from hyperpop.cli import main

    for command in ("run", "resume"):
        shown = CliRunner().invoke(main, [command, "--help"]).output
        assert "--tensorboard DIR" in shown and "--mlflow URI" in shown
        assert "--wandb PROJECT" in shown


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("TensorBoard", "tensorboardX", "tensorboard"),
        ("MLflow", "mlflow", "mlflow"),
        ("WandB", "wandb", "wandb"),
    ],
)
def test_a_missing_tracker_library_names_the_extra(monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError, match=rf"pip install 'hyperpop\[{extra}\]'"):
        getattr(hp.callbacks, name)("x")


# --- MLflow -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow's own use of SQLAlchemy
def test_mlflow_parent_run_and_nested_member_runs_across_a_resume(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    db = tmp_path / "run.db"
    run(db, [hp.callbacks.MLflow(uri, experiment="pbt", flush_secs=0)], stop_after=5)
    hp.resume(db, climb, progress=False, callbacks=[hp.callbacks.MLflow(uri, experiment="pbt")])

    scores, xs, exploits = expected(db)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pbt")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 5  # resumed into the same runs
    parent = parents[0]
    assert parent.info.run_name == "run" and parent.info.status == "FINISHED"
    assert parent.data.params["settings/metric"] == "score"
    assert parent.data.tags["hyperpop.seq"] == str(logged(db)[-1].seq)
    children = {int(r.data.tags["hyperpop.member"]): r for r in runs if r is not parent}
    assert sorted(children) == [0, 1, 2, 3]
    first = {e.member: e.data["config"] for e in logged(db) if e.kind == "member_created"}
    for m, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.run_name == f"member-{m:02d}" and child.info.status == "FINISHED"
        assert float(child.data.params["x"]) == pytest.approx(first[m]["x"])
        history = client.get_metric_history(child.info.run_id, "score")
        assert [(h.step, h.value) for h in history] == [(s, pytest.approx(v)) for s, v in scores[m]]
        hp_x = client.get_metric_history(child.info.run_id, "hp/x")
        assert [(h.step, h.value) for h in hp_x] == [(s, pytest.approx(x)) for s, x in xs[m]]
        notes = child.data.tags.get("mlflow.note.content", "")
        assert notes.count(" copied member-") == exploits[m]
        if exploits[m]:
            assert child.data.tags["hyperpop.exploits"] == str(exploits[m])
    assert "run resumed" in parent.data.tags["mlflow.note.content"]


# --- Weights & Biases ---------------------------------------------------------------------
def wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline run's ``.wandb`` file (LevelDB's log format with W&B's
    7-byte header; each record a ``wandb_internal_pb2.Record``)."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunks, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        chunks += chunk
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        i.key or "/".join(i.nested_key): json.loads(i.value_json)
                        for i in record.history.item
                    }
                )
    return rows


def test_wandb_offline_runs_grouped_by_population_across_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    db = tmp_path / "run.db"
    run(db, [hp.callbacks.WandB("pbt-test")], stop_after=5)
    tracker = hp.callbacks.WandB("pbt-test")
    hp.resume(db, climb, progress=False, callbacks=[tracker])

    scores, xs, exploits = expected(db)
    files = sorted((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    by_member = defaultdict(list)
    for f in files:
        by_member[f.name.removeprefix("run-").removesuffix(".wandb")].append(f)
    assert sorted(by_member) == [tracker.run_id(m) for m in range(4)]
    assert all(len(f) == 2 for f in by_member.values())  # one offline file per session
    for m in range(4):
        rows = [r for f in sorted(by_member[tracker.run_id(m)]) for r in wandb_history(f)]
        # the two sessions' files together hold every report once, in order
        assert [(r["step"], r["score"]) for r in rows] == [
            (s, pytest.approx(v)) for s, v in scores[m]
        ]
        assert [(r["step"], r["hp/x"]) for r in rows] == [(s, pytest.approx(x)) for s, x in xs[m]]
        assert all("loss" in r and "hp/opt/lr" in r for r in rows)


# --- the notes every tracker writes ---------------------------------------------------------
def test_notes_for_exploits_explores_rejuvenations_and_failures():
    from hyperpop.callbacks._tracker import Tracker
    from hyperpop.population import Population
    from hyperpop.store.events import Event

    class Notes(Tracker):
        def __init__(self):
            super().__init__()
            self.got, self.reports, self.ended = [], [], []

        def _open(self, pop, info):
            return 0

        def _report(self, member, step, values, t):
            self.reports.append((member, step, values))

        def _note(self, member, step, text, t):
            self.got.append((member, step, text))

        def _member_end(self, member, status):
            self.ended.append((member, status))

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0, "log": False}}
    space["act"] = {"type": "choice", "options": ["relu", "tanh"], "ordered": False}
    opening = [
        Event("run_started", None, {"settings": {"population": 2, "metric": "s"}, "space": space}),
        Event("member_created", 0, {"config": {"x": 0.1, "act": "relu"}}),
        Event("member_created", 1, {"config": {"x": 0.9, "act": "tanh"}}),
    ]
    later = [
        Event("reported", 0, {"step": 2, "score": 0.5, "metrics": {"s": 0.5, "acc": 0.7}}),
        Event("checkpointed", 0, {"step": 2, "checkpoint": "a"}),
        Event("reported", 1, {"step": 2, "score": 0.1, "metrics": {"s": 0.1}}),
        Event("checkpointed", 1, {"step": 2, "checkpoint": "b"}),
        Event("exploited", 1, {"donor": 0, "step": 2, "checkpoint": "a", "at": 2}),
        Event("reported", 1, {"step": 3, "score": 0.6, "metrics": {"s": 0.6}}),
        Event("rejuvenated", 0, {"config": {"x": 0.3, "act": "tanh"}, "reset": "full"}),
        Event("explored", 0, {"config": {"x": 0.4, "act": "tanh"}, "how": "user", "by": "user"}),
        Event("failed", 1, {"step": 3, "error": "Traceback...\nValueError: boom", "fatal": True}),
    ]
    for i, e in enumerate(opening + later, start=1):
        e.seq, e.time = i, 100.0 + i
    tracker = Notes()
    tracker.on_start(Population.from_events(opening), None)
    tracker.on_events(later, None)
    assert tracker.got == [
        (
            1,
            2,
            "member-01 copied member-00 at step 2; "
            "took its config: x 0.9 -> 0.1, act 'tanh' -> 'relu'",
        ),
        (0, 2, "member-00 rejuvenated at step 2 (reset: full); x 0.1 -> 0.3, act 'relu' -> 'tanh'"),
        (0, 2, "member-00 set by a person at step 2; x 0.3 -> 0.4"),
        (1, 3, "member-01 failed for good: ValueError: boom"),
    ]
    # metrics, the optimised one included, and the hyperparameters (a choice as its index)
    assert tracker.reports[0] == (0, 2, {"s": 0.5, "acc": 0.7, "hp/x": 0.1, "hp/act": 0.0})
    assert tracker.reports[2] == (1, 3, {"s": 0.6, "hp/x": 0.1, "hp/act": 0.0})  # the donor's
    assert tracker.ended == [(1, "failed")]
