"""MF-PBT: Multiple-Frequencies Population Based Training (Doulazmi et al. 2025, arXiv:2506.03225).

Greedy PBT judges every member after one ready interval, so a hyperparameter that pays off only
later is copied over before it can. MF-PBT splits the population into sub-populations that
evolve at different frequencies: sub-population ``k`` is judged only at every
``frequencies[k]``-th ready point of each member, so a slow sub-population keeps its
hyperparameters long enough to show what they are worth, while a fast one follows the short-term
leader as PBT does. Sub-populations exchange members by an asymmetric migration.

When a member of sub-population ``k`` is due (its own ready points are a multiple of
``frequencies[k]``), it is ranked within its sub-population (at equal progress in asynchronous
mode: the controller's comparable scores). With ``share`` = the quantile of its size:

* in the bottom ``share``: it copies a random member of its sub-population's top ``share``, and
  the explore strategy draws its hyperparameters from the donor's (PBT inside the
  sub-population);
* in the ``share`` ranks just above the bottom (the migration bracket): the ``j``-th of them
  looks at the ``j``-th best member of the *other* sub-populations and, if that member scores
  better, copies its weights. Its hyperparameters follow the asymmetry of the paper: from a
  sub-population that evolves less often (a longer horizon) it takes the migrant's
  hyperparameters; from one that evolves more often it takes the hyperparameters of the best
  member of its own sub-population (the weights move, the short-horizon hyperparameters do not);
  between equal frequencies it keeps its own. A migration does not explore.

Membership is a pure function of the member id and the recorded settings: member ``i`` is in
sub-population ``i % groups``, where ``groups`` is the number of frequencies, reduced so that every
sub-population of the run's initial population has at least four members (with fewer, the
frequencies used are spread from the fastest to the slowest). A resumed run, and members added
to a running one, get the same membership; nothing is stored beyond the strategy's settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hyperpop.population import MemberState
from hyperpop.strategies.base import Context, ExploitStrategy

__all__ = ["MFPBT"]

#: the fewest members per sub-population (a quarter for each of top, bracket and bottom)
MIN_GROUP = 4


class MFPBT(ExploitStrategy):
    """Multiple-frequencies PBT: sub-populations judged every ``frequencies[k]`` ready points.

    Args:
        frequencies: per sub-population, the ready points between its decisions (1 is
            greedy PBT's rhythm); at least one, positive, each sub-population one entry.
        quantile: share of a sub-population in its top, its migration bracket and its bottom,
            in (0, 1/3].
    """

    name = "mfpbt"

    def __init__(self, frequencies: Sequence[int] = (1, 4), quantile: float = 0.25):
        freqs = tuple(frequencies) if not isinstance(frequencies, (str, bytes)) else ()
        if not freqs or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in freqs):
            raise ValueError(
                f"MFPBT frequencies must be positive ints, one per sub-population, e.g. (1, 4); "
                f"got {frequencies!r}"
            )
        if not 0 < quantile <= 1 / 3:
            raise ValueError(f"MFPBT quantile must be in (0, 1/3], got {quantile!r}")
        self.frequencies = freqs
        self.quantile = float(quantile)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "frequencies": list(self.frequencies), "quantile": self.quantile}

    # --- membership ------------------------------------------------------------------------
    def used(self, population: int | None) -> tuple[int, ...]:
        """The frequencies in use for an initial population of ``population`` members (None:
        unknown, all of them): as many as keep four members per sub-population, spread from
        the fastest to the slowest."""
        k = len(self.frequencies)
        if population is not None:
            k = max(1, min(k, population // MIN_GROUP))
        if k == len(self.frequencies):
            return self.frequencies
        picks = np.linspace(0, len(self.frequencies) - 1, k).round().astype(int)
        return tuple(self.frequencies[int(i)] for i in picks)

    def group(self, member: int, population: int | None = None) -> int:
        """The sub-population of member ``member`` (in a run whose initial population is
        ``population``)."""
        return int(member) % len(self.used(population))

    def group_label(self, member: int, population: int | None = None) -> str:
        """``"mf 2/3 (every 4)"``: member ``member``'s sub-population (counted from 1, of how
        many) and the ready points between its decisions."""
        used = self.used(population)
        k = int(member) % len(used)
        return f"mf {k + 1}/{len(used)} (every {used[k]})"

    def frequency(self, member: int, population: int | None = None) -> int:
        """Ready points between the decisions of member ``member``'s sub-population."""
        used = self.used(population)
        return used[int(member) % len(used)]

    @staticmethod
    def _population(ctx: Context) -> int | None:
        n = ctx.population.settings.get("population")
        return int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None

    # --- decisions -------------------------------------------------------------------------
    def _share(self, n: int) -> int:
        return min(math.ceil(n * self.quantile), n // 2)

    def _ranked(self, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` best first (higher value, then smaller id)."""
        return np.lexsort((ids, -values))

    def _plan(self, member: MemberState, ctx: Context) -> tuple[str, int | None]:
        """What ``member`` does now: ``("stay", None)``, ``("copy", donor)`` inside its
        sub-population or ``("migrate", migrant)``."""
        population = self._population(ctx)
        used = self.used(population)
        groups = len(used)
        mine = member.id % groups
        if member.ready_count % used[mine]:
            return "stay", None  # its sub-population is not due at this ready point
        ids, values = ctx.arrays()
        group = ids % groups
        local = np.flatnonzero(group == mine)
        order = local[self._ranked(ids[local], values[local])]
        n = len(order)
        share = self._share(n)
        at = np.flatnonzero(ids[order] == member.id)
        if share == 0 or not len(at):
            return "stay", None
        pos = int(at[0])
        if pos >= n - share:  # bottom: PBT inside the sub-population
            top = order[:share]
            return "copy", int(ids[top[int(ctx.rng.integers(share))]])
        if pos >= n - 2 * share and groups > 1:  # the migration bracket
            j = pos - (n - 2 * share)
            external = np.flatnonzero(group != mine)
            external = external[self._ranked(ids[external], values[external])]
            if j < len(external) and values[external[j]] > values[order[pos]]:
                return "migrate", int(ids[external[j]])
        return "stay", None

    def select(self, member: MemberState, ctx: Context) -> MemberState | None:
        kind, donor = self._plan(member, ctx)
        return None if donor is None else ctx.member(donor)

    def inherit(
        self, member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any] | None:
        """A migrant's hyperparameters by the asymmetric rule; None (explore) inside the
        sub-population."""
        population = self._population(ctx)
        used = self.used(population)
        groups = len(used)
        mine, theirs = member.id % groups, donor.id % groups
        if mine == theirs:
            return None
        if used[mine] < used[theirs]:  # the migrant's sub-population has the longer horizon
            return dict(ctx.population.blobs[donor.checkpoint].config)  # type: ignore[index]
        if used[mine] > used[theirs]:  # keep the hyperparameters of its own sub-population
            ids, values = ctx.arrays()
            local = np.flatnonzero(ids % groups == mine)
            best = int(ids[local[self._ranked(ids[local], values[local])][0]])
            return dict(ctx.member(best).config)
        return dict(member.config)
