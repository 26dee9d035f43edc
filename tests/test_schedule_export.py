"""The schedule out (issue 12): follow a recorded schedule in a plain PyTorch loop."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from hyperpop.torch import ScheduleLR  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Train in this process on one thread, as hyperpop's workers do: on a loaded 2-core
    machine PyTorch's default of one thread per core makes a digits epoch several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_schedule_lr_follows_the_recorded_schedule_step_by_step():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0)
    schedule = [
        {"step": 0, "trained_by": 0, "config": {"opt": {"lr": 0.1}, "momentum": 0.5}},
        {"step": 2, "trained_by": 3, "config": {"opt": {"lr": 0.01}, "momentum": 0.9}},
    ]
    sched = ScheduleLR(opt, schedule, lr="opt/lr", others={"momentum": "momentum"})
    seen = []
    for _ in range(4):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    # as MemberResult.config_at: an entry at step s holds for training steps after s
    assert seen == [(0.1, 0.5), (0.1, 0.5), (0.01, 0.9), (0.01, 0.9)]


def test_schedule_lr_names_a_missing_learning_rate():
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    with pytest.raises(KeyError, match="pass lr="):
        ScheduleLR(opt, [{"step": 0, "config": {"learning_rate": 0.1}}])


def test_digits_retrained_along_the_exported_schedule():
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(
        "digits_schedule", EXAMPLES / "digits_schedule.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--population", "2", "--steps", "4", "--workers", "1"])
    assert 0.5 < out["pbt"] <= 1.0
    assert 0.5 < out["retrained"] <= 1.0
