"""Write tests/data/old_store.sql and old_store_state.json with an earlier hyperpop.

Run once, with the earlier release first on the path (the fixture is the log that release
wrote, and the state its fold built from it)::

    git worktree add /tmp/old 60ee65a
    PYTHONPATH=/tmp/old/src .venv/bin/python tests/data/make_old_store.py

The run uses the simulated backend and touches every event kind: reports, checkpoints,
exploits, explores, rejuvenations, a failure, and every request (pin, set, copy, add, budget,
stop a member, stop the run), then a resume to the end. Events in the shape of older logs
(before resets, before ``at``, before request members) are appended by hand after it, and the
earlier fold reads them too. ``state_of`` is shared with tests/test_vocabulary.py.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def state_of(pop: Any) -> dict[str, Any]:
    """What a fold knows, as plain JSON (the same attributes in both releases)."""
    members = {}
    for m in pop.members.values():
        members[str(m.id)] = {
            "status": str(m.status),
            "step": m.step,
            "config": m.config,
            "checkpoint": m.checkpoint,
            "checkpoint_step": m.checkpoint_step,
            "pinned": m.pinned,
            "failures": m.failures,
            "last_error": m.last_error,
            "finish_reason": m.finish_reason,
            "exploits": m.exploits,
            "rejuvenations": m.rejuvenations,
            "parent": m.parent,
            "added": m.added,
            "schedule": [[s.step, s.config, s.member, s.by, s.reset] for s in m.schedule],
            "history": [[s, repr(x)] for s, x in m.history],
            "ready_scores": [repr(x) for x in m.ready_scores],
            "ready_steps": list(m.ready_steps),
            "best_score": repr(m.best_score),
            "pending_reset": m.pending_reset,
            "progress_step": m.progress_step,
        }
    return {
        "members": members,
        "settings": pop.settings,
        "space": pop.space,
        "trainable": pop.trainable,
        "version": pop.version,
        "run_id": pop.run_id,
        "resumes": pop.resumes,
        "finished": pop.finished,
        "finish_reason": pop.finish_reason,
        "stopped": pop.stopped,
        "reports": pop.reports,
        "failures": pop.failures,
        "best_checkpoint": pop.best_checkpoint,
        "best_score": repr(pop.best_score),
        "handled": {str(k): v for k, v in sorted(pop.handled.items())},
        "last_request": pop.last_request,
        "interventions": pop.interventions,
        "edges": [e.to_dict() for e in pop.edges],
        "live_checkpoints": sorted(pop.live_checkpoints()),
        "blobs": sorted(pop.blobs),
        "last_seq": pop.last_seq,
    }


#: events in the shape older logs have (appended after the run, folded by the old release too)
OLDER = [
    # a resume from before version, workers and retry
    ("run_resumed", None, {"pid": 1}),
    # an exploit from before ``at`` (the ready point's step) and ``by``
    ("exploited", 0, {"donor": 2, "step": None, "checkpoint": None}),
    # a rejuvenation from before resets and ``at``: a fresh model at step 0
    ("rejuvenated", 1, {"config": None, "old_config": None}),
    # a pin from before ``pinned`` was written (a pin, then)
    ("pinned", 2, {"request": 900}),
    # an answer from before it named the member
    ("request_handled", None, {"id": 900, "kind": "pin", "status": "done", "reason": "ok"}),
    ("progress", 3, {"step": 1000}),
    ("failed", 3, {"step": 7, "error": "boom", "attempt": 1, "fatal": False}),
    ("run_finished", None, {"reason": "budget"}),
]


def main() -> None:
    import hyperpop as hp
    from hyperpop.callbacks import Callback
    from hyperpop.population import Population
    from hyperpop.store.events import Event
    from hyperpop.store.sqlite import SQLiteStore

    print("hyperpop from", hp.__file__, file=sys.stderr)
    failed = set()

    class Walk(hp.Trainable):
        def setup(self, config: dict[str, Any]) -> None:
            self.x, self.lr = 0.0, config["lr"]

        def train(self) -> dict[str, float]:
            self.x += self.lr
            if self.x > 0.5 and self.lr > 0.3 and "once" not in failed:
                failed.add("once")
                raise RuntimeError("a failure a retry fixes")
            return {"score": -abs(self.x - 1.5), "lr": self.lr}

        def save(self) -> Any:
            return {"x": self.x}

        def load(self, state: Any) -> None:
            self.x = state["x"]

        def apply(self, config: dict[str, Any]) -> None:
            self.lr = config["lr"]

    db = Path("/tmp/old_store.db")
    for p in db.parent.glob(db.name + "*"):
        if p.is_file():
            p.unlink()

    class Requests(Callback):
        def __init__(self) -> None:
            self.ready = 0

        def on_events(self, events: Any, pop: Any) -> None:
            s = hp.steer(db, timeout=None)
            for e in events:
                if e.kind != "checkpointed":
                    continue
                self.ready += 1
                if self.ready == 3:
                    s.pin(0, wait=False)
                    s.set(1, lr=0.25, wait=False)
                    s.copy(2, 3, wait=False)
                    s.add(configs=[{"lr": 0.2}], wait=False)
                if self.ready == 8:
                    s.budget(hp.Steps(14), wait=False)
                    s.stop(3, wait=False)
                    s.request("pin", 99, {"pinned": True}, wait=False)  # refused: no member
                if self.ready == 12:
                    s.stop(wait=False)

    settings: dict[str, Any] = {
        "metric": "score",
        "population": 4,
        "workers": 2,
        "budget": 12,
        "ready": 2,
        "rejuvenate": hp.Rejuvenate(patience=1, reset="full"),
        "deterministic": True,
        "seed": 3,
        "storage": db,
        "backend": "simulated",
    }
    space = {"lr": hp.uniform(0.05, 0.5), "name": "walk", "pair": hp.choice([(1, 2), (3, 4)])}
    hp.run(Walk, space, callbacks=[Requests()], **settings)
    hp.resume(db, trainable=Walk, backend="simulated")

    store = SQLiteStore(db)
    events = store.read()
    last = events[-1].seq or 0
    store.close()
    # the hand-made older-shape events, with ids that exist in this run
    pop = Population()
    for e in events:
        pop.apply(e)
    blob = sorted(pop.blobs, key=lambda b: pop.blobs[b].step)[-1]
    older = []
    for i, (kind, member, data) in enumerate(OLDER):
        data = dict(data)
        if kind == "exploited":
            data["step"], data["checkpoint"] = pop.blobs[blob].step, blob
        if kind == "rejuvenated":
            data["config"] = data["old_config"] = pop.members[1].config
        older.append(Event(kind, member, data, events[-1].time + 1 + i, last + 1 + i))
    conn = sqlite3.connect(db)
    with conn:
        from hyperpop.store.events import encode_data

        conn.executemany(
            "INSERT INTO events (seq, time, kind, member, data) VALUES (?, ?, ?, ?, ?)",
            [(e.seq, e.time, e.kind, e.member, encode_data(e.data)) for e in older],
        )
    dump = "\n".join(conn.iterdump()) + "\n"
    conn.close()
    store = SQLiteStore(db)
    events = store.read()
    store.close()
    pop = Population()
    for e in events:
        pop.apply(e)
    (HERE / "old_store.sql").write_text(dump)
    state = state_of(pop)
    kinds = sorted({e.kind for e in events})
    out = {"release": "60ee65a", "kinds": kinds, "events": len(events), "state": state}
    (HERE / "old_store_state.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(len(events), "events;", kinds, file=sys.stderr)


if __name__ == "__main__":
    main()
