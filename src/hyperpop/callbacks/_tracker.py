"""What the experiment trackers share: the run's log turned into per-member records.

A :class:`Tracker` folds the events it is given into a population of its own (so for every
event it knows the member's state just before and after it) and hands its subclass plain
records: a member started with a config, a report (metrics and hyperparameters at a step), a
note (an exploit, explore, rejuvenation, failure), a member ended. It keeps, in the tracker's
own storage, the ``seq`` of the last event it has logged: on :meth:`on_start` it replays the
log from the store and logs only what lies past that mark, so a resumed run continues the same
runs with no event logged twice, and a tracker attached to an existing run (or given a fresh
destination after a resume) is backfilled with the whole history.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from hyperpop.callbacks import Callback
from hyperpop.population import Population
from hyperpop.space import flatten_config
from hyperpop.store import vocabulary as voc
from hyperpop.store.events import Event, encode_data

__all__ = ["RunInfo", "Tracker", "import_extra"]


def import_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import a tracker library, or raise an ImportError that names the extra to install."""
    try:
        importlib.import_module(module.split(".")[0])  # the package first: it may be missing
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{what} needs the '{module}' package: pip install 'hyperpop[{extra}]' ({e})"
        ) from e


@dataclass(frozen=True)
class RunInfo:
    """Who the run is, as the trackers name it.

    Attributes:
        key: stable across resumes and unique per run: the ``run_id`` of its opening event
            if it has one, else a digest of that event (its time, settings, space, pid).
        name: a readable name: the store's file name without ``.db`` (``"hyperpop"`` for a run
            kept in a temporary folder).
        store: the run's SQLite file, or None.
        width: digits of a member's number in its name (``member-03``), fixed by the initial
            population so names sort and stay the same across resumes.
    """

    key: str
    name: str
    store: Path | None
    width: int

    def member(self, member: int) -> str:
        """A member's display name, e.g. ``member-03``."""
        return f"member-{member:0{self.width}d}"


def _run_info(first: Event | None, pop: Population, path: Path | None) -> RunInfo:
    started = first.payload if first is not None else None
    if isinstance(started, voc.RunStarted) and started.run_id:
        key = started.run_id
    else:  # the opening event is unique to the run (its time, pid, settings and space)
        text = encode_data(first.data) if first is not None else encode_data(pop.settings)
        stamp = repr(first.time if first is not None else pop.started)
        key = hashlib.sha1((text + stamp + str(path)).encode()).hexdigest()[:12]
    name = Path(path).name.removesuffix(".db") if path is not None else "hyperpop"
    n = int(pop.settings.get("population") or len(pop.members) or 1)
    return RunInfo(key, name, Path(path) if path is not None else None, max(2, len(str(n - 1))))


def safe_name(text: str) -> str:
    """``text`` with anything but letters, digits, ``-``, ``_`` and ``.`` made ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _number(value.item())
        except (TypeError, ValueError):
            return None
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def config_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``"lr 0.01 -> 0.012, act 'relu' -> 'tanh'"``: the values that changed, flat names."""
    a, b = flatten_config(old), flatten_config(new)
    parts = [f"{k} {_fmt(a.get(k))} -> {_fmt(b.get(k))}" for k in b if k not in a or a[k] != b[k]]
    return ", ".join(parts) or "no change"


@dataclass
class _Pending:
    """An exploit note held back for the explore that usually follows it."""

    step: int
    text: str
    took: str
    time: float
    emit: bool


class Tracker(Callback):
    """Base of the tracker callbacks: subclasses write the records to their tracker.

    Subclasses implement :meth:`_open` (return the ``seq`` already logged), :meth:`_member`,
    :meth:`_report`, :meth:`_note`, :meth:`_member_end`, :meth:`_commit` (make what was
    written durable and record the mark) and :meth:`_close`.
    """

    #: prefix of the hyperparameter scalars
    HP = "hp/"

    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self._fold = Population()
        self._space: dict[str, Any] = {}
        self._metric: str | None = None
        #: exploits waiting for the explore that may follow them, by member
        self._pending: dict[int, _Pending] = {}
        self._logged = 0
        #: every note of the run so far, by member (None: the whole run), logged or not
        self.notes: dict[int | None, list[str]] = {}

    # --- the Callback hooks --------------------------------------------------------------
    def on_start(self, pop: Population, path: Path | None) -> None:
        self._fold = Population()
        self._pending = {}
        self.notes = {}
        past = self._past(pop, path)
        first = past[0] if past and isinstance(past[0].payload, voc.RunStarted) else None
        self.info = _run_info(first, pop, path)
        self._space = dict(pop.space)
        self._metric = pop.metric
        self._logged = int(self._open(pop, self.info))
        upto = pop.last_seq
        for e in past:
            if upto and e.seq is not None and e.seq > upto:
                break
            self._see(e, emit=e.seq is None or e.seq > self._logged)
        self._flush_pending()
        self._commit(self._fold.last_seq or upto)

    def on_events(self, events: Sequence[Event], pop: Population) -> None:
        for e in events:
            if e.seq is not None and e.seq <= self._fold.last_seq:
                continue  # already seen (replayed from the store in on_start)
            self._see(e, emit=True)
        self._flush_pending()
        self._commit(self._fold.last_seq)

    def on_end(self, pop: Population, reason: str) -> None:
        self._flush_pending()
        self._commit(self._fold.last_seq)
        self._close(pop, reason)

    # --- for subclasses ------------------------------------------------------------------
    def _open(self, pop: Population, info: RunInfo) -> int:
        """Open the tracker's destination; return the ``seq`` of the last event it holds."""
        raise NotImplementedError

    def _member(self, member: int, config: dict[str, Any], t: float) -> None:
        """A member starts (``config``: its initial hyperparameters, flat names)."""

    def _report(self, member: int, step: int, values: dict[str, float], t: float) -> None:
        """Scalars at ``step``: the reported metrics and the hyperparameters (``hp/...``)."""

    def _note(self, member: int | None, step: int, text: str, t: float) -> None:
        """Something happened to ``member`` (None: to the run) at ``step``."""

    def _member_end(self, member: int, status: str) -> None:
        """A member finished (``status``: ``finished`` or ``failed``) or trains on again
        (``running``, after its budget was raised)."""

    def _commit(self, seq: int) -> None:
        """Make what was written durable, then record that events up to ``seq`` are logged."""

    def _close(self, pop: Population, reason: str) -> None:
        """The session ends."""

    # --- the records ---------------------------------------------------------------------
    def hyperparameters(self, config: Mapping[str, Any]) -> dict[str, float]:
        """A config's values as scalars, named ``hp/<flat name>``: numbers as they are, bools
        as 0/1, other choices as their index among the options; anything else is left out."""
        out: dict[str, float] = {}
        for k, v in flatten_config(config).items():
            x = _number(v)
            if x is None:
                options = (self._space.get(k) or {}).get("options")
                if options is not None and v in options:
                    x = float(list(options).index(v))
            if x is not None:
                out[self.HP + k] = x
        return out

    def _past(self, pop: Population, path: Path | None) -> list[Event]:
        if path is not None:
            from hyperpop.store.sqlite import SQLiteStore

            store = SQLiteStore(path)
            try:
                return store.read()
            finally:
                store.close()
        # a run kept in a temporary folder has no readable log: it starts now, rebuild its start
        t = pop.started or time.time()
        out = [Event.of(voc.RunStarted(settings=pop.settings, space=pop.space), None, t, 0)]
        out += [
            Event.of(voc.MemberCreated(m.schedule[0].config), m.id, m.created, 0)
            for m in pop.members.values()
        ]
        return out

    def _see(self, e: Event, *, emit: bool) -> None:  # noqa: C901 - one branch per kind
        fold = self._fold
        p = e.payload
        if e.member is not None and e.member in self._pending and not isinstance(p, voc.Explored):
            self._emit_pending(e.member)
        before = {i: m.status for i, m in fold.members.items()} if e.member is None else {}
        old = fold.members.get(e.member) if e.member is not None else None
        old_config, old_status = (old.config, old.status) if old is not None else (None, None)
        fold.apply(e)
        m = fold.members.get(e.member) if e.member is not None else None
        if m is None:
            if isinstance(p, voc.RunResumed):
                self._record(None, 0, f"run resumed (session {fold.resumes + 1})", e.time, emit)
            for i, status in before.items():  # a raised budget revives finished members
                if emit and fold.members[i].status != status:
                    self._member_end(i, str(fold.members[i].status))
            return
        name = self._name(m.id)
        text: str | None = None
        if isinstance(p, voc.MemberCreated):
            if emit:
                self._member(m.id, flatten_config(m.config), e.time)
            if p.by == voc.USER:
                text = f"{name} added by a person"
        elif isinstance(p, voc.Reported):
            if emit:
                self._report(m.id, m.step, self._values(p, m.config), e.time)
        elif isinstance(p, voc.Exploited):
            text = f"{name} copied {self._name(p.donor)} at step {p.at}"
            if p.at != m.step:
                text += f" (its weights of step {m.step})"
            if p.by == voc.USER:
                text += " (by a person)"
            took = ""
            if old_config is not None and old_config != m.config:
                took = f"; took its config: {config_change(old_config, m.config)}"
            self._pending[m.id] = _Pending(m.step, text, took, e.time, emit)
            text = None
        elif isinstance(p, voc.Explored):
            change = config_change(p.old_config or old_config or {}, m.config)
            pending = self._pending.pop(m.id, None)
            if pending is not None:
                text = f"{pending.text}; {change}"
            elif p.by == voc.USER:
                text = f"{name} set by a person at step {m.step}; {change}"
            else:
                text = f"{name} explored ({p.how}) at step {m.step}; {change}"
        elif isinstance(p, voc.Rejuvenated):
            change = config_change(p.old_config or old_config or {}, m.config)
            reset = p.reset or "full"
            text = f"{name} rejuvenated at step {m.step} (reset: {reset}); {change}"
        elif isinstance(p, voc.Failed):
            last = (str(p.error or "").strip().splitlines() or ["?"])[-1][:300]
            text = f"{name} {'failed for good' if p.fatal else 'failed'}: {last}"
        elif isinstance(p, voc.Pinned):
            text = f"{name} {'pinned' if m.pinned else 'unpinned'} by a person"
        if text is not None:
            self._record(m.id, m.step, text, e.time, emit)
        if emit and old_status is not None and m.status != old_status:
            self._member_end(m.id, str(m.status))

    def _record(self, member: int | None, step: int, text: str, t: float, emit: bool) -> None:
        self.notes.setdefault(None, []).append(text)
        if member is not None:
            self.notes.setdefault(member, []).append(text)
        if emit:
            self._note(member, step, text, t)

    def _emit_pending(self, member: int) -> None:
        p = self._pending.pop(member)
        self._record(member, p.step, p.text + p.took, p.time, p.emit)

    def _flush_pending(self) -> None:
        for member in list(self._pending):
            self._emit_pending(member)

    def _values(self, report: voc.Reported, config: Mapping[str, Any]) -> dict[str, float]:
        values: dict[str, float] = {}
        for k, v in flatten_config(report.metrics or {}).items():
            x = _number(v)
            if x is not None:
                values[k] = x
        score = _number(report.score)
        if self._metric and self._metric not in values and score is not None:
            values[self._metric] = score
        values.update(self.hyperparameters(config))
        return values

    def _name(self, member: int) -> str:
        return self.info.member(member) if self.info else f"member-{member}"


def finite(values: Mapping[str, float]) -> dict[str, float]:
    """Only the finite values (for trackers that refuse NaN and infinities)."""
    return {k: v for k, v in values.items() if math.isfinite(v)}
