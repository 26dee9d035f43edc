"""Controller and store scale: decisions per second and events written per second.

Simulated reports, no training: a population of N members, each reporting a random score and a
checkpoint at every ready point (asynchronous PBT, truncation + perturb). Measures

* the controller: time of one decision (``Controller.on_ready``, then ``Controller.decide`` as
  the driver does when the member gets a worker) with the population folded in,
  as the driver calls it;
* the store: events written per second to an SQLite store, one transaction per report (what the
  driver does: the report, the checkpoint and the decision events together), and the reports
  per second that implies.

    python benchmarks/scale.py                 # 10, 100, 1,000 and 10,000 members
    python benchmarks/scale.py --smoke         # tiny sizes (CI)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import hyperpop as hp
from hyperpop.controller import Controller, Ready, Steps, decision_events
from hyperpop.population import Population
from hyperpop.space import Space
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import SQLiteStore
from hyperpop.strategies import make_exploit, make_explore

SPACE = {"lr": hp.loguniform(1e-4, 1e-1), "momentum": hp.uniform(0.0, 0.99)}


def _population(n: int, rng: np.random.Generator) -> tuple[Population, Space]:
    space = Space(SPACE)
    events = [Event(ev.RUN_STARTED, None, {"settings": {"mode": "max"}, "space": {}}, 0.0)]
    events += [Event(ev.MEMBER_CREATED, i, {"config": space.sample(rng)}, 0.0) for i in range(n)]
    pop = Population.from_events(events)
    for i in range(n):  # everyone has a first ready point
        pop.extend(_report(i, 1, float(rng.random())))
    return pop, space


def _report(member: int, step: int, score: float) -> list[Event]:
    return [
        Event(ev.REPORTED, member, {"step": step, "score": score, "metrics": {"acc": score}}, 1.0),
        Event(ev.CHECKPOINTED, member, {"step": step, "checkpoint": f"m{member}-s{step}"}, 1.0),
    ]


def measure(n: int, decisions: int, seed: int = 0) -> dict[str, float]:
    """Decision latency and store throughput for a population of ``n``."""
    rng = np.random.default_rng(seed)
    pop, space = _population(n, rng)
    controller = Controller(
        space,
        mode="max",
        ready=Ready(steps=1),
        budget=[Steps(10**9)],
        exploit=make_exploit("truncation"),
        explore=make_explore("perturb"),
        seed=seed,
    )
    tmp = tempfile.TemporaryDirectory()
    store = SQLiteStore(Path(tmp.name) / "scale.db", write=True)
    store.append(pop_events := [Event(ev.RUN_STARTED, None, {}, 1.0)])
    del pop_events
    lat: list[float] = []
    store_s = 0.0
    events_written = 0
    t_all = time.perf_counter()
    for _ in range(decisions):
        member = int(rng.integers(n))
        m = pop.members[member]
        events = _report(member, m.step + 1, float(rng.random()))
        pop.extend(events)
        t0 = time.perf_counter()
        decided = controller.on_ready(pop, member, 1.0)
        if [d.kind for d in decided] == ["queue"]:  # asynchronous: decided when dispatched
            decided = controller.decide(pop, member, 1.0)
        lat.append(time.perf_counter() - t0)
        out = decision_events(decided, pop, 1.0)
        t1 = time.perf_counter()
        store.append(events + out)
        store_s += time.perf_counter() - t1
        events_written += len(events) + len(out)
        pop.extend(out)
        pop.drain_dead()
    total = time.perf_counter() - t_all
    # batched writes: how fast the store can take events when handed 100 reports at once
    batch = [e for j in range(100) for e in _report(j % n, 10**6 + j, 0.5)]
    t0 = time.perf_counter()
    rounds = max(1, decisions // 100)
    for _ in range(rounds):
        store.append([Event(e.kind, e.member, e.data, e.time) for e in batch])
    batched = rounds * len(batch) / (time.perf_counter() - t0)
    # what the driver writes per finished interval with ready=4: four reports and a
    # checkpoint in one transaction (results of one poll share a transaction too)
    t0 = time.perf_counter()
    for j in range(decisions):
        member = j % n
        store.append(
            [
                Event(ev.REPORTED, member, {"step": 4 * j + k, "score": 0.5, "metrics": {}}, 1.0)
                for k in range(1, 5)
            ]
            + [Event(ev.CHECKPOINTED, member, {"step": 4 * j + 4, "checkpoint": "x"}, 1.0)]
        )
    interval_reports = 4 * decisions / (time.perf_counter() - t0)
    store.close()
    tmp.cleanup()
    lat_ms = sorted(x * 1e3 for x in lat)
    return {
        "n": n,
        "decisions": decisions,
        "median_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))],
        "decisions_per_s": decisions / sum(lat),
        "store_events_per_s": events_written / store_s,
        "store_reports_per_s": decisions / store_s,
        "store_batched_events_per_s": batched,
        "store_interval_reports_per_s": interval_reports,
        "loop_reports_per_s": decisions / total,
    }


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--decisions", type=int, default=2000)
    args = p.parse_args(argv)
    sizes = args.sizes or ([10, 100] if args.smoke else [10, 100, 1000, 10000])
    decisions = 50 if args.smoke else args.decisions
    rows = [measure(n, decisions) for n in sizes]
    print(
        f"{'members':>8} {'decision ms (median)':>21} {'p99 ms':>8} {'decisions/s':>12} "
        f"{'store events/s':>15} {'store reports/s':>16} {'batched events/s':>17} "
        f"{'loop reports/s':>15} {'reports/s (ready=4)':>20}"
    )
    for r in rows:
        print(
            f"{r['n']:>8} {r['median_ms']:>21.3f} {r['p99_ms']:>8.3f} "
            f"{r['decisions_per_s']:>12.0f} "
            f"{r['store_events_per_s']:>15.0f} {r['store_reports_per_s']:>16.0f} "
            f"{r['store_batched_events_per_s']:>17.0f} {r['loop_reports_per_s']:>15.0f} "
            f"{r['store_interval_reports_per_s']:>20.0f}"
        )
    return rows


if __name__ == "__main__":
    main()
