"""FIRE-PBT: Faster Improvement Rate PBT (Dalibard & Jaderberg 2021, arXiv:2109.13800).

Greedy PBT copies whoever leads after one interval. FIRE-PBT keeps part of the population on a
longer view: given two networks at the same performance training with the same hyperparameters,
the one improving faster is expected to end better. The population is split by role:

* the **greedy** sub-population runs ordinary truncation PBT on the score (at equal progress in
  asynchronous mode), and the run's result comes from it;
* the **parent** sub-population is judged by how fast its offspring improve. An **evaluator**
  copies a parent's weights and trains them with the hyperparameters of the best greedy member
  (the *child*); the parent's FIRE fitness compares its evaluator's curve with the curves of the
  other parents' evaluators where their scores overlap: the sum, over the other evaluated
  parents, of the difference between the best scores each curve reaches over the same number of
  steps from the same level. The bottom ``quantile`` of the evaluated parents copy a random
  member of their top ``quantile`` (and explore);
* an evaluator compares its curve with the child's (since the child last copied or was reset):
  when it is ahead over the overlap (a one-sided binomial test over pairs of reports at equal
  distance from the same level, p < ``p_value``, and a higher best score) the evaluation
  succeeds and the child, at its next ready point, copies the evaluator's weights and keeps its
  own hyperparameters; the evaluator stops when its curve does not reach the child's after
  ``max_eval`` ready points, when the test turns against it (p above ``p_value`` plus a margin
  that shrinks to 0 over ``max_eval`` ready points), or when its parent or child changes. Then
  it evaluates the parent that has trained longest since it was last evaluated or copied.

Once no parent can be evaluated any more (every parent has failed for good or finished before
the step budget), the evaluators join the greedy sub-population: they rank and copy in its
truncation and greedy members may copy them. An evaluator exists to carry a parent's weights to
a greedy member; with no parent left its compute is best spent where the result comes from,
not waiting with nothing to evaluate for the rest of the run. They still never are the run's
result (that rule reads member ids only): where they lead, greedy members copy their weights.
Read off the member states in the log, so a resumed run decides as the uninterrupted one.

Every decision is a pure function of the log and the recorded settings: roles come from the
member id (``id % cycle`` with ``cycle = greedy + parents + evaluators``: the first ``greedy``
positions are greedy, the next ``parents`` parents, the rest evaluators), and an evaluation is
an ordinary exploit (the evaluator's copy of the parent, whose hyperparameters the strategy
chooses through :meth:`inherit`), so its parent, start and curve are read off the family tree
and the reports; its child is the greedy member training with the evaluator's hyperparameters.
A run whose initial population is smaller than one cycle runs plain truncation PBT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hyperpop.population import (
    RESULT_RULES,
    Edge,
    EdgeKind,
    MemberState,
    MemberStatus,
    Population,
)
from hyperpop.strategies.base import Context, ExploitStrategy
from hyperpop.strategies.curves import best_difference as _best_difference
from hyperpop.strategies.curves import binomial as _binomial
from hyperpop.strategies.curves import curve as _curve
from hyperpop.strategies.curves import overlap as _overlap
from hyperpop.strategies.curves import smooth as _smooth
from hyperpop.strategies.lineage import Tree, changed, just_copied

__all__ = ["EVALUATOR", "FIREPBT", "GREEDY", "PARENT"]

GREEDY, PARENT, EVALUATOR = "greedy", "parent", "evaluator"


def _ints(**values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"FIREPBT {name} must be a positive int, got {v!r}")


class FIREPBT(ExploitStrategy):
    """FIRE-PBT: a greedy sub-population, a parent sub-population judged by how fast its
    offspring improve, and evaluators that train copies of parents with a greedy member's
    hyperparameters.

    Args:
        greedy: greedy members per cycle of ids (at least 2).
        parents: parent members per cycle of ids (at least 2).
        evaluators: evaluators per cycle of ids.
        quantile: share of a sub-population in its top and in its bottom, in (0, 0.5].
        max_eval: ready points after which an evaluation whose curve never reached the child's
            stops, and over which the binomial test's margin shrinks to 0.
        p_value: significance of the one-sided binomial test of an evaluator against its
            child, in (0, 1).
    """

    name = "firepbt"

    def __init__(
        self,
        greedy: int = 3,
        parents: int = 3,
        evaluators: int = 2,
        quantile: float = 0.25,
        max_eval: int = 3,
        p_value: float = 0.01,
    ):
        _ints(greedy=greedy, parents=parents, evaluators=evaluators, max_eval=max_eval)
        if greedy < 2 or parents < 2:
            raise ValueError(
                f"FIREPBT needs at least 2 greedy and 2 parent members per cycle, got "
                f"greedy={greedy}, parents={parents}"
            )
        if isinstance(quantile, bool) or not 0 < quantile <= 0.5:
            raise ValueError(f"FIREPBT quantile must be in (0, 0.5], got {quantile!r}")
        if isinstance(p_value, bool) or not 0 < p_value < 1:
            raise ValueError(f"FIREPBT p_value must be in (0, 1), got {p_value!r}")
        self.greedy, self.parents, self.evaluators = greedy, parents, evaluators
        self.quantile, self.max_eval, self.p_value = float(quantile), max_eval, float(p_value)
        self._tree = Tree()
        self._plan: tuple[Context, int, str, dict[str, Any] | None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "greedy": self.greedy,
            "parents": self.parents,
            "evaluators": self.evaluators,
            "quantile": self.quantile,
            "max_eval": self.max_eval,
            "p_value": self.p_value,
        }

    # --- roles -----------------------------------------------------------------------------
    @property
    def cycle(self) -> int:
        """Ids per cycle of roles."""
        return self.greedy + self.parents + self.evaluators

    def active(self, population: int | None) -> bool:
        """Whether an initial population of ``population`` members (None: unknown) holds a
        whole cycle; a smaller one runs plain truncation PBT."""
        return population is None or population >= self.cycle

    def role(self, member: int, population: int | None = None) -> str:
        """``"greedy"``, ``"parent"`` or ``"evaluator"``: member ``member``'s role in a run whose
        initial population is ``population``."""
        if not self.active(population):
            return GREEDY
        pos = int(member) % self.cycle
        if pos < self.greedy:
            return GREEDY
        return PARENT if pos < self.greedy + self.parents else EVALUATOR

    def group_label(self, member: int, population: int | None = None) -> str:
        """Member ``member``'s role: ``"greedy"``, ``"parent"`` or ``"evaluator"``."""
        return self.role(member, population)

    @staticmethod
    def in_result(settings: Mapping[str, Any], member: int) -> bool:
        """Whether a member's models may be the run's result (its greedy sub-population only,
        as in the paper): the rule the fold applies to runs recorded with this strategy."""
        d = settings.get("exploit") or {}
        key = tuple(sorted((k, v) for k, v in d.items() if k != "name"))
        strategy = _RECORDED.get(key)
        if strategy is None:
            strategy = _RECORDED[key] = FIREPBT(**dict(key))
        return strategy.role(member, _population(settings)) == GREEDY

    # --- decisions -------------------------------------------------------------------------
    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        kind, donor, config = self._decide(member, ctx)
        self._plan = (ctx, member.id, kind, config)
        return None if donor is None else ctx.member(donor)

    def inherit(
        self, member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any] | None:
        """An evaluator takes its child's hyperparameters; a greedy member adopting an
        evaluator's weights keeps its own (the evaluator trained with them); None (explore)
        for the copies inside a sub-population."""
        plan = self._plan
        if plan is None or plan[0] is not ctx or plan[1] != member.id:
            return None
        return None if plan[3] is None else dict(plan[3])

    def _decide(self, m: MemberState, ctx: Context) -> tuple[str, int | None, Any]:
        pop = ctx.population
        n = _population(pop.settings)
        ids, values = ctx.arrays()
        if not self.active(n):
            return "copy", self._truncate(m.id, ids, values, ctx), None
        self._tree.update(pop, self._starts)
        role = self.role(m.id, n)
        gone = role != PARENT and self.parents_gone(pop)
        if role == GREEDY and not gone:
            adopt = self._adoption(m, pop, n)
            if adopt is not None:
                blob = pop.blobs[pop.members[adopt].checkpoint]  # type: ignore[index]
                return "adopt", adopt, dict(blob.config)
        if role == GREEDY or gone:  # with no parent left the evaluators are greedy members
            pos = ids % self.cycle
            mask = pos < self.greedy
            if gone:
                mask |= pos >= self.greedy + self.parents
            return "copy", self._truncate(m.id, ids[mask], values[mask], ctx), None
        if role == PARENT:
            return "copy", self._parent_copy(m, pop, n, ctx), None
        return self._evaluate(m, pop, n)

    def _truncate(
        self, member: int, ids: np.ndarray, values: np.ndarray, ctx: Context
    ) -> int | None:
        """Truncation among ``ids``: a random member of the top share when ``member`` is in
        the bottom share (ranked by value, ties to the smaller id), else None."""
        k = min(math.ceil(len(ids) * self.quantile), len(ids) // 2)
        order = np.lexsort((ids, -values))
        at = np.flatnonzero(ids[order] == member)
        if k == 0 or not len(at) or int(at[0]) < len(ids) - k:
            return None
        return int(ids[order[int(ctx.rng.integers(k))]])

    def parents_gone(self, pop: Population) -> bool:
        """Whether no parent can be evaluated any more: every parent has failed for good or
        finished before the step budget (a member a resume retries counts again)."""
        n, limit = _population(pop.settings), _limit(pop)
        parents = [m for m in pop.members.values() if self.role(m.id, n) == PARENT]
        return bool(parents) and all(_out(m, limit) for m in parents)

    # --- evaluations -----------------------------------------------------------------------
    def evaluation(self, e: MemberState, pop: Population) -> Evaluation | None:
        """Evaluator ``e``'s current evaluation as the log tells it (None: it has none)."""
        self._tree.update(pop, self._starts)
        n = _population(pop.settings)
        start = self._tree.last.get(e.id)
        if (
            start is None
            or start.kind is not EdgeKind.EXPLOIT
            or start.by != "pbt"
            or start.donor is None
            or self.role(start.donor, n) != PARENT
        ):
            return None
        sync = bool(pop.settings.get("synchronous"))
        parent = pop.members.get(start.donor)
        lost = parent is None or parent.status == MemberStatus.FAILED
        if parent is not None:
            lost = lost or changed(self._tree.last.get(parent.id), start, sync)
        child, done = None, False
        candidates = [
            c
            for c in pop.members.values()
            if self._may_be_child(c, e, n) and c.config == e.config and c.status != "failed"
        ]
        if candidates:
            sign = 1.0 if pop.mode == "max" else -1.0

            def rank(c: MemberState) -> tuple[bool, float, int]:
                moved = changed(self._tree.last.get(c.id), start, sync)
                return (moved, -_oriented(c.ready_score, sign), c.id)

            c = min(candidates, key=rank)
            last = self._tree.last.get(c.id)
            if changed(last, start, sync):
                done = last is not None and last.donor == e.id and last.kind is EdgeKind.EXPLOIT
                lost = lost or not done
            child = c.id
        else:
            lost = True
        ready = sum(1 for s in e.ready_steps if s > start.step)
        return Evaluation(
            evaluator=e.id,
            parent=start.donor,
            child=child,
            start=start,
            ready=ready,
            lost=lost,
            done=done,
            curve=_curve(e, start.step, pop.mode),
        )

    def _starts(self, edge: Edge, n: int | None) -> bool:
        """Whether a copy starts an evaluation: a member outside the parents copied a parent."""
        donor = edge.donor
        return (
            donor is not None
            and self.role(donor, n) == PARENT
            and self.role(edge.member, n) != PARENT
        )

    def _may_be_child(self, c: MemberState, e: MemberState, n: int | None) -> bool:
        """Whether ``c`` may be the child of evaluator ``e``'s evaluation (a greedy member)."""
        return self.role(c.id, n) == GREEDY

    def verdict(self, ev: Evaluation, pop: Population) -> str:
        """``"done"`` (its child copied it), ``"stopped"``, ``"success"`` (ahead of its child:
        the child copies it at its next ready point) or ``"running"``."""
        if ev.done:
            return "done"
        if ev.lost or ev.child is None:
            return "stopped"
        child = pop.members[ev.child]
        last = self._tree.last.get(child.id)
        theirs = _curve(child, None if last is None else last.step, pop.mode)
        mine = ev.curve
        if ev.ready < 1 or len(mine) < 2 or len(theirs) < 2:
            return "running"
        overlap = _overlap(_smooth(mine), _smooth(theirs))
        p = _binomial(mine, theirs, overlap)
        if p < self.p_value and _best_difference(mine, theirs, overlap) > 0:
            return "success"
        if overlap is None and ev.ready >= self.max_eval:
            return "stopped"  # never reached the child's level
        if overlap is not None and p > self.p_value + max(0.0, 1 - ev.ready / self.max_eval):
            return "stopped"  # the test turned against it
        if ev.ready >= 2 * self.max_eval:
            return "stopped"  # undecided for too long
        return "running"

    def _evaluations(self, pop: Population, n: int | None) -> list[Evaluation]:
        out = []
        for e in sorted(pop.members.values(), key=lambda x: x.id):
            if self.role(e.id, n) == EVALUATOR:
                ev = self.evaluation(e, pop)
                if ev is not None:
                    out.append(ev)
        return out

    def _adoption(self, m: MemberState, pop: Population, n: int | None) -> int | None:
        """The evaluator whose successful evaluation greedy member ``m`` adopts, if any (the
        best-scoring one where several succeeded)."""
        limit = _limit(pop)
        sign = 1.0 if pop.mode == "max" else -1.0
        best: tuple[float, int] | None = None
        for ev in self._evaluations(pop, n):
            e = pop.members[ev.evaluator]
            if ev.child != m.id or e.checkpoint is None or (limit is not None and e.step >= limit):
                continue
            if self.verdict(ev, pop) == "success":
                key = (-_oriented(e.ready_score, sign), e.id)
                best = key if best is None or key < best else best
        return None if best is None else best[1]

    def fitness(self, pop: Population) -> dict[int, float]:
        """FIRE fitness of every parent under evaluation (with at least one ready point of its
        evaluator's curve): for each, the sum over the other evaluated parents of the best-score
        difference of their evaluators' curves where they overlap."""
        n = _population(pop.settings)
        self._tree.update(pop, self._starts)
        curves: dict[int, np.ndarray] = {}
        for ev in self._evaluations(pop, n):
            if not ev.lost and ev.ready >= 1 and len(ev.curve) >= 2:
                curves[ev.parent] = ev.curve  # the later evaluator wins
        smooth = {p: _smooth(c) for p, c in curves.items()}
        out = {}
        for p, c in curves.items():
            total = 0.0
            for q, d in curves.items():
                if q != p:
                    total += _best_difference(c, d, _overlap(smooth[p], smooth[q]))
            out[p] = total
        return out

    def _parent_copy(
        self, m: MemberState, pop: Population, n: int | None, ctx: Context
    ) -> int | None:
        fit = self.fitness(pop)
        if m.id not in fit or len(fit) < 2:
            return None
        limit = _limit(pop)
        ids = np.array(sorted(fit), dtype=np.int64)
        values = np.array([fit[int(i)] for i in ids])
        donor = self._truncate(m.id, ids, values, ctx)
        if donor is None:
            return None
        d = pop.members[donor]
        if d.checkpoint is None or d.status == "failed" or (limit is not None and d.step >= limit):
            return None
        return donor

    def _evaluate(
        self, e: MemberState, pop: Population, n: int | None
    ) -> tuple[str, int | None, Any]:
        """An evaluator: carry on while its evaluation runs (or waits for its child to adopt
        it); else start one on the parent that has trained longest since it was last
        evaluated or copied, with the hyperparameters of the best greedy member."""
        evaluations = {x.evaluator: x for x in self._evaluations(pop, n)}
        going = {
            i for i, x in evaluations.items() if self.verdict(x, pop) in ("running", "success")
        }
        if e.id in going:
            return "wait", None, None
        limit = _limit(pop)
        sign = 1.0 if pop.mode == "max" else -1.0
        busy = {evaluations[i].parent for i in going}
        # the evaluators about to start one, in id order: the j-th takes the j-th parent, so
        # evaluators deciding in the same generation (synchronous mode) spread over parents
        idle = [
            x.id
            for x in sorted(pop.members.values(), key=lambda x: x.id)
            if self.role(x.id, n) == EVALUATOR
            and x.id not in going
            and (x.id == e.id or (x.alive and not x.pinned))
        ]
        rank = idle.index(e.id)

        def usable(x: MemberState) -> bool:
            return (
                x.checkpoint is not None
                and x.ready_score is not None
                and x.status != "failed"
                and (limit is None or x.step < limit)
            )

        parents = [
            p
            for p in pop.members.values()
            if self.role(p.id, n) == PARENT and usable(p) and p.id not in busy
        ]
        children = [
            c
            for c in pop.members.values()
            if self.role(c.id, n) == GREEDY
            and usable(c)
            and c.alive
            and not just_copied(c, self._tree.last.get(c.id))
        ]
        if not parents or not children:
            return "wait", None, None

        def since(p: MemberState) -> int:
            marks = [0]
            for edge in (self._tree.evaluated.get(p.id), self._tree.last.get(p.id)):
                if edge is not None:
                    marks.append(edge.step)
            return p.step - max(marks)

        parents.sort(key=lambda p: (-since(p), p.id))
        if rank >= len(parents):
            return "wait", None, None
        parent = parents[rank]
        child = min(children, key=lambda c: (-_oriented(c.ready_score, sign), c.id))
        return "evaluate", parent.id, dict(child.config)


@dataclass(frozen=True)
class Evaluation:
    """An evaluator's current evaluation, read off the log.

    ``start`` is the evaluator's copy of ``parent``; ``child`` the greedy member training with
    the evaluator's hyperparameters (None: none is); ``ready`` the evaluator's ready points since
    the copy; ``curve`` its reports since then, oriented so that higher is better; ``lost``
    whether the parent or the child changed since (or no child is left); ``done`` whether the
    child copied the evaluator since."""

    evaluator: int
    parent: int
    child: int | None
    start: Edge
    ready: int
    lost: bool
    done: bool
    curve: np.ndarray


#: strategies rebuilt from recorded settings, for :meth:`FIREPBT.in_result`
_RECORDED: dict[tuple[tuple[str, Any], ...], FIREPBT] = {}


def _population(settings: Mapping[str, Any]) -> int | None:
    n = settings.get("population")
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _limit(pop: Population) -> int | None:
    """The run's step budget per member (None: none)."""
    steps = [
        int(b["n"])
        for b in pop.settings.get("budget") or []
        if isinstance(b, dict) and b.get("type") == "steps"
    ]
    return min(steps) if steps else None


def _out(m: MemberState, limit: int | None) -> bool:
    """Whether ``m`` will train no more: failed for good, or finished before the budget."""
    return m.status == MemberStatus.FAILED or (
        m.status == MemberStatus.FINISHED and limit is not None and m.step < limit
    )


def _oriented(score: float | None, sign: float) -> float:
    if score is None or math.isnan(score):
        return -math.inf
    return sign * score


RESULT_RULES[FIREPBT.name] = FIREPBT.in_result
