"""What the controller decides for a member at a ready point: one frozen class per kind of
decision (:data:`Decision`), the next :class:`Interval` to train, and the events that record
decisions (:func:`decision_events`, a pure function)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from hyperpop.population import Population
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event

__all__ = [
    "Continue",
    "Decision",
    "Exploit",
    "Explore",
    "Finish",
    "Interval",
    "Kind",
    "Queue",
    "Reset",
    "Wait",
    "decision_events",
]


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
