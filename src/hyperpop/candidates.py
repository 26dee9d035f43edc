"""Donor candidates at equal progress: which members a member at a ready point is compared
with, and the score each is compared by (:func:`comparable`), with what each member's last
copy replaced (:class:`Copies`), so a copy counts as the member it was, not as its donor.

Pure functions of the fold, vectorised over its columnar ready index.
"""

from __future__ import annotations

import math

import numpy as np

from hyperpop.population import MemberState, Population
from hyperpop.ranking import Ranking

__all__ = ["Copies", "comparable", "own_score"]


def comparable(
    pop: Population,
    m: MemberState,
    *,
    ranking: Ranking,
    lead_limit: int | None,
    max_steps: int | None,
    copies: Copies,
) -> tuple[np.ndarray, np.ndarray]:
    """Donor candidates for ``m`` and their ranking scores at ``m``'s progress.

    Candidates are members with a ready score and a checkpoint, not failed, with steps left
    to train, that are ahead of ``m`` or behind it by at most ``lead_limit`` steps (or
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
    if lead_limit is not None:
        lag = max(lag, lead_limit)
    mask = idx.ok & (step >= s - lag)
    if max_steps is not None:
        mask &= step < max_steps
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
    value = copies.own(pop, ids, step, value, taken, idx.hist_step, rows, s)
    # a candidate behind: its score plus what m gained since the candidate's step, so it
    # ranks above m exactly when it was strictly better at equal progress (ties and
    # rounding go against it: nobody goes back for nothing); not comparable when m has no
    # score that early
    mine = m.ready_score
    behind = np.flatnonzero(step < s)
    if len(behind) and mine is not None and not math.isnan(mine):
        ranking = ranking
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
        value[tie] = ranking.toward_better(mine)
    keep = ~np.isnan(value) | np.isnan(score)  # NaN ready scores stay (ranked worst)
    ids = np.append(ids[keep], m.id)
    value = np.append(value[keep], np.nan if mine is None else mine)
    return ids, value


class Copies:
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
            own = own_score(pop, pop.members[e.member], e.at, before=e.step)
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
            own = own_score(pop, pop.members[int(member[i])], int(t[i]), before=None)
            value[sub[i]] = np.nan if own is None else own
        return value


def own_score(pop: Population, m: MemberState, at: int, before: int | None) -> float | None:
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
