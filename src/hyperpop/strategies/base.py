"""The interfaces every exploit and explore strategy implements, and the context they get."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hyperpop.population import MemberState, Population
from hyperpop.space import Space

__all__ = ["Context", "ExploitStrategy", "ExploreStrategy"]


@dataclass
class Context:
    """What a strategy may look at when it decides for one member.

    Attributes:
        mode: ``"max"`` or ``"min"``.
        rng: the controller's seeded generator (use it for every random choice).
        candidates: members with a ready score that may serve as donors (the deciding member
            included). Built on first use when the controller passed ``candidate_ids``.
        population: the whole population state (history, lineage, settings).
        space: the search space.
        now: the current time as the driver sees it.
        batch: configs already chosen by other members deciding in the same round (for batch
            strategies such as PB2 that must spread their picks).
        candidate_ids: the candidates' ids as an array (with ``candidate_scores``, their
            ranking scores): lets strategies such as truncation rank 10,000 members with numpy.
        candidate_scores: each candidate's score as the controller compares it with the
            deciding member: at equal progress in asynchronous mode (see
            :meth:`hyperpop.controller.Controller.comparable`), the ready score otherwise.
            :meth:`value` and :meth:`arrays` return these.
    """

    mode: str
    rng: np.random.Generator
    candidates: Sequence[MemberState] | None
    population: Population
    space: Space
    now: float = 0.0
    batch: list[dict[str, Any]] = field(default_factory=list)
    candidate_ids: np.ndarray | None = None
    candidate_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.candidates is None:
            if self.candidate_ids is None:
                raise ValueError("Context needs candidates or candidate_ids")
            members = self.population.members
            self.candidates = _Lazy(lambda: [members[int(i)] for i in self.candidate_ids])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Candidates' ids and their ready scores oriented so that higher is better (NaN and
        missing scores are ``-inf``), as numpy arrays in candidate order."""
        if self.candidate_ids is not None and self.candidate_scores is not None:
            ids, raw = self.candidate_ids, np.asarray(self.candidate_scores, dtype=float)
        else:
            cands = list(self.candidates)
            ids = np.array([m.id for m in cands], dtype=np.int64)
            raw = np.array(
                [math.nan if m.ready_score is None else m.ready_score for m in cands], dtype=float
            )
        values = raw if self.mode == "max" else -raw
        return ids, np.where(np.isnan(values), -math.inf, values)

    def member(self, member_id: int) -> MemberState:
        """A candidate by id."""
        if self.candidate_ids is not None:
            return self.population.members[int(member_id)]
        for m in self.candidates:
            if m.id == member_id:
                return m
        raise KeyError(member_id)

    def value(self, m: MemberState) -> float:
        """The member's ranking score oriented so that higher is better (NaN is worst): its
        entry in ``candidate_scores`` when it is a candidate, else its ready score."""
        s = m.ready_score
        if self.candidate_ids is not None and self.candidate_scores is not None:
            at = np.flatnonzero(self.candidate_ids == m.id)
            if len(at):
                s = float(self.candidate_scores[at[0]])
        if s is None or math.isnan(s):
            return -math.inf
        return s if self.mode == "max" else -s

    def oriented(self, score: float) -> float:
        """A raw score oriented so that higher is better (NaN is worst)."""
        if score is None or math.isnan(score):
            return -math.inf
        return score if self.mode == "max" else -score


class _Lazy(Sequence):
    """A list built on first access."""

    def __init__(self, build: Any):
        self._build = build
        self._items: list[Any] | None = None

    def _get(self) -> list[Any]:
        if self._items is None:
            self._items = self._build()
        return self._items

    def __getitem__(self, i: Any) -> Any:
        return self._get()[i]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Any:
        return iter(self._get())


class ExploitStrategy(ABC):
    """Chooses whose weights a member should copy at a ready point."""

    #: short name used in settings and tables
    name: str = "exploit"

    @abstractmethod
    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        """Return the donor to copy, ``member`` itself to keep the weights but still explore,
        or None to carry on unchanged."""

    def bind(self, space: Space) -> None:  # noqa: B027 - optional hook
        """Check the strategy's settings against the space; called once when a run starts."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (recorded in the store)."""
        return {"name": self.name}


class ExploreStrategy(ABC):
    """Chooses the hyperparameters a member trains with after an exploit."""

    name: str = "explore"

    @abstractmethod
    def explore(
        self, config: dict[str, Any], member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any]:
        """Return the new config, starting from the donor's ``config``."""

    def bind(self, space: Space) -> None:  # noqa: B027 - optional hook
        """Check the strategy's settings against the space; called once when a run starts."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (recorded in the store)."""
        return {"name": self.name}
