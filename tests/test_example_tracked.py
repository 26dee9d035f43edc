"""examples/digits_tracked.py: a real digits run whose population is read back from
TensorBoard's event files and MLflow's store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("tensorboardX")
pytest.importorskip("mlflow")
ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_tracked.py"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # MLflow's own use of SQLAlchemy
def test_the_tracked_digits_example_shows_every_member_in_both_trackers(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("digits_tracked", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "runs"
    result = example.main(
        ["--population", "3", "--steps", "2", "--workers", "1", "--out", str(out)]
    )
    assert "tensorboard --logdir" in capsys.readouterr().out

    rows = result.records()
    # TensorBoard: one folder per member with its validation accuracy and its learning rate
    for m in result.members:
        acc = ea.EventAccumulator(str(out / "digits_tracked-tb" / f"member-{m.id:02d}"))
        acc.Reload()
        val = [(s.step, round(s.value, 6)) for s in acc.Scalars("val_acc")]
        recorded = [(r["step"], round(r["val_acc"], 6)) for r in rows if r["member"] == m.id]
        assert val == recorded
        assert len(acc.Scalars("hp/lr")) == len(recorded)

    # MLflow: a parent run for the population, a nested run per member
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(out / 'digits_tracked-mlflow.db').resolve()}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 4 and len(children) == 3
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_acc")
        member = int(child.data.tags["hyperpop.member"])
        assert len(history) == sum(1 for r in rows if r["member"] == member)
