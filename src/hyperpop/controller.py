"""Decide: when a member is ready, whether it exploits, explores, is rejuvenated or stops.

The controller is pure logic over a :class:`~hyperpop.population.Population`: no I/O, no clock
except the ``now`` it is handed, no backend, no store. Feed it a population and a member that just
reached a ready point; it returns :class:`Decision` objects that the driver turns into events.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, cast

import numpy as np

from hyperpop.population import MemberState, Population
from hyperpop.ranking import Ranking
from hyperpop.space import Space
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event
from hyperpop.strategies import Context, ExploitStrategy, ExploreStrategy

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
    "decision_events",
]


@dataclass(frozen=True)
class Ready:
    """When a member is ready: every ``steps`` training steps or ``seconds`` of training.

    Args:
        steps: training steps between ready points.
        seconds: or seconds of training between ready points (wins over ``steps`` if both).
        burn_in: no exploit before a member's model has trained this many steps.
    """

    steps: int | None = 4
    seconds: float | None = None
    burn_in: int = 0

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise ValueError("Ready needs steps or seconds")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"Ready(steps=...) must be a positive int, got {self.steps!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"Ready(seconds=...) must be positive, got {self.seconds!r}")
        if self.burn_in < 0:
            raise ValueError(f"burn_in must be >= 0, got {self.burn_in!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"steps": self.steps, "seconds": self.seconds, "burn_in": self.burn_in}


@dataclass(frozen=True)
class Rejuvenate:
    """Rejuvenation: reset a stalled member's weights, keep its hyperparameter lineage.

    Args:
        patience: ready points without improvement before the reset.
        config: the hyperparameters it trains with after the reset: ``"explore"`` (perturbed
            from its current ones, default), ``"keep"`` (its current ones) or ``"resample"``
            (fresh from the space).
        reset: ``"full"`` (fresh weights from ``setup(config)``, default) or a name passed to
            the trainable's ``reset(how)`` hook for a partial reset (``TorchTrainable``
            knows ``"shrink_perturb"`` and ``"reinit:<module>,<module>"``).
        grace: ready points after a reset during which the member is neither copied over
            nor reset again, so its fresh start gets a chance.

    The member keeps its step count and its schedule goes on, with the reset marked in it;
    the member holding the population's best ready score is never reset.
    """

    patience: int
    config: str = "explore"
    reset: str = "full"
    grace: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int):
            raise ValueError(f"rejuvenate patience must be an int, got {self.patience!r}")
        if self.patience < 1:
            raise ValueError("rejuvenate must be a positive number of ready points or None")
        if self.config not in ("explore", "keep", "resample"):
            raise ValueError(
                f"Rejuvenate(config=...) must be 'explore', 'keep' or 'resample', "
                f"got {self.config!r}"
            )
        if not isinstance(self.reset, str) or not self.reset:
            raise ValueError(f"Rejuvenate(reset=...) must be 'full' or a name, got {self.reset!r}")
        if not isinstance(self.grace, int) or self.grace < 0:
            raise ValueError(f"Rejuvenate(grace=...) must be an int >= 0, got {self.grace!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {"patience": self.patience, "config": self.config, "reset": self.reset,
                "grace": self.grace}  # fmt: skip

    @classmethod
    def of(cls, value: Any) -> Rejuvenate | None:
        """From ``None``, a patience, a dict (:meth:`to_dict`) or a ``Rejuvenate``."""
        if value is None or isinstance(value, Rejuvenate):
            return value
        if isinstance(value, dict):
            return cls(**value)
        return cls(value)


class Budget:
    """Base class of stopping criteria."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        raise NotImplementedError


@dataclass(frozen=True)
class Steps(Budget):
    """Each member trains until its model has ``n`` training steps."""

    n: int

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Steps(n) needs a positive int, got {self.n!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "steps", "n": self.n}


@dataclass(frozen=True)
class WallTime(Budget):
    """The run stops after ``seconds`` of wall time (across resumes: time the driver ran)."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"WallTime(seconds) must be positive, got {self.seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "wall_time", "seconds": self.seconds}


@dataclass(frozen=True)
class Target(Budget):
    """The run stops as soon as a member's ready score reaches ``score``."""

    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"type": "target", "score": self.score}


def budget_from_dict(d: dict[str, Any]) -> Budget:
    """Inverse of :meth:`Budget.to_dict`."""
    t = d.get("type")
    if t == "steps":
        return Steps(int(d["n"]))
    if t == "wall_time":
        return WallTime(float(d["seconds"]))
    if t == "target":
        return Target(float(d["score"]))
    raise ValueError(f"unknown budget {d!r}")


@dataclass(frozen=True)
class Interval:
    """What a member trains next: ``steps`` steps, or for ``seconds`` (capped at ``steps``)."""

    steps: int | None
    seconds: float | None


class Kind(str, Enum):
    """What a :class:`Decision` says (compares equal to its string value)."""

    CONTINUE = "continue"
    EXPLOIT = "exploit"
    EXPLORE = "explore"
    REJUVENATE = "rejuvenate"
    FINISH = "finish"
    WAIT = "wait"
    QUEUE = "queue"

    def __str__(self) -> str:
        return self.value


# The controller's verdicts on one member at a ready point: one class per kind (``kind`` names
# it, and compares equal to its string).
@dataclass(frozen=True)
class Continue:
    """Train on as it is."""

    member: int
    kind: ClassVar[Kind] = Kind.CONTINUE


@dataclass(frozen=True)
class Exploit:
    """Copy ``checkpoint`` of ``donor`` (its weights of ``step``), then train with ``config``
    (``how``: the strategy that chose it)."""

    member: int
    donor: int
    checkpoint: str
    step: int
    config: dict[str, Any]
    how: str
    kind: ClassVar[Kind] = Kind.EXPLOIT


@dataclass(frozen=True)
class Explore:
    """Keep the weights, train with ``config``."""

    member: int
    config: dict[str, Any]
    how: str
    kind: ClassVar[Kind] = Kind.EXPLORE


@dataclass(frozen=True)
class Reset:
    """Rejuvenate: reset the weights as ``how`` says, train with ``config``."""

    member: int
    config: dict[str, Any]
    how: str
    kind: ClassVar[Kind] = Kind.REJUVENATE


@dataclass(frozen=True)
class Finish:
    """The member is done (``reason``)."""

    member: int
    reason: str
    kind: ClassVar[Kind] = Kind.FINISH


@dataclass(frozen=True)
class Wait:
    """Synchronous mode: the generation is not complete."""

    member: int
    kind: ClassVar[Kind] = Kind.WAIT


@dataclass(frozen=True)
class Queue:
    """Asynchronous mode: the member waits for a worker, and :meth:`Controller.decide` decides
    for it when it gets one."""

    member: int
    kind: ClassVar[Kind] = Kind.QUEUE


#: a decision: one of the kinds above
Decision = Continue | Exploit | Explore | Reset | Finish | Wait | Queue


def decision_events(decisions: Sequence[Decision], pop: Population, now: float) -> list[Event]:
    """The events that record ``decisions`` over ``pop`` (a pure function; ``continue``,
    ``wait`` and ``queue`` record nothing).

    An exploit records ``exploited`` and, when the config changes, ``explored``; an explore
    records ``explored`` when the config changes; a rejuvenation ``rejuvenated``; a finish
    ``finished``.
    """
    out: list[Event] = []
    for d in decisions:
        m = pop.members[d.member]
        old = m.config
        if isinstance(d, Exploit):
            old = pop.blobs[d.checkpoint].config
            exploited = voc.Exploited(d.donor, d.step, d.checkpoint, m.step)
            out.append(Event.of(exploited, d.member, now))
        if isinstance(d, (Exploit, Explore)) and d.config != old:
            out.append(Event.of(voc.Explored(d.config, old, d.how), d.member, now))
        elif isinstance(d, Reset):
            out.append(Event.of(voc.Rejuvenated(d.config, old, m.step, d.how), d.member, now))
        elif isinstance(d, Finish):
            out.append(Event.of(voc.Finished(m.step, d.reason), d.member, now))
    return out


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
        self._copies = _Copies()

    def set_budget(self, budget: list[Budget]) -> None:
        """Replace the stopping criteria (a person changed the run's budget)."""
        self.budget = list(budget)
        self.max_steps = min((b.n for b in self.budget if isinstance(b, Steps)), default=None)
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
        self._copies = _Copies()
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
        """Donor candidates for ``m`` and their ranking scores at ``m``'s progress.

        Candidates are members with a ready score and a checkpoint, not failed, with steps left
        to train, that are ahead of ``m`` or behind it by at most ``max_lead`` intervals (or
        ``m``'s last interval; a member further behind is not comparable yet: the scheduler
        lets it catch up first); ``m`` itself is always one. Each is compared with ``m`` like
        with like, at the step ``t`` where both have been evaluated (``m``'s step, or the
        candidate's when it is behind): its score there, plus what ``m`` itself gained since
        ``t``. So a candidate ahead is judged by where it stood at ``m``'s step, and a
        candidate behind counts as better than ``m`` exactly when it was better than ``m`` at
        the same step. Copying a member behind therefore needs a strictly better score at
        equal progress, which keeps the population from trading checkpoints back and forth
        forever. Ties go to the member further along. A candidate ahead that was never
        evaluated by ``m``'s step is judged by its first evaluation.

        Vectorised over the fold's columnar index: a decision stays well under a millisecond
        at 10,000 members.
        """
        idx = pop.index
        ids, step, score = idx.ids, idx.step, idx.score
        s = m.step
        lag = s - (m.ready_steps[-2] if len(m.ready_steps) >= 2 else 0)
        if self.lead_limit is not None:
            lag = max(lag, self.lead_limit)
        mask = idx.ok & (step >= s - lag)
        if self.max_steps is not None:
            mask &= step < self.max_steps
        mask &= ids != m.id
        rows = np.flatnonzero(mask)
        ids, step, score = ids[rows], step[rows], score[rows]
        # the candidate's score at t = min(s, its step): its last score when it is not ahead,
        # else its score at its last ready point at or before s (from the index's recent
        # history; the full lineage for the rare member further ahead than that)
        value = score.copy()
        ahead = np.flatnonzero(step > s)
        taken = np.full(len(ids), -1, dtype=np.int64)  # where a candidate ahead was judged
        if len(ahead):
            hist_step = idx.hist_step[rows[ahead]]
            valid = (hist_step >= 0) & (hist_step <= s)
            last = hist_step.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1)
            found = valid.any(axis=1)
            value[ahead] = np.where(found, idx.hist_score[rows[ahead], last], np.nan)
            taken[ahead] = np.where(found, hist_step[np.arange(len(ahead)), last], -1)
            for i in ahead[~found]:
                c = pop.members[int(ids[i])]
                v = c.score_at(s)
                if v is None:  # never evaluated by step s: its first evaluation is the nearest
                    v = c.ready_scores[0] if c.ready_scores else None
                value[i] = np.nan if v is None else v
        # a copy counts as the member it was, not as its donor: where the candidate's score at
        # t is one it inherited by copying (t at or before the step it copied), it is ranked by
        # its own evaluation at t, the one it was judged by when it copied; a member that
        # jumped over t has none and is not compared there. Without this, every member that
        # copied at a step shows its donor's score there, the members deciding later at that
        # step rank below duplicates of the top, and far more than the quantile copy.
        value = self._copies.own(pop, ids, step, value, taken, idx.hist_step, rows, s)
        # a candidate behind: its score plus what m gained since the candidate's step, so it
        # ranks above m exactly when it was strictly better at equal progress (ties and
        # rounding go against it: nobody goes back for nothing); not comparable when m has no
        # score that early
        mine = m.ready_score
        behind = np.flatnonzero(step < s)
        if len(behind) and mine is not None and not math.isnan(mine):
            ranking = self.ranking
            sign = ranking.sign
            steps_m = np.asarray(m.ready_steps, dtype=np.int64)
            scores_m = np.asarray(m.ready_scores, dtype=float)
            at = np.searchsorted(steps_m, step[behind], side="right") - 1
            then = np.where(at >= 0, scores_m[np.maximum(at, 0)], np.nan)
            theirs = value[behind]
            better = sign * theirs > sign * then
            moved = theirs + (mine - then)
            up, down = ranking.toward_better(mine), ranking.toward_worse(mine)
            moved = np.where(better & ~(sign * moved > sign * mine), up, moved)
            moved = np.where(~better & ~(sign * moved < sign * mine), down, moved)
            comparable = np.isfinite(then) & ~np.isnan(theirs)
            value[behind] = np.where(comparable, moved, theirs)
            value[behind[at < 0]] = np.nan
        if mine is not None and not math.isnan(mine):
            # a candidate ahead that ties m at equal progress ranks above it: copying it is
            # progress for free (and two members tied forever would never exploit)
            tie = ahead[value[ahead] == mine]
            value[tie] = self.ranking.toward_better(mine)
        keep = ~np.isnan(value) | np.isnan(score)  # NaN ready scores stay (ranked worst)
        ids = np.append(ids[keep], m.id)
        value = np.append(value[keep], np.nan if mine is None else mine)
        return ids, value

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


class _Copies:
    """What each member's last copy replaced: the step of the checkpoint it copied, the step of
    the ready point that decided the copy, and the member's own ranking score there.

    Read from the population's family tree as it grows (a pure function of the fold, so a
    resumed run rebuilds it), in arrays indexed by member id for vectorised look-ups.
    """

    def __init__(self) -> None:
        self._clear(None)

    def _clear(self, pop: Population | None) -> None:
        self.pop = pop
        self.seen = 0
        self.step = np.full(16, -1, dtype=np.int64)
        self.at = np.full(16, -1, dtype=np.int64)
        self.score = np.full(16, np.nan)

    def _grow(self, n: int) -> None:
        if n <= len(self.step):
            return
        size = max(n, 2 * len(self.step))
        extra = size - len(self.step)
        self.step = np.concatenate([self.step, np.full(extra, -1, dtype=np.int64)])
        self.at = np.concatenate([self.at, np.full(extra, -1, dtype=np.int64)])
        self.score = np.concatenate([self.score, np.full(extra, np.nan)])

    def update(self, pop: Population) -> None:
        """Take in the family tree's new edges."""
        if pop is not self.pop:  # another population (a test's, a resumed run's): start over
            self._clear(pop)
        edges = pop.edges
        for e in edges[self.seen :]:
            self._grow(e.member + 1)
            if e.kind != "exploit" or e.at is None:  # a reset, or a log without ``at``
                self.step[e.member] = -1
                continue
            self.step[e.member] = e.step
            self.at[e.member] = e.at
            own = _own_score(pop, pop.members[e.member], e.at, before=e.step)
            self.score[e.member] = np.nan if own is None else own
        self.seen = len(edges)

    def own(
        self,
        pop: Population,
        ids: np.ndarray,
        step: np.ndarray,
        value: np.ndarray,
        taken: np.ndarray,
        hist_step: np.ndarray,
        rows: np.ndarray,
        s: int,
    ) -> np.ndarray:
        """``value`` with every inherited score replaced by the candidate's own (or NaN).

        ``taken`` is the step at which each candidate ahead of ``s`` was judged (-1 where
        unknown); ``hist_step`` and ``rows`` are the index's ready steps and the candidates' rows
        in it."""
        self.update(pop)
        if not len(ids) or not (self.step >= 0).any():
            return value
        self._grow(int(ids.max()) + 1)
        copied = self.step[ids]
        # A candidate not ahead is judged at its last ready point, which is its step unless it
        # has not trained since it copied: inherited exactly when it copied at or after its
        # step. A candidate ahead is judged at ``taken``.
        inherited = np.where(step > s, (taken >= 0) & (taken <= copied), copied >= step)
        inherited &= copied >= 0
        sub = np.flatnonzero(inherited)
        if not len(sub):
            return value
        t = taken[sub]
        behind = step[sub] <= s
        t[behind] = hist_step[rows[sub[behind]], -1]  # the last ready point (-1: none)
        value = value.copy()
        member = ids[sub]
        at = self.at[member]
        mine = (t >= 0) & (t == at)
        value[sub[mine]] = self.score[member[mine]]
        value[sub[(t >= 0) & (t > at)]] = np.nan  # it jumped over t
        for i in np.flatnonzero((t >= 0) & (t < at)):  # rare: it copied while ahead of t
            own = _own_score(pop, pop.members[int(member[i])], int(t[i]), before=None)
            value[sub[i]] = np.nan if own is None else own
        return value


def _own_score(pop: Population, m: MemberState, at: int, before: int | None) -> float | None:
    """The member's own ranking score at step ``at`` from its own reports (the newest at that
    step; with ``before``, skipping the reports after a copy to that step), or None."""
    history = m.history
    window = pop.score_window
    for i in range(len(history) - 1, -1, -1):
        step = history[i][0]
        if before is not None and step > before:
            continue
        if step == at:
            scores = [sc for _, sc in history[max(0, i - window + 1) : i + 1]]
            return float(sum(scores) / len(scores))
    return None
