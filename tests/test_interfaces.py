"""The seams the driver and the assembly use are declared, not probed: the backend registry,
what a Backend and a Store say about themselves, and the progress display."""

from __future__ import annotations

from pathlib import Path

import pytest

import hyperpop as hp
from hyperpop.backends import BACKENDS, Backend, backend_class, get_backend
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.live import FunctionView, LogProgress, View
from hyperpop.population import Population
from hyperpop.store.sqlite import MemoryStore, SQLiteStore


def test_the_registry_names_every_backend_and_builds_them() -> None:
    assert BACKENDS == ("local", "ray", "simulated", "vectorized")
    for name in ("local", "simulated"):
        assert backend_class(name).name == name
    built = get_backend("simulated", 3)
    assert isinstance(built, SimulatedBackend) and built.capacity == 3
    assert get_backend("simulated").capacity == 2  # the backend's own default
    assert get_backend(built) is built
    with pytest.raises(ValueError, match="unknown backend 'rey'"):
        backend_class("rey")
    with pytest.raises(ValueError, match="a Backend instance is used as it is"):
        get_backend(built, duration=None)


def test_backends_declare_their_clock_and_log_folder(tmp_path: Path) -> None:
    sim = SimulatedBackend(1)
    assert sim.simulated_seconds() == 0.0
    assert sim.log_dir is None
    local = backend_class("local")(1)
    assert local.simulated_seconds() is None  # real time
    local.set_log_dir(tmp_path / "logs")
    assert local.log_dir == str(tmp_path / "logs")
    assert isinstance(local, Backend)


def test_a_store_says_who_holds_its_writer_lease(tmp_path: Path) -> None:
    assert MemoryStore().writer() is None  # no lease in memory
    store = SQLiteStore(tmp_path / "x.db", write=True)
    try:
        since = (store.writer() or {}).get("since")
        assert isinstance(since, float)
        reader = SQLiteStore(tmp_path / "x.db")
        assert (reader.writer() or {}).get("since") == since
        reader.close()
    finally:
        store.close()
    assert SQLiteStore(tmp_path / "x.db").writer() is None  # the lease went with the writer


class Climb(hp.Trainable):
    def setup(self, config: dict[str, float]) -> None:
        self.x, self.lr = 0.0, config["lr"]

    def train(self) -> dict[str, float]:
        self.x += self.lr
        return {"score": self.x}

    def save(self) -> float:
        return self.x

    def load(self, state: float) -> None:
        self.x = state

    def apply(self, config: dict[str, float]) -> None:
        self.lr = config["lr"]


def test_a_callers_progress_callable_gets_the_population() -> None:
    seen: list[int] = []
    hp.run(
        Climb,
        {"lr": hp.uniform(0.1, 1.0)},
        metric="score",
        population=2,
        budget=4,
        ready=2,
        backend="simulated",
        progress=lambda pop: seen.append(pop.reports),
    )
    assert seen and seen[-1] == 8  # shown at the end too, with every report folded


def test_hyperpops_views_are_views_and_a_callable_is_wrapped() -> None:
    calls: list[Population] = []
    view = FunctionView(calls.append)
    pop = Population()
    view(pop, None)
    view.note("ignored")
    view.close()
    assert calls == [pop]
    assert isinstance(LogProgress(), View)


def test_the_controller_says_who_finishes_after_a_budget_change() -> None:
    from test_controller import Pop, controller

    from hyperpop.controller import Steps

    p = Pop(4)
    p.interval(0, [1.0, 2.0, 3.0, 4.0])  # 4 steps
    p.interval(1, [1.0, 2.0])  # 2 steps
    p.interval(2, [1.0, 2.0, 3.0, 4.0])  # 4 steps, but training now
    c = controller(budget=[Steps(3)])
    assert c.after_budget_change(p.pop, busy={2}) == ([0], [1, 3])
    c.set_budget([Steps(10)])
    assert c.after_budget_change(p.pop, busy=set()) == ([], [0, 1, 2, 3])
    config = c.new_config()
    assert 0.0 <= config["lr"] <= 1.0 and c.new_config() != config  # the run's generator
