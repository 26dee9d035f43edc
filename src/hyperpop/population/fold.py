"""The fold's handlers: how each kind of event changes a :class:`Population` (one small
function per payload class, in :data:`_HANDLERS`, which a test checks covers the vocabulary)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hyperpop.criteria import Budget, budget_from_dict, step_limit
from hyperpop.population.members import (
    READY_WINDOW,
    BlobInfo,
    Edge,
    EdgeKind,
    MemberState,
    MemberStatus,
    Segment,
    TrainedInterval,
)
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event

if TYPE_CHECKING:
    from hyperpop.population.state import Population

#: a handler: ``(population, event, payload, member)``; the member is None for run events
Handler = Callable[["Population", Event, Any, Any], None]


def _mean(values: list[float]) -> float:
    # NaN in, NaN out: a diverged report is not hidden
    try:
        return math.fsum(values) / len(values)
    except (ValueError, OverflowError):  # +inf with -inf (NaN), or a sum beyond the floats
        return sum(v / len(values) for v in values)


# --- run-level events ----------------------------------------------------------------------
def _run_started(pop: Population, e: Event, p: voc.RunStarted, _: None) -> None:
    pop.settings = dict(p.settings)
    pop.space = dict(p.space)
    pop.trainable = dict(p.trainable or {})
    pop.version = p.version
    pop.run_id = p.run_id
    pop.started = e.time
    pop._session_start = e.time


def _run_resumed(pop: Population, e: Event, p: voc.RunResumed, _: None) -> None:
    pop.resumes += 1
    pop._session_start = e.time
    pop.finished = False
    pop.ended = None
    pop.stopped = None
    # members given up in an earlier session get another round of retries
    for member in p.retry:
        m = pop.members[member]
        if m.status != MemberStatus.FAILED:
            continue
        m.status = MemberStatus.RUNNING
        m.progress_step = None
        m.failed_in_a_row = 0
        pop.index.update(m)


def _member_created(pop: Population, e: Event, p: voc.MemberCreated, _: None) -> None:
    cfg, by = p.config, p.by
    member = int(e.member)  # type: ignore[arg-type]  # member events name a member
    pop.members[member] = MemberState(
        id=member,
        config=cfg,
        schedule=[Segment(0, cfg, member, by)],
        created=e.time,
        added=by == "user",
    )
    pop.index.update(pop.members[member])
    if by == "user":
        _intervene(pop, e, p.request, "add", f"member {member} added")


def _request_handled(pop: Population, e: Event, p: voc.RequestHandled, _: None) -> None:
    pop.handled[p.id] = dict(e.data)  # the stored answer, as it was written
    pop.last_request = max(pop.last_request, p.id)


def _run_finished(pop: Population, e: Event, p: voc.RunFinished, _: None) -> None:
    pop.finished = True
    pop.finish_reason = p.reason
    pop.ended = e.time


def _run_stopped(pop: Population, e: Event, p: voc.RunStopped, _: None) -> None:
    pop.stopped = p.reason or voc.STOPPED_ON_REQUEST
    pop.ended = e.time
    _intervene(pop, e, p.request, "stop", pop.stopped)


# --- member events ---------------------------------------------------------------------
def _reported(pop: Population, e: Event, p: voc.Reported, m: MemberState) -> None:
    score = float(p.score) if p.score is not None else math.nan
    m.step = p.step
    m.history.append((m.step, score))
    m.last_score = score
    m.last_metrics = p.metrics
    recent = m.recent
    recent.append(score)
    window = pop.score_window
    if len(recent) > window:
        del recent[:-window]
    pop.reports += 1


def _progress(pop: Population, e: Event, p: voc.Progress, m: MemberState) -> None:
    m.progress_step = p.step


def _pinned(pop: Population, e: Event, p: voc.Pinned, m: MemberState) -> None:
    m.pinned = p.pinned
    _intervene(pop, e, p.request, "pin" if m.pinned else "unpin", f"member {m.id}")


def _checkpointed(pop: Population, e: Event, p: voc.Checkpointed, m: MemberState) -> None:
    old = m.checkpoint
    start = m.checkpoint_step
    steps = m.ready_steps
    start_score = m.ready_scores[-1] if steps and steps[-1] == start else None
    m.checkpoint = p.checkpoint
    pop._ref(m.checkpoint)
    pop._unref(old)
    m.checkpoint_step = m.step = p.step
    m.progress_step = None
    m.failed_in_a_row = 0
    m.ready_count += 1
    m.ready_since_reset += 1
    m.pending_reset = None
    m.decided = False
    score = _mean(m.recent) if m.recent else m.last_score
    m.ready_score = score
    ranking = pop.ranking
    if score is not None:
        m.ready_scores.append(score)
        m.ready_steps.append(m.step)
        del m.ready_scores[:-READY_WINDOW]
        del m.ready_steps[:-READY_WINDOW]
        if ranking.better(score, m.best_score):
            m.best_score = score
            m.stall = 0
        else:
            m.stall += 1
    key = (m.id, m.exploits, m.rejuvenations, start)
    pop.intervals.append(TrainedInterval(key, start, m.step, m.config, start_score, score))
    pop.blobs[m.checkpoint] = BlobInfo(
        m.id,
        m.step,
        tuple(m.schedule),
        tuple(m.ready_scores),
        tuple(m.ready_steps),
        tuple(m.recent),
        score,
        e.seq,
    )
    if score is not None and ranking.better(score, pop.best_score) and pop.in_result(m.id):
        # the best weights seen so far are kept to the end, whatever happens to the
        # member that holds them
        pop._ref(m.checkpoint)
        pop._unref(pop.best_checkpoint)
        pop.best_checkpoint, pop.best_score = m.checkpoint, score


def _exploited(pop: Population, e: Event, p: voc.Exploited, m: MemberState) -> None:
    blob = p.checkpoint
    info = pop.blobs.get(blob)
    if info is None:
        raise ValueError(f"event {e.seq}: exploit of unknown checkpoint {blob!r}")
    step = p.step
    m.schedule = [s for s in info.schedule if s.step < step]
    m.schedule.append(Segment(step, info.config, m.id))
    pop._ref(blob)
    pop._unref(m.checkpoint)
    m.checkpoint = blob
    m.checkpoint_step = m.step = step
    m.config = info.config
    m.parent = p.donor
    m.exploits += 1
    m.decided = True
    # the copied weights carry the donor's record, not the receiver's old one
    m.ready_scores = list(info.ready_scores)
    m.ready_steps = list(info.ready_steps)
    m.recent = list(info.recent)
    m.ready_score = m.ready_scores[-1] if m.ready_scores else None
    m.best_score = m.ready_score
    m.stall = 0
    by = p.by or "pbt"
    edge = Edge(m.id, m.parent, step, p.at, e.time, e.seq, EdgeKind.EXPLOIT, by)
    pop.edges.append(edge)
    if by == "user":
        _intervene(pop, e, p.request, "copy", f"member {m.id} copied member {m.parent}")


def _explored(pop: Population, e: Event, p: voc.Explored, m: MemberState) -> None:
    m.config = p.config
    m.decided = True
    _segment(m, Segment(m.step, m.config, m.id, p.by))
    if p.by == "user":
        _intervene(pop, e, p.request, "set", f"member {m.id}: {p.config}")


def _rejuvenated(pop: Population, e: Event, p: voc.Rejuvenated, m: MemberState) -> None:
    m.config = p.config
    how = p.reset
    if how is None:  # a log from before resets kept the step: a fresh model at 0
        pop._unref(m.checkpoint)
        m.checkpoint, m.checkpoint_step, m.step = None, 0, 0
        m.schedule = [Segment(0, m.config, m.id)]
    else:
        # the weights are reset, the hyperparameter lineage goes on: same step count, the
        # schedule continues with the reset marked
        if how == "full":
            pop._unref(m.checkpoint)
            m.checkpoint = None
        else:
            m.pending_reset = how
        m.checkpoint_step = m.step
        _segment(m, Segment(m.step, m.config, m.id, reset=how))
    m.reset_step, m.ready_since_reset = m.step, 0
    m.rejuvenations += 1
    m.decided = True
    m.best_score = m.ready_score = None
    m.ready_scores, m.ready_steps, m.recent = [], [], []
    m.stall = 0
    edge = Edge(m.id, None, m.step, p.at, e.time, e.seq, EdgeKind.REJUVENATE, "pbt", how or "full")
    pop.edges.append(edge)


def _segment(m: MemberState, seg: Segment) -> None:
    """A new stretch of the schedule from the member's step (replacing one that starts
    there and was the member's own: the config changed before it trained)."""
    if m.schedule and m.schedule[-1].step == m.step and m.schedule[-1].member == m.id:
        m.schedule[-1] = seg
    else:
        m.schedule.append(seg)


def _failed(pop: Population, e: Event, p: voc.Failed, m: MemberState) -> None:
    m.failures += 1
    m.failed_in_a_row += 1
    pop.failures += 1
    m.last_error = p.error
    m.progress_step = None
    if p.fatal:
        m.status = MemberStatus.FAILED


def _finished(pop: Population, e: Event, p: voc.Finished, m: MemberState) -> None:
    m.status = MemberStatus.FINISHED
    m.finish_reason = p.reason
    m.progress_step = None
    if p.by == "user":
        _intervene(pop, e, p.request, "stop", f"member {m.id} stopped")


def _intervene(pop: Population, e: Event, request: int | None, kind: str, what: str) -> None:
    pop.interventions.append(
        {
            "kind": kind,
            "member": e.member,
            "what": what,
            "request": request,
            "time": e.time,
            "seq": e.seq,
        }
    )


def _budget(pop: Population, e: Event, p: voc.BudgetChanged, _: None) -> None:
    """A new budget: members that finished only because the step budget ran out train on
    while it now leaves them steps."""
    budget = list(p.budget)
    pop.settings["budget"] = budget
    read = [(b, _read_budget(b)) for b in budget]
    limit = step_limit(r for _, r in read if r is not None)
    revived = []
    for m in pop.members.values():
        if (
            m.status == "finished"
            and m.finish_reason == "step budget reached"
            and (limit is None or m.step < limit)
        ):
            m.status = MemberStatus.RUNNING
            m.finish_reason = None
            pop.index.update(m)
            revived.append(m.id)
    what = ", ".join(str(b) if r is None else r.describe() for b, r in read) or "no limit"
    if revived:
        what += f" (members {revived} train on)"
    _intervene(pop, e, p.request, "budget", what)


def _workers(pop: Population, e: Event, p: voc.WorkersChanged, _: None) -> None:
    """A new number of workers: a resume starts with it (not with one the Ray cluster chose
    under ``workers="auto"``: a resume follows the cluster again)."""
    if p.by == voc.CLUSTER:  # no person's doing
        return
    pop.settings["workers"] = p.workers
    _intervene(pop, e, p.request, "workers", f"{p.old_workers} -> {p.workers} workers")


def _read_budget(b: dict[str, Any]) -> Budget | None:
    """A recorded budget, or None for one this version does not know (kept as it is)."""
    try:
        return budget_from_dict(b)
    except (KeyError, TypeError, ValueError):
        return None


#: kinds after which the member's place in the ready index may change
_INDEXED = (
    voc.Checkpointed,
    voc.Exploited,
    voc.Rejuvenated,
    voc.Failed,
    voc.Finished,
    voc.Pinned,
)

#: one small handler per event kind (``progress`` is counted, not folded further); member
#: events (but ``member_created``) get the member they name, which must exist already
_HANDLERS: dict[type[voc.Payload], Handler] = {
    voc.RunStarted: _run_started,
    voc.RunResumed: _run_resumed,
    voc.MemberCreated: _member_created,
    voc.RequestHandled: _request_handled,
    voc.RunFinished: _run_finished,
    voc.RunStopped: _run_stopped,
    voc.BudgetChanged: _budget,
    voc.WorkersChanged: _workers,
    voc.Reported: _reported,
    voc.Progress: _progress,
    voc.Pinned: _pinned,
    voc.Checkpointed: _checkpointed,
    voc.Exploited: _exploited,
    voc.Explored: _explored,
    voc.Rejuvenated: _rejuvenated,
    voc.Failed: _failed,
    voc.Finished: _finished,
}

#: by payload class: its handler, whether it is given the member it names (member events but
#: ``member_created``), and whether the ready index follows it
_DISPATCH: dict[type[voc.Payload], tuple[Handler, bool, bool]] = {
    cls: (
        handler,
        cls.about_member and cls is not voc.MemberCreated,
        issubclass(cls, _INDEXED),
    )
    for cls, handler in _HANDLERS.items()
}
