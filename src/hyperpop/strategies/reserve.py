"""Reserve PBT: greedy PBT beside a small FIRE-PBT reserve, kept while its evidence lasts.

Greedy PBT copies whoever leads after one interval, so where the leader's weights carry a
hidden debt (a hyperparameter that pays now and costs later) every member ends up with it.
FIRE-PBT (Dalibard & Jaderberg 2021, :mod:`hyperpop.strategies.firepbt`) finds such debts by
training a copy of other weights under the leader's hyperparameters and comparing how fast the
two improve from the same level, but it spends most of the population on it (3 greedy members
of 8), and where greed is right (the leader's weights are simply better) that costs the greedy
search its breadth. This strategy keeps FIRE-PBT's test and spends as little as it can on it:

* per cycle of ``greedy + reserve + evaluators`` member ids (default 6 + 1 + 1), the greedy
  members run truncation PBT among themselves (at equal progress in asynchronous mode);
* the **reserve** members are FIRE-PBT's parents: never copied over by greedy members, they
  train their own hyperparameters (with two or more, the bottom of them by FIRE fitness copy
  the top, as FIRE-PBT's parents do; a single reserve member never copies);
* the **evaluators** train a copy of a reserve member's weights with the best greedy member's
  hyperparameters; when the copy improves faster from the same level (FIRE-PBT's one-sided
  binomial test, p < ``p_value``), that greedy member takes its weights.

Where greed is right, no evaluation succeeds, and the reserve is only a cost. So the reserve is
kept while it has evidence for it: once ``patience`` evaluations in a row have ended without a
greedy member taking the evaluator's weights (counted from the first evaluation or from the
last one taken), the roles dissolve for the rest of the run and every member runs truncation
PBT over the whole population. The roles also dissolve (whatever ``patience``) once no
evaluation can start any more: every reserve member, or every evaluator, has failed for good or
been stopped before the budget; an evaluator would otherwise wait with nothing to evaluate for
the rest of the run. The result is the best member of the whole population.

A run whose initial population is smaller than one cycle runs plain truncation PBT. Roles are a
function of the member id and the recorded settings, evaluations and the moment the roles
dissolve are read off the family tree, so a resumed run decides as the uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

from hyperpop.population import EdgeKind, MemberState, Population
from hyperpop.strategies.base import Context
from hyperpop.strategies.firepbt import (
    EVALUATOR,
    FIREPBT,
    GREEDY,
    PARENT,
    _limit,
    _out,
    _population,
)

__all__ = ["RESERVE", "ReservePBT"]

#: the group label of a reserve member
RESERVE = "reserve"


class ReservePBT(FIREPBT):
    """Greedy truncation PBT plus a small FIRE-PBT reserve and its evaluators, dissolved into
    greedy PBT once ``patience`` evaluations in a row came to nothing.

    Args:
        greedy: greedy members per cycle of ids (at least 2).
        reserve: reserve members (FIRE-PBT's parents) per cycle of ids (at least 1).
        evaluators: evaluators per cycle of ids (at least 1).
        quantile: share of a sub-population in its top and in its bottom, in (0, 0.5].
        max_eval: ready points after which an evaluation whose curve never reached the child's
            stops, and over which the binomial test's margin shrinks to 0.
        p_value: significance of the one-sided binomial test of an evaluator against its
            child, in (0, 1).
        patience: evaluations in a row without success after which the roles dissolve into
            truncation PBT over the whole population (0: never).
    """

    name = "reserve"

    def __init__(
        self,
        greedy: int = 6,
        reserve: int = 1,
        evaluators: int = 1,
        quantile: float = 0.25,
        max_eval: int = 3,
        p_value: float = 0.05,
        patience: int = 8,
    ):
        if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 1:
            raise ValueError(f"ReservePBT reserve must be a positive int, got {reserve!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"ReservePBT patience must be an int >= 0, got {patience!r}")
        super().__init__(greedy, max(reserve, 2), evaluators, quantile, max_eval, p_value)
        self.parents, self.patience = reserve, patience
        self._scan = _Scan(None)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "greedy": self.greedy,
            "reserve": self.parents,
            "evaluators": self.evaluators,
            "quantile": self.quantile,
            "max_eval": self.max_eval,
            "p_value": self.p_value,
            "patience": self.patience,
        }

    def group_label(self, member: int, population: int | None = None) -> str:
        """``"greedy"``, ``"reserve"`` or ``"evaluator"``: the role member ``member`` starts
        with (the roles may dissolve later; see :meth:`dissolved`)."""
        role = self.role(member, population)
        return RESERVE if role == PARENT else role

    def _decide(self, m: MemberState, ctx: Context) -> tuple[str, int | None, Any]:
        n = _population(ctx.population.settings)
        if self.active(n) and self.dissolved(ctx.population):
            ids, values = ctx.arrays()
            return "copy", self._truncate(m.id, ids, values, ctx), None
        return super()._decide(m, ctx)

    def dissolved(self, pop: Population) -> bool:
        """Whether the roles are gone: every reserve member or every evaluator is gone for good
        (:meth:`gone`), or ``patience`` evaluations in a row have ended without a greedy member
        taking the evaluator's weights. Read off the log: an evaluation starts with an
        evaluator's copy of a reserve member and ends when that evaluator starts the next one;
        it succeeded when a greedy member copied the evaluator in between."""
        if self.gone(pop):
            return True
        if self.patience == 0:
            return False
        scan = self._scan
        if scan.pop is not pop or len(pop.edges) < scan.seen:
            scan = self._scan = _Scan(pop)
        n = _population(pop.settings)
        for e in pop.edges[scan.seen :]:
            if scan.done:
                break
            if e.kind is not EdgeKind.EXPLOIT or e.by != "pbt" or e.donor is None:
                continue
            member, donor = self.role(e.member, n), self.role(e.donor, n)
            if member == EVALUATOR and donor == PARENT:
                if scan.taken.get(e.member) is False:  # its last evaluation came to nothing
                    scan.failed += 1
                    scan.done = scan.failed >= self.patience
                scan.taken[e.member] = False
            elif member == GREEDY and donor == EVALUATOR:
                scan.failed, scan.taken[e.donor] = 0, True
        scan.seen = len(pop.edges)
        return scan.done

    def gone(self, pop: Population) -> bool:
        """Whether no evaluation can start any more: every reserve member, or every evaluator,
        has failed for good or finished before the step budget (a member a resume retries
        counts again)."""
        n, limit = _population(pop.settings), _limit(pop)
        roles: dict[str, list[bool]] = {PARENT: [], EVALUATOR: []}
        for m in pop.members.values():
            roles.get(self.role(m.id, n), []).append(_out(m, limit))
        return any(flags and all(flags) for flags in roles.values())


class _Scan:
    """How far :meth:`ReservePBT.dissolved` has read a population's family tree."""

    def __init__(self, pop: Population | None):
        self.pop, self.seen, self.failed, self.done = pop, 0, 0, False
        #: per evaluator with an evaluation: whether a greedy member took its weights
        self.taken: dict[int, bool] = {}
