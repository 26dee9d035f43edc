"""Replay: train one fresh model along the recorded hyperparameter schedule of a member.

PBT's result is not only a model but a schedule: which hyperparameters the winning weights were
trained with, step by step, across every copy from a donor. Replaying that schedule on a fresh
model (``setup`` with the first config, then ``apply`` at every change) checks that the schedule
alone reproduces the score, and gives a recipe that needs no population next time.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hyperpop.results import Result
from hyperpop.trainable import TrainableError, make_factory

__all__ = ["ReplayResult", "replay"]


@dataclass
class ReplayResult:
    """How a replay went.

    Attributes:
        member: the id of the member whose schedule was replayed.
        metric: the metric compared.
        mode: ``"max"`` or ``"min"``.
        steps: training steps replayed.
        schedule: the schedule followed (``{"step", "trained_by", "config"}`` entries).
        original_score: the score the member's weights were recorded with at ``steps``,
            following its lineage through every copy (None when the log does not hold it).
        score: the replayed model's score at ``steps``.
        scores: the replayed score after every step (index 0 is step 1).
        original_scores: the recorded scores of the same weights' lineage, by step.
        seconds: wall time of the replay.
        state: the trained model's state (``save()``), to use or export like a checkpoint.
    """

    member: int
    metric: str
    mode: str
    steps: int
    schedule: list[dict[str, Any]]
    original_score: float | None
    score: float
    scores: list[float] = field(default_factory=list)
    original_scores: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    #: the replayed model's state at the end (what its ``save()`` returned)
    state: Any = None

    @property
    def difference(self) -> float | None:
        """``score - original_score`` (None if the original is unknown)."""
        if self.original_score is None:
            return None
        return self.score - self.original_score

    @property
    def relative_difference(self) -> float | None:
        """``|difference| / max(|original_score|, 1e-12)``."""
        d = self.difference
        if d is None or self.original_score is None:
            return None
        return abs(d) / max(abs(self.original_score), 1e-12)

    @property
    def max_trajectory_difference(self) -> float | None:
        """Largest absolute gap between replayed and recorded scores along the lineage (None
        if the log holds none)."""
        gaps = [
            abs(self.scores[s - 1] - v)
            for s, v in self.original_scores.items()
            if 1 <= s <= len(self.scores)
        ]
        return max(gaps) if gaps else None

    def close(self, *, rtol: float = 0.01, atol: float = 1e-9) -> bool:
        """Whether the replayed final score is within ``atol + rtol * |original|``."""
        d = self.difference
        if d is None or self.original_score is None or math.isnan(d):
            return False
        return abs(d) <= atol + rtol * abs(self.original_score)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {
            "member": self.member,
            "metric": self.metric,
            "mode": self.mode,
            "steps": self.steps,
            "original_score": self.original_score,
            "score": self.score,
            "difference": self.difference,
            "relative_difference": self.relative_difference,
            "max_trajectory_difference": self.max_trajectory_difference,
            "seconds": self.seconds,
            "schedule": self.schedule,
        }


def replay(
    source: Result | str | os.PathLike[str],
    member: int | str = "best",
    *,
    trainable: Any = None,
    steps: int | None = None,
    threads: int | None = None,
) -> ReplayResult:
    """Train a fresh model along a member's recorded schedule and compare the scores.

    The model is built in this process as the run built it: ``setup(config)`` with the
    schedule's first config, then one ``train()`` per step, with ``apply(config)`` wherever the
    schedule changes, and at every copy from a donor along the lineage a fresh trainable
    (``setup(config)``, ``load(state)``, ``apply(config)``), as the receiving worker did.
    Randomness inside the trainable is the trainable's own: a deterministic trainable
    reproduces the recorded score exactly, a seeded one up to its noise.

    Args:
        source: a :class:`~hyperpop.Result` or the path of a run's store.
        member: the member's id, or ``"best"``.
        trainable: the trainable; default: imported from where the store says it came from.
        steps: replay only this many steps (default: the member's full training).
        threads: PyTorch threads while replaying (default: as many as each local worker of
            the run had, ``cores // workers``: floating-point sums depend on the thread count,
            so a different count drifts from the recorded scores; 1 for ``workers="auto"``).

    Returns:
        A :class:`ReplayResult`.

    Raises:
        KeyError: if the run has no such member.
        ValueError: if the member has no schedule or trained no step yet.
        hyperpop.RunError: if the trainable cannot be found and none was passed.
    """
    result = source if isinstance(source, Result) else Result.load(source)
    m = result.member(member)
    if not m.schedule or m.step < 1:
        raise ValueError(f"member {m.id} has not trained a step yet; nothing to replay")
    total = m.step if steps is None else int(steps)
    if not 1 <= total <= m.step:
        raise ValueError(f"steps must be in [1, {m.step}] for member {m.id}, got {steps!r}")
    if trainable is None:
        from hyperpop.userfile import load_trainable

        trainable = load_trainable(result.population.trainable)
    factory = make_factory(trainable)
    with _torch_threads(_threads(result, threads)):
        t0 = time.perf_counter()
        scores, state = _train(m, factory, total, result.metric)
    # the recorded scores of the same weights, step by step through every copy
    until = math.inf if m.seq is None else m.seq + 1
    original_scores = {
        step: math.nan if r.score is None else float(r.score)
        for step, r in result.data.lineage_reports(m.id, until).items()
        if step <= total
    }
    return ReplayResult(
        member=m.id,
        metric=result.metric,
        mode=result.mode,
        steps=total,
        schedule=[s for s in m.schedule if s["step"] < total],
        original_score=original_scores.get(total),
        score=scores[-1],
        scores=scores,
        original_scores=original_scores,
        seconds=time.perf_counter() - t0,
        state=state,
    )


def _threads(result: Result, threads: int | None) -> int:
    """``threads``, or as many as each local worker of the run had (``cores // workers``)."""
    if threads is not None:
        return threads
    recorded = result.population.settings.get("workers")
    if isinstance(recorded, int) or recorded is None:
        return max(1, (os.cpu_count() or 1) // max(recorded or 1, 1))
    return 1  # "auto": Ray actors that followed the cluster, one thread each (Ray's default)


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's thread count set to ``threads`` inside, if the trainable's module uses it."""
    torch = sys.modules.get("torch")  # imported by the trainable's module, if it uses it
    if torch is None:
        yield
        return
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)


def _fresh(factory: Callable[[], Any], config: dict[str, Any]) -> Any:
    """A new trainable set up with ``config``, as a worker builds one."""
    model = factory()
    model.config = config
    model.setup(config)
    return model


def _train(m: Any, factory: Callable[[], Any], total: int, metric: str) -> tuple[list[float], Any]:
    """Train a fresh model ``total`` steps along member ``m``'s schedule: its ``metric`` after
    every step, and its state at the end."""
    # where the run built the weights afresh: every copy from a donor (the receiver's worker
    # ran setup(config), load(donor's state), apply(config) there)
    copies = {
        b["step"]
        for a, b in zip(m.schedule, m.schedule[1:])
        if b["trained_by"] != a["trained_by"] and b["step"] > 0
    }
    # where the weights were reset (rejuvenation): fresh weights, or the trainable's reset(how)
    resets = {seg["step"]: seg["reset"] for seg in m.schedule if seg.get("reset")}
    config = m.config_at(1)
    model = _fresh(factory, config)
    scores: list[float] = []
    try:
        for step in range(1, total + 1):
            want = m.config_at(step)
            model = _next_model(
                model, factory, config, want, resets.get(step - 1), step - 1 in copies
            )
            config = want
            metrics = model.train()
            if metric not in metrics:
                raise TrainableError(
                    f"the trainable reported {sorted(metrics)} but not the run's metric "
                    f"{metric!r}; is this the trainable the run used?"
                )
            scores.append(float(metrics[metric]))
        return scores, model.save()
    finally:
        model.cleanup()


def _next_model(
    model: Any,
    factory: Callable[[], Any],
    config: dict[str, Any],
    want: dict[str, Any],
    reset: Any,
    copied: bool,
) -> Any:
    """The model that trains the next step with config ``want``, after a step trained with
    ``config``: built afresh on a full ``reset``, reset by the trainable on another one, built
    afresh from its own state where the run ``copied`` a donor, else given the new config."""
    if reset == "full":
        model.cleanup()
        return _fresh(factory, want)
    if reset:
        model.config = want
        model.reset(reset)
    elif copied:
        saved = model.save()
        model.cleanup()
        model = _fresh(factory, want)
        model.load(saved)
    elif want != config:
        model.config = want
    else:
        return model
    model.apply(want)
    return model
