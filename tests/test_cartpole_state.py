"""The CartPole examples continue their random streams wherever a member trains (issue 23).

``examples/cartpole_vectorized.py``: a member's rollout comes from its own generator, so it is
the same whichever members train beside it (an asynchronous run resumed groups them otherwise).
``examples/cartpole.py``: a member rebuilt from its checkpoint (a resume, an exploit onto another
worker, a restarted Ray actor) continues its environments' random streams instead of starting
them again from the run's seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stacked_engines import stacked_engine

torch = pytest.importorskip("torch")

from hyperpop.checkpoints import decode, encode  # noqa: E402
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
        return stacked_engine(cls(), configs, [configs[0]] * 3)

    alone = engine()
    reports = alone.train([0], [2], [None], members=[5])[0]
    beside = engine()
    got = beside.train([2, 1, 0], [2, 2, 2], [None] * 3, members=[7, 9, 5])[2]
    assert got == reports
    for name, value in alone.save(0)["model"].items():
        assert torch.equal(beside.save(0)["model"][name], value)


def _steps(member, actions: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` steps of ``member``'s environments with ``actions`` (no training): the
    observations after each, with the member's own bookkeeping, as its rollout keeps it."""
    seen = []
    for _ in range(n):
        member.obs, *_ = member.envs.step(actions)
        seen.append(member.obs.copy())
    return seen


def test_a_cartpole_member_rebuilt_from_its_checkpoint_continues_its_environments():
    """A member saved after some episodes ended, then rebuilt as a worker rebuilds one
    (``setup``, ``load`` of the stored state, ``apply``), continues its episodes in progress and
    its environments' random stream: the same observations as the saved member, step by step,
    where a fresh member starts from the run's first starting states. Before, the rebuilt
    member's environments restarted with the run's seed, as a fresh one's."""
    pytest.importorskip("gymnasium")
    rf = load_file(EXAMPLES / "cartpole.py")
    config = {"lr": 1e-3, "ent_coef": 0.01, "gamma": 0.99}
    right = np.ones(rf.module.NUM_ENVS, dtype=np.int64)  # falls within about 10 steps

    def fresh():
        t = rf.trainable()
        t.setup(dict(config))
        return t

    saved = fresh()
    _steps(saved, right, 25)  # two or more episodes ended in every environment
    state = decode(encode(saved.save()), "blob")
    rebuilt = fresh()
    rebuilt.load(state)
    rebuilt.apply(dict(config))
    new = fresh()
    assert np.array_equal(rebuilt.obs, saved.obs)
    assert not np.array_equal(rebuilt.obs, new.obs)
    later = _steps(saved, right, 25)
    again = _steps(rebuilt, right, 25)
    first = _steps(new, right, 25)
    assert all(np.array_equal(a, b) for a, b in zip(later, again))
    # the episodes that start after the save: other starting states than a fresh member's
    assert not any(np.array_equal(a, b) for a, b in zip(again, first))
    for t in (saved, rebuilt, new):
        t.cleanup()
