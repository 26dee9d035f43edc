"""Decide: when a member is ready, whether it exploits, explores, is rejuvenated or stops.

The controller is pure logic over a :class:`~hyperpop.population.Population`: no I/O, no clock
except the ``now`` it is handed, no backend, no store. Feed it a population and a member that just
reached a ready point; it returns :class:`Decision` objects that the driver turns into events.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any, cast

import numpy as np

from hyperpop.candidates import Copies, comparable
from hyperpop.criteria import (
    Budget,
    Ready,
    Rejuvenate,
    Steps,
    Target,
    WallTime,
    budget_from_dict,
    step_limit,
)
from hyperpop.decisions import (
    Continue,
    Decision,
    Exploit,
    Explore,
    Finish,
    Interval,
    Kind,
    Queue,
    Reset,
    Wait,
    decision_events,
)
from hyperpop.population import MemberState, Population
from hyperpop.ranking import Ranking
from hyperpop.space import Space
from hyperpop.strategies import Context, ExploitStrategy, ExploreStrategy

# the rules people set (hyperpop.criteria) and the decisions (hyperpop.decisions) are
# re-exported: ``from hyperpop.controller import Steps, Decision`` keeps working
__all__ = [
    "Budget",
    "Rejuvenate",
    "Continue",
    "Controller",
    "Decision",
    "Exploit",
    "Explore",
    "Finish",
    "Interval",
    "Kind",
    "Queue",
    "Reset",
    "Wait",
    "Ready",
    "Steps",
    "Target",
    "WallTime",
    "budget_from_dict",
    "decision_events",
]


class Controller:
    """PBT's decision logic.

    Args:
        space: the search space.
        mode: ``"max"`` or ``"min"``.
        ready: the ready criterion.
        budget: stopping criteria (any of them ends a member or the run).
        exploit: the exploit strategy.
        explore: the explore strategy.
        synchronous: decide by generation (every live member reaches the same ready point,
            then all decide at once) instead of as each member becomes ready.
        rejuvenate: a :class:`Rejuvenate` (or its patience: ready points without
            improvement before a stalled member's weights are reset while its hyperparameter
            lineage goes on); None: never.
        max_lead: asynchronous mode with ready points by steps: a member does not start an
            interval while it is this many ready intervals or more ahead of a member still
            training (its worker takes a member further behind, or waits). Keeps members
            comparable when one worker is much slower than the others; None: no limit.
        seed: seed of the controller's random generator.
    """

    def __init__(
        self,
        space: Space,
        *,
        mode: str,
        ready: Ready,
        budget: list[Budget],
        exploit: ExploitStrategy,
        explore: ExploreStrategy,
        synchronous: bool = False,
        rejuvenate: Rejuvenate | int | None = None,
        max_lead: int | None = 4,
        seed: int | None = 0,
    ):
        #: which scores are better (raises ValueError for a mode other than max or min)
        self.ranking = Ranking(mode)
        if max_lead is not None and (
            isinstance(max_lead, bool) or not isinstance(max_lead, int) or max_lead < 1
        ):
            raise ValueError(f"max_lead must be a positive int or None, got {max_lead!r}")
        self.space, self.mode, self.ready = space, mode, ready
        self.budget = list(budget)
        self.exploit, self.explore = exploit, explore
        exploit.bind(space)
        explore.bind(space)
        self.synchronous = synchronous
        self.rejuvenate = Rejuvenate.of(rejuvenate)
        self.max_lead = max_lead
        #: every decision draws from its own generator, keyed by (seed, member, the member's
        #: ready points, its resets): a decision is a pure function of the fold, so a resumed
        #: run decides exactly as the uninterrupted one would have
        if seed is None:  # a SeedSequence made without entropy draws an int from the OS
            seed = cast(int, np.random.SeedSequence().entropy)
        self.seed = int(seed) % 2**63
        #: for draws outside decisions (members added to a running population)
        self.rng = np.random.default_rng(self.seed)
        self.set_budget(self.budget)
        self._waiting: set[int] = set()
        self._undecided: set[int] = set()
        self._copies = Copies()

    def set_budget(self, budget: list[Budget]) -> None:
        """Replace the stopping criteria (a person changed the run's budget)."""
        self.budget = list(budget)
        self.max_steps = step_limit(self.budget)
        self.targets = [b.score for b in self.budget if isinstance(b, Target)]
        self.wall = min((b.seconds for b in self.budget if isinstance(b, WallTime)), default=None)

    def after_budget_change(
        self, pop: Population, busy: Collection[int]
    ) -> tuple[list[int], list[int]]:
        """Once the budget changed: the live members neither training (``busy``) nor waiting at
        a ready point, as those that must finish (no steps left) and those that train on (the
        others are decided at their ready point)."""
        finish: list[int] = []
        train: list[int] = []
        for m in pop.alive():
            if m.id in busy or m.id in self.waiting:
                continue
            (finish if self._done(m) else train).append(m.id)
        return finish, train

    def new_config(self) -> dict[str, Any]:
        """A config for a member added to the running population, drawn from the space (with
        the generator kept for draws outside decisions)."""
        return self.space.sample(self.rng)

    # --- what to train next ----------------------------------------------------------------
    def interval(self, m: MemberState) -> Interval:
        """The next stretch of training for member ``m``."""
        steps = self.ready.steps
        if self.max_steps is not None:
            left = max(self.max_steps - m.step, 1)
            steps = left if steps is None else min(steps, left)
        return Interval(steps=steps, seconds=self.ready.seconds)

    @property
    def lead_limit(self) -> int | None:
        """Steps a member may be ahead of a member still training before it waits (None: no
        limit; see ``max_lead``)."""
        if self.synchronous or self.max_lead is None or self.ready.steps is None:
            return None
        return self.max_lead * self.ready.steps

    def _done(self, m: MemberState) -> bool:
        return self.max_steps is not None and m.step >= self.max_steps

    # --- run-level stop ----------------------------------------------------------------------
    def stop_reason(self, pop: Population, elapsed: float) -> str | None:
        """Why the whole run should stop now, or None."""
        if self.wall is not None and elapsed >= self.wall:
            return f"wall time of {self.wall:g}s reached"
        for target in self.targets:
            for m in pop.members.values():
                if self.ranking.reached(m.ready_score, target):
                    return f"member {m.id} reached the target score {target:g}"
        if pop.members and not pop.alive():
            return "every member finished"
        return None

    # --- ready points ------------------------------------------------------------------------
    @property
    def waiting(self) -> frozenset[int]:
        """Synchronous mode: members at the generation barrier (not to be scheduled)."""
        return frozenset(self._waiting)

    def restore(self, pop: Population) -> None:
        """Rebuild in-memory state after a resume (synchronous waiting set, asynchronous ready
        points not decided yet)."""
        self._waiting = set()
        self._undecided = set()
        self._copies = Copies()
        if not self.synchronous:
            self._undecided = {m.id for m in pop.alive() if m.ready_count and not m.decided}
        if self.synchronous:
            alive = pop.alive()
            if alive:
                low = min(m.ready_count for m in alive)
                self._waiting = {m.id for m in alive if m.ready_count > low}

    def on_ready(self, pop: Population, member: int, now: float) -> list[Decision]:
        """Decide for ``member``, which just reached a ready point (its interval is folded in).

        Returns decisions for every member that can move on. In asynchronous mode a ``finish``
        for a member at the end of its budget, else a ``queue``: the decision is taken by
        :meth:`decide` when the member gets a worker, over the population as it stands then.
        With more members than workers a member waits in the queue while the members behind it
        catch up, so deciding then compares it with everyone at its progress instead of the
        few that happened to be as far along when it arrived. In synchronous mode either a
        ``wait`` for it or, when its arrival completes the generation, decisions for every
        waiting member.
        """
        m = pop.members[member]
        if not self.synchronous:
            if self._done(m):
                self._undecided.discard(m.id)
                return [Finish(m.id, "step budget reached")]
            self._undecided.add(m.id)
            return [Queue(m.id)]
        if self._done(m):
            return [Finish(m.id, "step budget reached"), *self.release(pop, now, leaving=m.id)]
        self._waiting.add(m.id)
        released = self.release(pop, now)
        return released or [Wait(m.id)]

    def decide(self, pop: Population, member: int, now: float) -> list[Decision]:
        """Asynchronous mode: the decision for a queued ``member`` about to get a worker (an
        empty list when its ready point is already decided)."""
        if member not in self._undecided:
            return []
        self._undecided.discard(member)
        m = pop.members[member]
        if not m.alive:
            return []
        return [self._decide(pop, m, now, batch=[])]

    def release(self, pop: Population, now: float, leaving: int | None = None) -> list[Decision]:
        """Synchronous mode: if every live member has reached the barrier, decide for all.

        Call it whenever a member leaves the population (finishes or fails for good) so that a
        crashed member never holds a generation up.
        """
        if not self.synchronous or not self._waiting:
            return []
        alive = [m for m in pop.alive() if m.id != leaving]
        if any(m.id not in self._waiting for m in alive):
            return []
        waiting = [pop.members[i] for i in sorted(self._waiting) if pop.members[i].alive]
        self._waiting = set()
        batch: list[dict[str, Any]] = []
        return [self._decide(pop, m, now, batch=batch) for m in waiting]

    def _leads(self, pop: Population, m: MemberState) -> bool:
        """Whether ``m`` holds the population's best ready score (never rejuvenated: resetting
        it would throw away the best weights)."""
        mine = m.ready_score
        if mine is None or math.isnan(mine):
            return False
        sign = self.ranking.sign
        scores = pop.index.score[pop.index.ok]  # members with a ready score, not failed
        return not np.any(sign * scores > sign * mine)  # NaN compares False

    def comparable(self, pop: Population, m: MemberState) -> tuple[np.ndarray, np.ndarray]:
        """Donor candidates for ``m`` and their ranking scores at ``m``'s progress (see
        :func:`hyperpop.candidates.comparable`; ``max_lead`` bounds how far behind ``m`` a
        candidate may be)."""
        return comparable(
            pop,
            m,
            ranking=self.ranking,
            lead_limit=self.lead_limit,
            max_steps=self.max_steps,
            copies=self._copies,
        )

    def _rng(self, m: MemberState) -> np.random.Generator:
        return np.random.default_rng([self.seed, m.id, m.ready_count, m.rejuvenations])

    def _decide(
        self, pop: Population, m: MemberState, now: float, batch: list[dict[str, Any]]
    ) -> Decision:
        if self._done(m):
            return Finish(m.id, "step budget reached")
        if m.pinned or m.decided:
            # pinned by a person (never copies, never reset, never explored), or a person
            # already decided this ready point (set its hyperparameters, made it copy)
            return Continue(m.id)
        if m.step < self.ready.burn_in:
            return Continue(m.id)
        rj = self.rejuvenate
        if rj is not None and m.reset_step is not None and m.ready_since_reset <= rj.grace:
            return Continue(m.id)  # a fresh start gets its chance
        if rj is not None and m.stall >= rj.patience and not self._leads(pop, m):
            rng = self._rng(m)
            if rj.config == "resample":
                config = self.space.sample(rng)
            elif rj.config == "keep":
                config = m.config
            else:
                config = self.space.perturb(m.config, rng)
            batch.append(config)
            return Reset(m.id, config, rj.reset)
        ids, scores = self.comparable(pop, m)
        ctx = Context(
            mode=self.mode,
            rng=self._rng(m),
            population=pop,
            space=self.space,
            now=now,
            batch=batch,
            candidate_ids=ids,
            candidate_scores=scores,
        )
        donor = self.exploit.select(m, ctx)
        if donor is None:
            return Continue(m.id)
        if donor.id == m.id:
            config = self.explore.explore(m.config, m, m, ctx)
            batch.append(config)
            if config == m.config:
                return Continue(m.id)
            return Explore(m.id, config, self.explore.name)
        assert donor.checkpoint is not None
        info = pop.blobs[donor.checkpoint]
        # the exploit strategy may choose the hyperparameters itself (MF-PBT's migrations);
        # else the explore strategy draws them from the donor's
        chosen = self.exploit.inherit(m, donor, ctx)
        if chosen is None:
            config, how = self.explore.explore(info.config, m, donor, ctx), self.explore.name
        else:
            config, how = chosen, self.exploit.name
        batch.append(config)
        return Exploit(m.id, donor.id, donor.checkpoint, donor.checkpoint_step, config, how)
