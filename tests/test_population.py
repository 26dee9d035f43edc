"""The fold: schedules along the lineage, checkpoint references, counters."""

from __future__ import annotations

from hyperpop.population import Population
from hyperpop.store import events as ev
from hyperpop.store.events import Event


def build(events):
    pop = Population()
    for i, e in enumerate(events, 1):
        e.seq, e.time = i, float(i)
        pop.apply(e)
    return pop


def interval(member, start, n, score, blob):
    out = [
        Event(ev.REPORTED, member, {"step": start + k, "score": score, "metrics": {}})
        for k in range(1, n + 1)
    ]
    return out + [Event(ev.CHECKPOINTED, member, {"step": start + n, "checkpoint": blob})]


def test_exploit_inherits_the_donors_schedule_up_to_its_checkpoint():
    pop = build(
        [
            Event(ev.RUN_STARTED, None, {"settings": {"mode": "max"}}),
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 1}}),
            Event(ev.MEMBER_CREATED, 1, {"config": {"lr": 2}}),
            *interval(0, 0, 4, 0.1, "a4"),
            Event(ev.EXPLORED, 1, {"config": {"lr": 3}}),  # explore in place at step 0
            *interval(1, 0, 4, 0.9, "b4"),
            Event(ev.EXPLORED, 1, {"config": {"lr": 4}}),
            *interval(1, 4, 4, 0.95, "b8"),
            # member 0 copies 1's step-8 weights, then explores lr 5
            Event(ev.EXPLOITED, 0, {"donor": 1, "step": 8, "checkpoint": "b8", "at": 4}),
            Event(ev.EXPLORED, 0, {"config": {"lr": 5}}),
        ]
    )
    m0 = pop.members[0]
    assert m0.step == 8 and m0.checkpoint == "b8" and m0.parent == 1 and m0.exploits == 1
    assert [(s.step, s.config["lr"], s.member) for s in m0.schedule] == [
        (0, 3, 1),
        (4, 4, 1),
        (8, 5, 0),
    ]
    assert m0.config == {"lr": 5}
    assert pop.edges[0].donor == 1 and pop.edges[0].step == 8
    # references: a4 lost its last reference, b8 is shared, b4 was replaced by b8
    assert pop.live_checkpoints() == {"b8"}
    assert pop.drain_dead() == ["a4", "b4"]
    assert pop.drain_dead() == []
    assert pop.reports == 12


def test_a_donor_overwritten_in_the_same_batch_still_hands_over_its_checkpoint():
    # tournament chains: 0 copies 1's old checkpoint after 1 itself copied 2
    pop = build(
        [
            Event(ev.RUN_STARTED, None, {}),
            *[Event(ev.MEMBER_CREATED, i, {"config": {"lr": i}}) for i in range(3)],
            *interval(0, 0, 2, 0.1, "a"),
            *interval(1, 0, 2, 0.5, "b"),
            *interval(2, 0, 2, 0.9, "c"),
            Event(ev.EXPLOITED, 1, {"donor": 2, "step": 2, "checkpoint": "c"}),
            Event(ev.EXPLOITED, 0, {"donor": 1, "step": 2, "checkpoint": "b"}),
        ]
    )
    assert pop.members[0].checkpoint == "b" and pop.members[0].config == {"lr": 1}
    assert pop.drain_dead() == ["a"]


def test_rejuvenation_resets_weights_and_keeps_a_record():
    pop = build(
        [
            Event(ev.RUN_STARTED, None, {}),
            Event(ev.MEMBER_CREATED, 0, {"config": {"lr": 1}}),
            *interval(0, 0, 3, 0.2, "a"),
            Event(ev.REJUVENATED, 0, {"config": {"lr": 7}, "at": 3}),
        ]
    )
    m = pop.members[0]
    assert m.step == 0 and m.checkpoint is None and m.config == {"lr": 7}
    assert m.rejuvenations == 1 and pop.edges[-1].kind == "rejuvenate"
    # no member holds "a" any more, but it is the best checkpoint of the run: kept
    assert pop.best_checkpoint == "a" and pop.drain_dead() == []


def test_active_time_excludes_downtime_between_sessions():
    events = [
        Event(ev.RUN_STARTED, None, {}),
        Event(ev.MEMBER_CREATED, 0, {"config": {}}),
        Event(ev.RUN_RESUMED, None, {}),
    ]
    for e, t in zip(events, (100.0, 110.0, 500.0)):
        e.time = t
    pop = Population()
    pop.extend(events)
    assert pop.active_seconds_before == 10.0 and pop.resumes == 1
