"""The family tree as FIRE-style strategies read it: each member's last copy or reset, the
evaluations started of each parent, and whether an edge replaced a member's weights."""

from __future__ import annotations

from collections.abc import Callable

from hyperpop.population import Edge, EdgeKind, MemberState, Population

__all__ = ["Tree", "changed", "just_copied", "order"]


class Tree:
    """Per member, the last edge of the family tree (a copy or a reset), and per parent the last
    edge that started an evaluation of it; read from the tree as it grows (a pure function of
    the fold, so a resumed run rebuilds it)."""

    def __init__(self) -> None:
        self._clear(None)

    def _clear(self, pop: Population | None) -> None:
        self.pop = pop
        self.seen = 0
        self.last: dict[int, Edge] = {}
        self.evaluated: dict[int, Edge] = {}

    def update(self, pop: Population, starts: Callable[[Edge, int | None], bool]) -> None:
        """Take in the family tree's new edges (start over for another population);
        ``starts(edge, population)`` says whether an edge starts an evaluation of its donor."""
        if pop is not self.pop or len(pop.edges) < self.seen:
            self._clear(pop)
        n = pop.settings.get("population")
        n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
        for e in pop.edges[self.seen :]:
            self.last[e.member] = e
            if (
                e.kind is EdgeKind.EXPLOIT
                and e.donor is not None
                and e.by == "pbt"
                and starts(e, n)
            ):
                self.evaluated[e.donor] = e
        self.seen = len(pop.edges)


def order(e: Edge) -> tuple[int, float]:
    return (-1 if e.seq is None else e.seq, e.time)


def changed(last: Edge | None, start: Edge, synchronous: bool) -> bool:
    """Whether a member whose last edge is ``last`` changed its weights after ``start``. In
    synchronous mode a change decided in the same generation as ``start`` (at the step the
    evaluator copied) counts too: the copy was of the weights from before it."""
    if last is None or last is start:
        return False
    if order(last) > order(start):
        return True
    return synchronous and last.at is not None and last.at == start.step


def just_copied(m: MemberState, last: Edge | None) -> bool:
    """A member that copied and has not trained since (its score is its donor's)."""
    return last is not None and last.kind is EdgeKind.EXPLOIT and m.step == last.step
