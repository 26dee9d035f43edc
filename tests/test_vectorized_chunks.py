"""How the vectorized backend chooses its chunks: the choice from given timings (deterministic,
no clock), chunks trained in parallel giving the same results as one at a time, and the choice
reaching the log, the progress display and the checkpoints."""

from __future__ import annotations

import threading

import pytest
from stacked_engines import stacked_engine

from hyperpop.backends.chunking import ChunkChoice, balanced, choose

MIB = 2**20


def _table(times: dict[tuple[int, int], float], calls: list[tuple[int, int | None, int]]):
    """A timing function answering from ``(threads, parallel) -> seconds per member and
    batch``, recording what it was asked."""

    def measure(chunk: int, threads: int | None, parallel: int) -> float:
        calls.append((chunk, threads, parallel))
        return times[threads or 1, parallel]

    return measure


# --- the rule, from given timings -----------------------------------------------------------
def test_a_compute_bound_chunk_trains_in_parallel_when_that_is_clearly_faster():
    for _ in range(2):  # the same timings, the same choice
        calls: list[tuple[int, int | None, int]] = []
        choice = choose(
            64,
            _table({(1, 1): 0.004, (1, 2): 0.003, (2, 1): 0.0025}, calls),
            threads=[1, 2],
            parallel=2,
            per_member_bytes=MIB,
            budget=16 * MIB,
        )
        # 16 fit the budget; their half is no slower (not overhead-bound); then on 8 members:
        # 2 chunks at once on 1 thread each, and 1 chunk on 2 threads
        assert calls == [(16, 1, 1), (8, 1, 1), (8, 1, 2), (8, 2, 1)]
        # 2 chunks in flight share the budget: 8 members each
        assert (choice.chunk_size, choice.threads, choice.parallel) == (8, 1, 2)
        assert [t[:3] for t in choice.timings] == calls
    assert choice.record() == {"chunk_size": 8, "threads": 1, "parallel": 2}
    assert choice.summary() == "8 members at once, 2 chunks in parallel on 1 thread each"
    assert "2x8 on 1: 3" in choice.describe()  # 3 ms per member and batch


def test_parallel_chunks_are_taken_unless_clearly_slower_and_threads_only_if_clearly_faster():
    kw = dict(threads=[1, 2], parallel=2, per_member_bytes=MIB, budget=16 * MIB)
    # as fast (a busy machine): parallel chunks, which gain once a core frees up
    even = choose(64, _table({(1, 1): 1.0, (1, 2): 1.05, (2, 1): 2.0}, []), **kw)
    assert (even.threads, even.parallel) == (1, 2)
    # 1.2x slower per member in parallel: one chunk at a time stays
    slow = choose(64, _table({(1, 1): 1.0, (1, 2): 1.2, (2, 1): 2.0}, []), **kw)
    assert (slow.threads, slow.parallel) == (1, 1)
    # threads win only if 1.5x faster than the best so far (here: parallel chunks)
    threads = choose(64, _table({(1, 1): 3.0, (1, 2): 2.0, (2, 1): 1.3}, []), **kw)
    assert (threads.threads, threads.parallel) == (2, 1)
    kept = choose(64, _table({(1, 1): 3.0, (1, 2): 2.0, (2, 1): 1.4}, []), **kw)
    assert (kept.threads, kept.parallel) == (1, 2)


def test_a_population_that_fits_at_once_is_never_split_into_parallel_chunks():
    # an MLP (20 KB per member and batch): the whole population at once, only threads timed
    calls: list[tuple[int, int | None, int]] = []
    times = {(1, 1): 1.0, (1, 2): 0.1, (2, 1): 1.0}
    mlp = choose(
        64,
        _table(times, calls),
        threads=[1, 2],
        parallel=2,
        per_member_bytes=20_000,
        budget=16 * MIB,
    )
    assert (mlp.chunk_size, mlp.parallel) == (64, 1)
    assert all(p == 1 for _, _, p in calls)


def test_an_overhead_bound_step_takes_larger_chunks_not_parallel_ones():
    calls: list[tuple[int, int | None, int]] = []

    def overhead(chunk: int, threads: int | None, parallel: int) -> float:
        calls.append((chunk, threads, parallel))
        return 1.0 / chunk

    rl = choose(64, overhead, threads=[1, 2], parallel=2, per_member_bytes=MIB, budget=16 * MIB)
    assert (rl.chunk_size, rl.threads, rl.parallel) == (64, 1, 1)
    assert calls == [(16, 1, 1), (8, 1, 1), (64, 1, 1)]


def test_parallel_chunks_come_in_rounds_of_equal_size():
    assert balanced(48, 16, 2) == 12  # 4 chunks of 12, not 3 of 16 (a thread idle at the end)
    assert balanced(64, 16, 2) == 16 and balanced(10, 16, 2) == 5 and balanced(7, 1, 2) == 1
    times = {(1, 1): 2.0, (1, 2): 1.0}
    # 40 members, 8 MiB for each of 2 chunks in flight: 6 chunks of 7, not 5 of 8
    choice = choose(
        40, _table(times, []), threads=[1], parallel=2, per_member_bytes=MIB, budget=16 * MIB
    )
    assert (choice.chunk_size, choice.parallel) == (7, 2)


def test_given_threads_other_than_one_or_a_given_chunk_rule_parallel_chunks_out():
    calls: list[tuple[int, int | None, int]] = []
    times = {(1, 1): 1.0, (1, 2): 0.1, (2, 1): 1.0, (2, 2): 0.1}
    two = choose(
        64, _table(times, calls), threads=[2], parallel=2, per_member_bytes=MIB, budget=16 * MIB
    )
    assert (two.threads, two.parallel) == (2, 1) and all(p == 1 for _, _, p in calls)
    given = choose(64, _table(times, []), chunk=16, threads=[1], parallel=1)
    assert (given.chunk_size, given.parallel, given.source) == (16, 1, "given")
    assert ChunkChoice(16, 1, "recorded", parallel=2).headline() == (
        "vectorized backend: 16 members at once, 2 chunks in parallel on 1 thread each (recorded)"
    )


# --- the backend, with a real (small) model ---------------------------------------------------
torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import hyperpop as hp  # noqa: E402
from hyperpop.backends.vectorized import SERIAL_RANDOM, VectorizedBackend  # noqa: E402
from hyperpop.live import View  # noqa: E402
from hyperpop.vectorized import VectorizedTrainable  # noqa: E402


def _data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, (x[:, 0] > x[:, 1]).long()


VAL = _data(32, seed=1)


class Plain(VectorizedTrainable):
    """A small classifier with no random draws of its own; records the threads that train."""

    optimizer = "adam"
    batch_size = 12
    hyperparameters = ("coef",)
    threads_seen: set[str] = set()

    def build_model(self, config):
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))

    def data(self, config):
        return _data()

    def loss(self, model, batch, hp):
        x, y = batch
        out = model(x)
        return F.cross_entropy(out, y) + hp["coef"] * out.pow(2).mean()

    def evaluate(self, model, hp):
        x, y = VAL
        return {"acc": (model(x).argmax(-1) == y).float().mean()}

    interrupt_at: int | None = None

    def batches(self, members):
        if self.interrupt_at is not None and members.step >= self.interrupt_at:
            raise KeyboardInterrupt
        Plain.threads_seen.add(threading.current_thread().name)
        yield from super().batches(members)


class Dropping(Plain):
    """The same with dropout: its draws come from PyTorch's global generator."""

    def loss(self, model, batch, hp):
        x, y = batch
        return F.cross_entropy(F.dropout(model(x), 0.1), y)


SPACE = {"lr": hp.loguniform(1e-2, 0.1), "coef": hp.uniform(0.0, 0.1)}
RUN = dict(metric="acc", population=8, budget=hp.Steps(4), ready=2, seed=0)


class Notes(View):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def __call__(self, pop, state=None) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)


def _faster_in_parallel(calls: list[tuple[int, int | None, int]]):
    return _table({(1, 1): 0.004, (1, 2): 0.002, (2, 1): 0.004}, calls)


def _room_for(members: int) -> int:
    """A memory budget for the activations of ``members`` members of :class:`Plain`."""
    config = {"lr": 0.05, "coef": 0.0}
    eng = stacked_engine(Plain(), [config] * 4)
    return eng.activation_bytes([0, 1, 2, 3], 4) * (2 * members + 1) // 2


@pytest.fixture
def two_cores(monkeypatch):
    import hyperpop.backends.vectorized as vb

    monkeypatch.setattr(vb, "cores", lambda: 2)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_chunks_trained_in_parallel_give_the_same_run_as_one_at_a_time(two_cores, caplog):
    calls: list[tuple[int, int | None, int]] = []
    # room for 4 members: 2 chunks of 4 one at a time, or 2 chunks of 2 at once (4 in flight)
    parallel = VectorizedBackend(measure=_faster_in_parallel(calls), memory_budget=_room_for(4))
    view = Notes()
    Plain.threads_seen = set()
    with caplog.at_level("INFO", logger="hyperpop"):
        a = hp.run(Plain, SPACE, backend=parallel, progress=view, **RUN)
    choice = parallel.choice
    assert choice is not None and choice.parallel == 2 and choice.threads == 1
    assert choice.chunk_size == 2  # 4 chunks, 2 at a time
    assert calls == [(4, 1, 1), (2, 1, 1), (2, 1, 2), (4, 2, 1)]
    # (measuring runs in the calling thread, training in the lanes' threads)
    assert {n.split("_")[0] for n in Plain.threads_seen} == {"MainThread", "hyperpop-lane"}
    # the choice reaches the progress display once, and the log
    assert view.notes == [choice.headline()] and "2 chunks in parallel" in view.notes[0]
    assert "2 chunks in parallel on 1 thread each (measured" in caplog.text
    assert a.load_checkpoint()["extra"]["vectorized"]["parallel"] == 2
    # the same chunks one at a time (parallel chunks timed slower): the same run
    same = _table({(1, 1): 0.004, (1, 2): 0.008, (2, 1): 0.004}, [])
    one = VectorizedBackend(measure=same, memory_budget=_room_for(2))
    b = hp.run(Plain, SPACE, backend=one, **RUN)
    assert one.choice is not None and (one.choice.chunk_size, one.choice.parallel) == (2, 1)
    assert [(r["member"], r["step"], r["loss"]) for r in a.records()] == [
        (r["member"], r["step"], r["loss"]) for r in b.records()
    ]


def test_a_step_that_draws_global_random_numbers_trains_one_chunk_at_a_time(two_cores, caplog):
    calls: list[tuple[int, int | None, int]] = []
    backend = VectorizedBackend(measure=_faster_in_parallel(calls), memory_budget=_room_for(4))
    with caplog.at_level("INFO", logger="hyperpop"):
        hp.run(Dropping, SPACE, backend=backend, **RUN)
    assert backend.choice is not None and backend.choice.parallel == 1
    assert all(p == 1 for _, _, p in calls)  # not even timed
    assert SERIAL_RANDOM in caplog.text


def test_a_resume_trains_in_parallel_as_recorded_without_measuring(two_cores, tmp_path):
    path = tmp_path / "run.db"
    first = VectorizedBackend(measure=_faster_in_parallel([]), memory_budget=_room_for(4))
    interrupted = type("Interrupted", (Plain,), {"interrupt_at": 2})
    with pytest.raises(KeyboardInterrupt):  # raised in a lane's thread, stops the run
        hp.run(interrupted, SPACE, storage=path, backend=first, **RUN)
    assert first.choice is not None and first.choice.parallel == 2

    def boom(chunk: int, threads: int | None, parallel: int) -> float:
        raise AssertionError("a resume measured again")

    again = VectorizedBackend(measure=boom)
    Plain.threads_seen = set()
    result = hp.resume(path, trainable=Plain, backend=again)
    assert again.choice is not None and again.choice.source == "recorded"
    assert (again.choice.chunk_size, again.choice.parallel) == (first.choice.chunk_size, 2)
    assert max(r["step"] for r in result.records()) == 4
    assert any(n.startswith("hyperpop-lane") for n in Plain.threads_seen)


def test_measuring_parallel_chunks_changes_no_member_and_no_random_state():
    config = {"lr": 0.05, "coef": 0.0}
    eng = stacked_engine(Plain(), [config] * 4, [{**config, "seed": i} for i in range(4)])
    before = [eng.save(i) for i in range(4)]
    rng = torch.get_rng_state()
    assert eng.measure([0, 1, 2], 2, batches=2, parallel=2) > 0
    assert not eng.draws_global_random([0, 1])
    assert torch.equal(torch.get_rng_state(), rng)
    for i in range(4):
        for name, value in before[i]["model"].items():
            assert torch.equal(eng.save(i)["model"][name], value)
    dropping = stacked_engine(Dropping(), [config] * 2, [{**config, "seed": i} for i in range(2)])
    assert dropping.draws_global_random([0, 1])
