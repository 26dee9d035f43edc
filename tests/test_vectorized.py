"""The vectorized backend: stacked steps equal member-by-member torch.optim steps, exploits copy
the donor's slice, and a real run records, resumes and replays like any other."""

from __future__ import annotations

import pytest
from stacked_engines import stacked_engine

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import hyperpop as hp  # noqa: E402
from hyperpop.backends.vectorized import VectorizedBackend  # noqa: E402
from hyperpop.checkpoints import CheckpointStore  # noqa: E402
from hyperpop.store import events as ev  # noqa: E402
from hyperpop.vectorized import ShapeError, VectorizedTrainable, dropout  # noqa: E402

K, B = 4, 12


def _data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


VAL = _data(64, seed=1)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, p: torch.Tensor | float = 0.0) -> torch.Tensor:
        return self.b(dropout(torch.tanh(self.a(x)), p, self.training))


class Toy(VectorizedTrainable):
    """A small classifier; per-member dropout and a loss coefficient as tensors."""

    optimizer = "sgd"
    hyperparameters = ("p", "coef")
    batch_size = 16
    batches_per_step = 3
    interrupt_at: int | None = None

    def build_model(self, config):
        return Net()

    def data(self, config):
        return _data()

    def loss(self, model, batch, hp):
        x, y = batch
        out = model(x, hp["p"])
        ce = F.cross_entropy(out, y)
        return ce + hp["coef"] * out.pow(2).mean(), {"ce": ce}

    def evaluate(self, model, hp):
        x, y = VAL  # made outside: random draws inside vmap differ between members
        return {"acc": (model(x).argmax(-1) == y).float().mean()}

    def batches(self, members):
        if self.interrupt_at is not None and members.step >= self.interrupt_at:
            raise KeyboardInterrupt
        yield from super().batches(members)


class ToyAdam(Toy):
    optimizer = "adam"


class FixedBatches(Toy):
    """Every member its own fixed batch (for comparing one step with torch.optim)."""

    batch: tuple[torch.Tensor, torch.Tensor]

    def batches(self, members):
        yield self.batch


def _configs(kind: str) -> list[dict]:
    out = []
    for i in range(K):
        c = {"lr": 0.02 * (i + 1), "weight_decay": [0.0, 1e-3, 1e-2, 0.1][i], "p": 0.0}
        c["coef"] = 0.1 * i
        if kind == "sgd":
            c["momentum"] = [0.0, 0.5, 0.9, 0.99][i]
        else:
            c.update(beta1=0.8 + 0.05 * i, beta2=0.99 + 0.002 * i, eps=10.0 ** (-8 + i))
        out.append(c)
    return out


def _engine(cls: type[VectorizedTrainable], configs: list[dict]):
    spec = cls()
    return spec, stacked_engine(spec, configs, [{**c, "seed": i} for i, c in enumerate(configs)])


def _reference_step(cls, kind, nesterov, state, config, batch):
    """The same step for one member with torch.optim, from a saved state."""
    model = Net()
    model.load_state_dict(state["model"])
    params = list(model.parameters())
    if kind == "sgd":
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=nesterov)
    elif kind == "adam":
        opt = torch.optim.Adam(params)
    else:
        opt = torch.optim.AdamW(params)
    opt.load_state_dict(state["optimizer"])
    plain = cls()
    plain.module, plain.opt = model, opt
    plain.apply(config)  # the config wins over the loaded groups, as in the backend
    hpv = {k: torch.tensor(float(config[k])) for k in ("p", "coef")}
    loss, _ = plain.loss(model, batch, hpv)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return model.state_dict(), opt.state_dict()


def _assert_states_close(vec: dict, model_sd: dict, opt_sd: dict) -> None:
    for name, value in model_sd.items():
        torch.testing.assert_close(vec["model"][name], value, rtol=1e-5, atol=1e-6)
    assert set(vec["optimizer"]["state"]) == set(opt_sd["state"])
    for i, entry in opt_sd["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(
                vec["optimizer"]["state"][i][key].float(), value.float(), rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    "kind,nesterov", [("sgd", False), ("sgd", True), ("adam", False), ("adamw", False)]
)
def test_one_stacked_step_equals_member_by_member_torch_optim(kind, nesterov):
    torch.manual_seed(0)
    cls = type("T", (FixedBatches,), {"optimizer": kind, "nesterov": nesterov})
    configs = _configs("sgd" if kind == "sgd" else "adam")
    if nesterov:
        for c in configs:
            c["momentum"] = max(c["momentum"], 0.3)
    spec, eng = _engine(cls, configs)
    x, y = _data(K * B, seed=3)
    # three steps, each member on its own batch: the first creates the optimiser state
    for step in range(3):
        spec.batch = (x.view(K, B, 6) + step, y.view(K, B))
        before = [eng.save(i) for i in range(K)]
        eng.train(list(range(K)), [1] * K, [None] * K, seed=step)
        for i in range(K):
            batch = (spec.batch[0][i], spec.batch[1][i])
            model_sd, opt_sd = _reference_step(cls, kind, nesterov, before[i], configs[i], batch)
            _assert_states_close(eng.save(i), model_sd, opt_sd)
    # the saved groups hold each member's own hyperparameters, as torch.optim's would
    group = eng.save(2)["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(configs[2]["lr"])
    assert group["weight_decay"] == pytest.approx(configs[2]["weight_decay"])


def test_plain_trainable_loads_a_stacked_slice_and_continues():
    configs = _configs("adam")
    spec, eng = _engine(ToyAdam, configs)
    eng.train(list(range(K)), [2] * K, [None] * K, seed=0)
    state = eng.save(1)
    plain = ToyAdam()
    plain.setup({**configs[1], "lr": 1.0})
    plain.load(state)
    plain.apply(configs[1])
    assert plain.steps == 2
    assert plain.opt.param_groups[0]["lr"] == pytest.approx(configs[1]["lr"])
    assert float(plain.opt.state_dict()["state"][0]["step"]) == 2 * Toy.batches_per_step
    metrics = plain.train()
    assert {"loss", "ce", "acc"} <= set(metrics) and plain.steps == 3
    # and back: the plain state loads into a slot unchanged
    eng.load(3, plain.save())
    again = eng.save(3)
    for name, value in plain.save()["model"].items():
        assert torch.equal(again["model"][name], value)
    assert again["extra"]["steps"] == 3


def test_exploit_copies_exactly_the_donors_slice():
    configs = _configs("adam")
    spec, eng = _engine(ToyAdam, configs)
    eng.train(list(range(K)), [1, 2, 3, 1], [None] * K, seed=0)
    before = [eng.save(i) for i in range(K)]
    # 0 takes 3's weights while 2 takes 0's (old) weights: all reads happen first
    eng.copy([0, 2], [3, 0])
    after = [eng.save(i) for i in range(K)]
    for dst, src in ((0, 3), (2, 0), (1, 1), (3, 3)):
        for name, value in before[src]["model"].items():
            assert torch.equal(after[dst]["model"][name], value)
        for i, entry in before[src]["optimizer"]["state"].items():
            for key, value in entry.items():
                assert torch.equal(after[dst]["optimizer"]["state"][i][key], value)
        assert after[dst]["extra"] == before[src]["extra"]


def test_a_chunk_trains_only_its_slots_and_a_shorter_task_stops_early():
    configs = _configs("sgd")
    _, eng = _engine(Toy, configs)
    before = [eng.save(i) for i in range(K)]
    reports = eng.train([1, 3], [1, 3], [None, None], seed=5)
    assert [len(r) for r in reports] == [1, 3]
    for i in (0, 2):  # not in the chunk: untouched
        for name, value in before[i]["model"].items():
            assert torch.equal(eng.save(i)["model"][name], value)
    assert [eng.save(i)["extra"]["steps"] for i in range(K)] == [0, 1, 0, 3]
    # slot 1 stopped after its one step: the same as training it for one step beside slot 3
    _, other = _engine(Toy, configs)
    other.train([1, 3], [1, 1], [None, None], seed=5)
    for name, value in other.save(1)["model"].items():
        torch.testing.assert_close(eng.save(1)["model"][name], value)


def test_per_member_dropout_and_shared_data_order():
    configs = _configs("sgd")
    for c, p in zip(configs, (0.0, 0.5, 0.0, 0.5)):
        c["p"] = p
    cls = type("Shared", (Toy,), {"shuffle": "shared"})
    spec, eng = _engine(cls, configs)
    # members 0 and 2 with identical weights and lr see identical batches: identical results
    eng.copy([2], [0])
    configs[2] = dict(configs[0])
    eng.set_config(2, configs[2])
    reports = eng.train(list(range(K)), [2] * K, [None] * K, seed=1)
    assert reports[0] == reports[2]
    for name, value in eng.save(0)["model"].items():
        torch.testing.assert_close(eng.save(2)["model"][name], value)


def test_members_see_their_own_data_order_by_default():
    configs = [dict(_configs("sgd")[0]) for _ in range(2)]
    spec, eng = _engine(Toy, configs)
    eng.copy([1], [0])
    reports = eng.train([0, 1], [1, 1], [None, None], seed=1)
    assert reports[0][0]["loss"] != reports[1][0]["loss"]


SPACE = {
    "lr": hp.loguniform(1e-2, 0.3),
    "momentum": hp.uniform(0.0, 0.95),
    "p": hp.uniform(0.0, 0.3),
    "coef": hp.uniform(0.0, 0.1),
}


def test_a_real_run_records_lineage_then_resumes_after_an_interruption(tmp_path):
    path = tmp_path / "run.db"
    cls = type("Interrupted", (Toy,), {"interrupt_at": 5})
    kw = dict(metric="acc", population=6, budget=hp.Steps(8), ready=2, seed=0)
    with pytest.raises(KeyboardInterrupt):
        hp.run(cls, SPACE, storage=path, backend="vectorized", **kw)
    partial = hp.load(path)
    assert partial.records() and max(r["step"] for r in partial.records()) < 8
    result = hp.resume(path, trainable=Toy)
    rows = result.records()
    assert max(r["step"] for r in rows) == 8
    keys = [(r["member"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing recorded twice across the interruption
    kinds = [e.kind for e in result.events]
    assert ev.EXPLOITED in kinds and ev.RUN_RESUMED in kinds
    assert result.events[0].data["settings"]["backend"] == "vectorized"
    assert result.lineage()  # who copied whom
    # the winner's schedule replays through the plain trainable (what the local backend runs)
    rep = hp.replay(result, "best", trainable=Toy)
    assert rep.steps >= 1 and 0.0 <= rep.score <= 1.0


def test_chunks_train_a_population_larger_than_the_chunk(tmp_path):
    result = hp.run(
        Toy,
        SPACE,
        metric="acc",
        population=5,
        budget=hp.Steps(4),
        ready=2,
        backend="vectorized",
        backend_options={"chunk_size": 2},
    )
    assert result.events[0].data["settings"]["workers"] == 2
    assert {r["member"] for r in result.records()} == set(range(5))


def test_shape_changing_hyperparameters_are_refused_by_name():
    space = {**SPACE, "batch_size": hp.choice([16, 32])}
    with pytest.raises(hp.RunError, match="batch_size"):
        hp.run(Toy, space, metric="acc", population=4, budget=2, backend="vectorized")
    spec, eng = _engine(Toy, _configs("sgd"))
    with pytest.raises(ShapeError, match="'width'.*backend='local'"):
        eng.check_configs([{**_configs("sgd")[0], "width": 8}])


def test_a_plain_trainable_is_refused_by_the_vectorized_backend(tmp_path):
    class Plain(hp.Trainable):
        def train(self):
            return {}

        def save(self):
            return None

        def load(self, state):
            pass

        def apply(self, config):
            pass

    with pytest.raises(TypeError, match="VectorizedTrainable"):
        VectorizedBackend().start(Plain, CheckpointStore(tmp_path / "c"))


def test_a_loader_gives_every_member_the_same_batches():
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    cls = type("Loaded", (Toy,), {"data": lambda self, config: loader, "batches_per_step": 4})
    configs = [dict(_configs("sgd")[0]) for _ in range(2)]
    spec, eng = _engine(cls, configs)
    eng.copy([1], [0])
    reports = eng.train([0, 1], [2, 2], [None, None], seed=0)
    assert reports[0] == reports[1]  # same weights, same batches: the same numbers
    plain = cls()
    plain.setup(configs[0])
    assert {"loss", "ce", "acc"} <= set(plain.train())


class FullBatch(Toy):
    """One batch per step holding every training row, no dropout: the data order cannot matter."""

    hyperparameters = ("coef",)
    batch_size = 96
    batches_per_step = None

    def loss(self, model, batch, hp):
        x, y = batch
        out = model(x)
        return F.cross_entropy(out, y) + hp["coef"] * out.pow(2).mean()

    def evaluate(self, model, hp):
        x, y = VAL
        return {"val_loss": F.cross_entropy(model(x), y)}


def test_replay_matches_a_vectorized_member_to_float_tolerance_when_the_batches_are_the_same():
    """docs/vectorized.md, "Replay": with the same batches (here: one full batch per step, no
    dropout), replaying a vectorized member through the plain trainable differs only by float
    rounding (vmap's batched kernels against one model's), within 1e-5 on the metric; with
    minibatches the data order differs and so does the replayed score (by noise, not rounding)."""
    space = {k: SPACE[k] for k in ("lr", "momentum", "coef")}
    kw = dict(metric="val_loss", mode="min", population=4, budget=hp.Steps(6), ready=2, seed=0)
    result = hp.run(FullBatch, space, backend="vectorized", **kw)
    assert ev.EXPLOITED in [e.kind for e in result.events]  # the schedule crosses an exploit
    rep = hp.replay(result, "best", trainable=FullBatch)
    assert rep.steps == 6 and len(rep.original_scores) == 6
    for step, original in rep.original_scores.items():
        assert rep.scores[step - 1] == pytest.approx(original, abs=1e-5, rel=1e-5)


# --- the automatic chunk size and threads ----------------------------------------------------
def _timings(per_thread: dict[int, float], calls: list[tuple[int, int | None]]):
    """A timing function that answers from a table and records what it was asked."""

    def measure(chunk: int, threads: int | None, parallel: int = 1) -> float:
        assert parallel == 1, "no parallel chunks asked for here"
        calls.append((chunk, threads))
        return per_thread[threads]

    return measure


def test_the_choice_is_deterministic_given_its_measurements():
    from hyperpop.backends.vectorized import choose, chunk_for

    mib = 2**20
    # a CNN's activations (1 MiB per member) under a 16 MiB budget: chunks of 16; an MLP's fit
    assert chunk_for(64, mib, 16 * mib) == 16
    assert chunk_for(64, 20_000, 16 * mib) == 64
    assert chunk_for(64, mib, 20 * mib) == 16  # equal chunks: 4 of 16, not 20, 20, 20, 4
    assert chunk_for(10, 1, 3) == 3 and chunk_for(5, 100, 10) == 1 and chunk_for(7, 0, 1) == 7
    for _ in range(2):  # the same measurements, the same choice
        calls: list[tuple[int, int | None]] = []
        choice = choose(
            64,
            _timings({2: 0.010, 1: 0.004}, calls),
            threads=[1, 2],
            per_member_bytes=mib,
            budget=16 * mib,
        )
        assert (choice.chunk_size, choice.threads, choice.source) == (16, 1, "measured")
        # the chunk that fits (16) and its half, no slower per member: the chunk stays; then
        # the thread counts on 8 members
        assert calls == [(16, 1), (8, 1), (8, 2)]
        assert [(c, t) for c, t, _, _ in choice.timings] == calls
    # a step bound by per-call overhead (a rollout of tiny steps): more members at once, less
    # time per member, so the chunk grows past the budget to the population, or to the cap
    calls = []

    def overhead(chunk: int, threads: int | None, parallel: int = 1) -> float:
        calls.append((chunk, threads))
        return 1.0 / chunk

    kw = dict(threads=[None], per_member_bytes=mib, budget=16 * mib)
    assert choose(64, overhead, **kw).chunk_size == 64
    assert calls == [(16, None), (8, None), (64, None)]
    assert choose(64, overhead, cap=32 * mib, **kw).chunk_size == 32
    assert choose(48, overhead, **kw).chunk_size == 48
    assert choose(64, overhead, chunk=8, threads=[1, 2]).chunk_size == 8  # given: kept
    assert choose(64, _timings({1: 1.0, 2: 0.5}, []), threads=[1, 2]).threads == 2
    assert choose(64, _timings({1: 1.0, 2: 1.0}, []), threads=[1, 2]).threads == 1  # first
    # more threads only when clearly faster (1.5x): they risk more on a busy machine
    assert choose(64, _timings({1: 1.0, 2: 0.8}, []), threads=[1, 2]).threads == 1
    # one thread count and nothing to measure: no timing at all
    calls = []
    given = choose(64, _timings({}, calls), chunk=8, threads=[3])
    assert (given.chunk_size, given.threads, given.source, calls) == (8, 3, "given", [])
    assert "8 members at once on 3 threads (given" in given.describe()


def test_measuring_changes_no_member_and_no_random_state():
    configs = _configs("sgd")
    _, eng = _engine(Toy, configs)
    before = [eng.save(i) for i in range(K)]
    rng = torch.get_rng_state()
    assert eng.measure([0, 1], 3, batches=2) > 0  # copies of slots 0, 1, 0
    assert eng.activation_bytes(list(range(K)), K) > 0
    assert torch.equal(torch.get_rng_state(), rng)
    for i in range(K):
        for name, value in before[i]["model"].items():
            assert torch.equal(eng.save(i)["model"][name], value)


class Sized(Toy):
    """Records how many members each call of batches() trains together."""

    sizes: list[int] = []

    def batches(self, members):
        Sized.sizes.append(members.size)
        yield from super().batches(members)


def _per_member_bytes() -> int:
    _, eng = _engine(Toy, _configs("sgd"))
    return eng.activation_bytes(list(range(K)), K)


def test_the_backend_chooses_reports_and_records_its_chunk_size(monkeypatch, caplog):
    import hyperpop.backends.vectorized as vb

    monkeypatch.setattr(vb, "cores", lambda: 4)
    calls: list[tuple[int, int | None]] = []
    # room for the activations of 2 members: 6 members train in 3 chunks of 2
    backend = VectorizedBackend(
        measure=_timings({1: 0.001, 4: 0.002}, calls), memory_budget=_per_member_bytes() * 5 // 2
    )
    Sized.sizes = []
    with caplog.at_level("INFO", logger="hyperpop"):
        result = hp.run(
            Sized,
            SPACE,
            metric="acc",
            population=6,
            budget=hp.Steps(2),
            ready=2,
            seed=0,
            backend=backend,
        )
    assert backend.choice is not None
    assert (backend.choice.chunk_size, backend.choice.threads) == (2, 1)
    assert calls == [(2, 1), (1, 1), (2, 4)]  # the chunk that fits, its half, then threads
    # measured on 4 (the activations, whether a step draws global random numbers), trained in 2s
    assert Sized.sizes[:2] == [4, 4] and set(Sized.sizes[2:]) == {2}
    assert {r["member"] for r in result.records()} == set(range(6))
    assert "vectorized backend: 2 members at once on 1 thread (measured" in caplog.text
    # every checkpoint records the choice (what a resume reads back)
    state = result.load_checkpoint()
    assert state["extra"]["vectorized"] == {"chunk_size": 2, "threads": 1, "parallel": 1}


def test_an_explicit_chunk_size_wins_and_nothing_is_measured_when_all_is_given(tmp_path):
    def boom(chunk: int, threads: int | None, parallel: int = 1) -> float:
        raise AssertionError("measured although everything was given")

    backend = VectorizedBackend(chunk_size=3, threads=1, measure=boom, memory_budget=1)
    result = hp.run(
        Toy, SPACE, metric="acc", population=5, budget=hp.Steps(2), ready=2, seed=0, backend=backend
    )
    assert backend.choice is not None and backend.capacity == 3
    assert (backend.choice.chunk_size, backend.choice.threads, backend.choice.source) == (
        3,
        1,
        "given",
    )
    assert result.events[0].data["settings"]["workers"] == 3
    assert VectorizedBackend(4096).chunk_size is None  # what an automatic run records: automatic
    assert VectorizedBackend(64).chunk_size == 64


def test_a_resume_reuses_the_recorded_choice_without_measuring(tmp_path, monkeypatch, caplog):
    import hyperpop.backends.vectorized as vb

    monkeypatch.setattr(vb, "cores", lambda: 4)
    path = tmp_path / "run.db"
    cls = type("Interrupted", (Toy,), {"interrupt_at": 3})
    first = VectorizedBackend(
        measure=_timings({1: 0.001, 4: 0.002}, []), memory_budget=_per_member_bytes() * 5 // 2
    )
    kw = dict(metric="acc", population=6, budget=hp.Steps(5), ready=2, seed=0)
    with pytest.raises(KeyboardInterrupt):
        hp.run(cls, SPACE, storage=path, backend=first, **kw)
    assert first.choice is not None and first.choice.chunk_size == 2

    def boom(chunk: int, threads: int | None, parallel: int = 1) -> float:
        raise AssertionError("a resume measured again")

    again = VectorizedBackend(measure=boom)
    with caplog.at_level("INFO", logger="hyperpop"):
        result = hp.resume(path, trainable=Toy, backend=again)
    assert again.choice is not None
    assert (again.choice.chunk_size, again.choice.threads, again.choice.source) == (
        2,
        1,
        "recorded",
    )
    assert "2 members at once on 1 thread (recorded)" in caplog.text
    assert max(r["step"] for r in result.records()) == 5
