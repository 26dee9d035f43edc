"""Every store and every backend of hyperpop passes the contract suites of hyperpop.testing."""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ray_local import local_ray

from hyperpop.backends.base import Backend
from hyperpop.backends.local import LocalBackend
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.store.base import Store
from hyperpop.store.requests import Request, RequestLog
from hyperpop.store.sqlite import MemoryStore, SQLiteStore
from hyperpop.testing import BackendContract, StoreContract
from hyperpop.trainable import Trainable

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_RAY = importlib.util.find_spec("ray") is not None


# --- stores --------------------------------------------------------------------------------------
class TestSQLiteStore(StoreContract):
    def make_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(tmp_path / "run.db", write=True)

    def send_request(self, store: Store, request: Request) -> Request:
        assert store.path is not None
        return RequestLog(store.path).append(request)

    def open_reader(self, store: Store) -> Store | None:
        assert store.path is not None
        return SQLiteStore(store.path)

    def open_writer(self, store: Store) -> Store | None:
        assert store.path is not None
        return SQLiteStore(store.path, write=True)

    def make_versioned(self, tmp_path: Path, version: int) -> Callable[[], Store] | None:
        path = tmp_path / "old.db"
        SQLiteStore(path, write=True).close()
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
        conn.close()
        return lambda: SQLiteStore(path)


class TestMemoryStore(StoreContract):
    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()

    def send_request(self, store: Store, request: Request) -> Request:
        assert isinstance(store, MemoryStore)
        return store.add_request(request)


# --- backends ------------------------------------------------------------------------------------
class TestSimulatedBackend(BackendContract):
    def make_backend(self, workers: int) -> Backend:
        return SimulatedBackend(workers)


class TestLocalBackend(BackendContract):
    def make_backend(self, workers: int) -> Backend:
        return LocalBackend(workers, threads_per_worker=1)


if HAS_TORCH:
    import torch
    from torch import nn

    from hyperpop.backends.vectorized import VectorizedBackend
    from hyperpop.vectorized import Members, VectorizedTrainable

    class Line(VectorizedTrainable):
        """A linear fit; a member whose ``fail`` is set makes its training step raise."""

        hyperparameters = ("fail",)
        batch_size = 8
        batches_per_step = 1

        def build_model(self, config: dict[str, Any]) -> nn.Module:
            return nn.Linear(2, 1)

        def data(self, config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.linspace(-1, 1, 32).reshape(16, 2)
            return x, x.sum(1, keepdim=True)

        def loss(self, model: Any, batch: Any, hp: Any) -> torch.Tensor:
            x, y = batch
            return (model(x) - y).pow(2).mean()

        def batches(self, members: Members) -> Iterator[Any]:
            if bool((members.hp["fail"] > 0).any()):
                raise ValueError("Line fails as its config asks")
            yield from super().batches(members)


@pytest.mark.skipif(not HAS_TORCH, reason="the vectorized backend needs PyTorch")
class TestVectorizedBackend(BackendContract):
    def make_backend(self, workers: int) -> Backend:
        return VectorizedBackend(workers, threads=1)

    def trainable(self) -> Callable[[], Trainable]:
        return Line


@pytest.fixture(scope="class")
def ray_backend() -> Iterator[Any]:
    """The tests' local Ray cluster (2 CPUs) and one Ray backend that keeps its actors warm between
    the checks: each start opens a new session on them, with nothing of the last one's members
    (a cold start costs 3-4 s of actors)."""
    from hyperpop.backends.ray import RayBackend

    local_ray()
    backend = RayBackend(BackendContract.workers, keep_actors=True)
    yield backend
    backend.close()


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
@pytest.mark.skipif(not HAS_RAY, reason="the ray backend needs Ray")
class TestRayBackend(BackendContract):
    @pytest.fixture(autouse=True)
    def _warm(self, ray_backend: Any) -> None:
        self.warm = ray_backend

    def make_backend(self, workers: int) -> Backend:
        assert workers == self.warm.workers or not self.warm.workers
        return self.warm  # type: ignore[no-any-return]
