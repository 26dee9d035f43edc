"""The CartPole examples continue their random streams wherever a member trains (issue 23).

``examples/cartpole_vectorized.py``: a member's rollout comes from its own generator, so it is
the same whichever members train beside it (an asynchronous run resumed groups them otherwise).
``examples/cartpole.py``: a member rebuilt from its checkpoint (a resume, an exploit onto another
worker, a restarted Ray actor) continues its environments' random streams instead of starting
them again from the run's seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hyperpop.userfile import load_file  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_vectorized_cartpole_member_rolls_out_the_same_beside_any_members():
    """Member 5 trains the same (metrics and weights) alone and beside members 7 and 9."""
    cls = load_file(EXAMPLES / "cartpole_vectorized.py").trainable
    configs = [{"lr": 0.01 * (i + 1), "ent_coef": 1e-3, "gamma": 0.99} for i in range(3)]

    def engine():
        eng = cls().stacked(dict(configs[0]), "cpu")
        eng.grow(3)
        for slot, config in enumerate(configs):
            eng.fresh(slot, configs[0])
            eng.set_config(slot, config)
        return eng

    alone = engine()
    reports = alone.train([0], [2], [None], members=[5])[0]
    beside = engine()
    got = beside.train([2, 1, 0], [2, 2, 2], [None] * 3, members=[7, 9, 5])[2]
    assert got == reports
    for name, value in alone.save(0)["model"].items():
        assert torch.equal(beside.save(0)["model"][name], value)
