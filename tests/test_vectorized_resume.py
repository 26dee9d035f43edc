"""An asynchronous vectorized run interrupted and resumed decides as the uninterrupted run.

A resumed asynchronous run groups members into other training calls than the uninterrupted
one (which members wait when the driver stops differs), so each member's data order must come
from the member itself (its id and its step), never from the call it trains in (issue 23,
item 4).
"""

from __future__ import annotations

import pytest
from stacked_engines import stacked_engine

import hyperpop as hp
from hyperpop.store import events as ev

torch = pytest.importorskip("torch")

from hyperpop.backends.vectorized import VectorizedBackend  # noqa: E402
from hyperpop.vectorized import VectorizedTrainable  # noqa: E402

#: what a run decided and measured, event by event (not when: times differ across sessions)
DECIDED = (ev.REPORTED, ev.CHECKPOINTED, ev.EXPLOITED, ev.EXPLORED, ev.FINISHED, ev.FAILED)


class Line(VectorizedTrainable):
    """A noisy linear fit: minibatches of 4 rows of 32, so the data order moves the scores."""

    batch_size = 4
    batches_per_step = 2

    def build_model(self, config):
        return torch.nn.Linear(2, 1)

    def data(self, config):
        x = torch.linspace(-1, 1, 64).reshape(32, 2)
        return x, x.sum(1, keepdim=True) + 0.3 * torch.sin(7 * x[:, :1])

    def loss(self, model, batch, hp):
        x, y = batch
        return (model(x) - y).pow(2).mean()


class Interrupted(VectorizedBackend):
    """Stopped as by Ctrl-C once ``after`` reports came back (the crossing poll's results are
    lost with the driver)."""

    def __init__(self, after: int):
        super().__init__(8, threads=1)
        self.after, self.reports = after, 0

    def poll(self, timeout):
        out = super().poll(timeout)
        self.reports += sum(len(r.reports) for r in out)
        if self.reports >= self.after:
            raise KeyboardInterrupt
        return out


def run(exploit: str, backend: VectorizedBackend, **kw) -> hp.Result:
    """8 members, 24 steps, ready every 3, asynchronous and deterministic."""
    return hp.run(
        Line,
        {"lr": hp.loguniform(1e-3, 0.3)},
        metric="loss",
        mode="min",
        population=8,
        budget=hp.Steps(24),
        ready=3,
        seed=1,
        exploit=exploit,
        synchronous=False,
        deterministic=True,
        backend=backend,
        progress=False,
        **kw,
    )


def decided(res: hp.Result) -> list[tuple]:
    return [
        (e.kind, e.member, e.data.get("step"), e.data.get("config"), e.data.get("score"))
        for e in res.events
        if e.kind in DECIDED
    ]


def first_difference(a: list[tuple], b: list[tuple]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"event {i}: uninterrupted {x}, resumed {y}"
    return f"{len(a)} events against {len(b)}"


@pytest.mark.parametrize("exploit,cuts", [("truncation", (37, 101)), ("reserve", (53, 122))])
def test_an_async_vectorized_run_interrupted_and_resumed_decides_as_uninterrupted(
    tmp_path, exploit, cuts
):
    """Interrupted twice (a poll's results lost each time) and resumed: every report, copy and
    score equals the uninterrupted run's, although the resumed sessions train the members in
    other groups than the uninterrupted one did."""
    whole = run(exploit, VectorizedBackend(8, threads=1), storage=tmp_path / "whole.db")
    expected = decided(whole)
    db = tmp_path / "cut.db"
    with pytest.raises(KeyboardInterrupt):
        run(exploit, Interrupted(cuts[0]), storage=db)
    done = sum(1 for e in decided(hp.load(db)) if e[0] == ev.REPORTED)
    with pytest.raises(KeyboardInterrupt):
        hp.resume(db, trainable=Line, backend=Interrupted(cuts[1] - done), progress=False)
    resumed = hp.resume(db, trainable=Line, progress=False)
    assert resumed.population.resumes == 2
    got = decided(resumed)
    assert ev.EXPLOITED in {e[0] for e in expected}
    assert got == expected, first_difference(expected, got)


@pytest.mark.parametrize("shuffle", ["member", "shared"])
def test_a_members_training_does_not_depend_on_the_members_beside_it(shuffle):
    """Member 5 trains the same (metrics and weights) alone, beside members at other steps,
    and in another slot; two members in step with identical weights see their own orders
    (or, shared, the same one)."""
    cls = type("Line", (Line,), {"shuffle": shuffle})
    configs = [{"lr": 0.05 * (i + 1)} for i in range(4)]

    def engine():
        eng = stacked_engine(cls(), configs, [configs[0]] * 4)
        eng.train([2], [3], [None], members=[9])  # slot 2 ahead of the others
        return eng

    alone = engine()
    reports = alone.train([0], [2], [None], members=[5])[0]
    beside = engine()
    got = beside.train([3, 2, 0], [2, 2, 2], [None] * 3, members=[7, 9, 5])[2]
    assert got == reports
    moved = engine()
    moved.copy([1], [0])
    moved.set_config(1, configs[0])
    assert moved.train([1], [2], [None], members=[5])[0] == reports
    for name, value in alone.save(0)["model"].items():
        assert torch.equal(beside.save(0)["model"][name], value)
    twins = engine()
    twins.copy([1], [0])
    twins.set_config(1, configs[0])
    a, b = twins.train([0, 1], [1, 1], [None, None], members=[5, 6])
    assert (a == b) == (shuffle == "shared")


def test_a_run_without_storage_syncs_nothing_to_disk(tmp_path, monkeypatch):
    """A run kept in a temporary folder (``storage=None``) has no crash to survive: its
    checkpoints are not synced to disk (a third of a short vectorized run's wall time went to
    syncing and then deleting them); a run with storage syncs every checkpoint it writes."""
    import os

    synced: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    settings = dict(metric="loss", mode="min", population=4, budget=hp.Steps(4), ready=2)
    space = {"lr": hp.loguniform(1e-3, 0.3)}
    res = hp.run(Line, space, backend=VectorizedBackend(threads=1), progress=False, **settings)
    assert res.summary()["status"] == "finished"
    assert "model" in res.load_checkpoint("best")  # the best state is kept all the same
    assert synced == []
    hp.run(
        Line,
        space,
        backend=VectorizedBackend(threads=1),
        storage=tmp_path / "run.db",
        progress=False,
        **settings,
    )
    assert len(synced) >= 8  # 4 members x 2 intervals
