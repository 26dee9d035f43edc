"""The interfaces every exploit and explore strategy implements, and the context they get."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from hyperpop.population import MemberState, Population
from hyperpop.ranking import Ranking
from hyperpop.space import Space
from hyperpop.summary import GROUP_RULES

__all__ = ["Context", "ExploitStrategy", "ExploreStrategy"]


class Context:
    """What a strategy may look at when it decides for one member.

    The controller builds one per decision (see :meth:`hyperpop.controller.Controller.decide`).

    Args:
        mode: ``"max"`` or ``"min"``.
        rng: the controller's seeded generator (use it for every random choice).
        population: the whole population state (history, lineage, settings).
        space: the search space.
        candidate_ids: ids of the members that may serve as donors (the deciding member
            included), as an array: lets strategies such as truncation rank 10,000 members
            with numpy.
        candidate_scores: each candidate's score as the controller compares it with the
            deciding member: at equal progress in asynchronous mode (see
            :meth:`hyperpop.controller.Controller.comparable`), the ready score otherwise (NaN
            for none). :meth:`value` and :meth:`arrays` return these.
        now: the current time as the driver sees it.
        batch: configs already chosen by other members deciding in the same round (for batch
            strategies such as PB2 that must spread their picks).

    The candidates' states are the :attr:`candidates` property; :attr:`ranking` says which
    scores are better.
    """

    def __init__(
        self,
        *,
        mode: str,
        rng: np.random.Generator,
        population: Population,
        space: Space,
        candidate_ids: np.ndarray,
        candidate_scores: np.ndarray,
        now: float = 0.0,
        batch: list[dict[str, Any]] | None = None,
    ):
        ids = np.asarray(candidate_ids, dtype=np.int64)
        scores = np.asarray(candidate_scores, dtype=float)
        if ids.shape != scores.shape or ids.ndim != 1:
            raise ValueError(
                "Context needs one candidate score per candidate id, got arrays of shape "
                f"{ids.shape} and {scores.shape}"
            )
        self.mode, self.rng, self.population, self.space = mode, rng, population, space
        #: which scores are better (:attr:`mode` as a :class:`~hyperpop.ranking.Ranking`)
        self.ranking = Ranking.of(mode)
        self.candidate_ids, self.candidate_scores = ids, scores
        self.now = now
        self.batch: list[dict[str, Any]] = [] if batch is None else batch
        self._candidates: list[MemberState] | None = None

    @property
    def candidates(self) -> list[MemberState]:
        """The candidates' states, in candidate order (built on first use)."""
        if self._candidates is None:
            members = self.population.members
            self._candidates = [members[int(i)] for i in self.candidate_ids]
        return self._candidates

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Candidates' ids and their scores oriented so that higher is better (NaN is
        ``-inf``), as numpy arrays in candidate order."""
        return self.candidate_ids, self.ranking.oriented_array(self.candidate_scores)

    def member(self, member_id: int) -> MemberState:
        """A member of the population by id."""
        return self.population.members[int(member_id)]

    def random_other(self, member: MemberState) -> MemberState | None:
        """A candidate other than ``member``, drawn with :attr:`rng` (None: there is none)."""
        others = [m for m in self.candidates if m.id != member.id]
        return others[int(self.rng.integers(len(others)))] if others else None

    def value(self, m: MemberState) -> float:
        """The member's ranking score oriented so that higher is better (NaN is worst): its
        entry in ``candidate_scores`` when it is a candidate, else its ready score."""
        at = np.flatnonzero(self.candidate_ids == m.id)
        return self.oriented(float(self.candidate_scores[at[0]]) if len(at) else m.ready_score)

    def oriented(self, score: float | None) -> float:
        """A raw score oriented so that higher is better (None and NaN are worst)."""
        return self.ranking.oriented(score)


class ExploitStrategy(ABC):
    """Chooses whose weights a member should copy at a ready point."""

    #: short name used in settings and tables
    name: str = "exploit"

    @abstractmethod
    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        """Return the donor to copy, ``member`` itself to keep the weights but still explore,
        or None to carry on unchanged."""

    def inherit(
        self, member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any] | None:
        """The hyperparameters ``member`` trains with after copying ``donor``, or None (the
        default) to let the explore strategy draw them from the donor's. Called right after
        :meth:`select` returned ``donor``, with the same context."""
        return None

    def bind(self, space: Space) -> None:  # noqa: B027 - optional hook
        """Check the strategy's settings against the space; called once when a run starts."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings (recorded in the store)."""
        return {"name": self.name}

    def group_label(self, member: int, population: int | None = None) -> str | None:
        """The name of member ``member``'s sub-population or role in a run whose initial
        population is ``population`` (None: unknown), or None (the default) for a strategy
        that does not split the population. Must be a pure function of the id and the
        settings: the read side asks a strategy rebuilt from the recorded ones."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # a strategy with groups tells the read side (which sits below it) how to label members
        if "name" in vars(cls) and cls.group_label is not ExploitStrategy.group_label:
            GROUP_RULES[cls.name] = cls._recorded_group

    @classmethod
    def _recorded_group(cls, settings: Mapping[str, Any], member: int) -> str | None:
        """:meth:`group_label` of the strategy recorded in a run's ``settings``, rebuilt from
        its ``describe()`` as a resume does (None when the recorded settings no longer build)."""
        described = dict(settings.get("exploit") or {})
        described.pop("name", None)
        key = (cls, json.dumps(described, sort_keys=True, default=str))
        strategy = _RECORDED.get(key)
        if strategy is None:
            try:
                strategy = _RECORDED[key] = cls(**described)
            except (TypeError, ValueError):
                return None
        n = settings.get("population")
        population = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
        return strategy.group_label(int(member), population)


#: strategies rebuilt from recorded settings, for :meth:`ExploitStrategy.group_label`
_RECORDED: dict[tuple[type, str], ExploitStrategy] = {}


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
