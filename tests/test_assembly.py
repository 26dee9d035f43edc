"""One assembly path for run and resume: validated settings, owned lifetimes, numbered events."""

from __future__ import annotations

import pytest

import hyperpop as hp
from hyperpop.backends.local import LocalBackend
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.callbacks import Callback
from hyperpop.errors import SettingsError, StoreError
from hyperpop.settings import RunSettings
from hyperpop.store import events as ev
from hyperpop.store.events import Event
from hyperpop.store.sqlite import MemoryStore, SQLiteStore


def climb(config, checkpoint):
    start = checkpoint or 0
    for i in range(start, 1000):
        hp.report(score=config["x"] * (i + 1), checkpoint=i + 1)


SPACE = {"x": hp.uniform(0.0, 1.0)}


def test_settings_round_trip_through_the_log():
    s = RunSettings.create(
        metric="score",
        mode="min",
        population=5,
        budget=[hp.Steps(20), hp.WallTime(60)],
        ready=hp.Ready(steps=3, burn_in=6),
        exploit="tournament",
        explore="resample",
        rejuvenate=2,
        score_window=3,
        step_timeout=30,
        seed=7,
    )
    again = RunSettings.from_dict(s.to_dict())
    assert again.to_dict() == s.to_dict()
    assert again.budget == (hp.Steps(20), hp.WallTime(60)) and again.rejuvenate == hp.Rejuvenate(2)


@pytest.mark.parametrize(
    "kw, says",
    [
        ({"population": 0}, "population must be a positive int, got 0"),
        ({"mode": "maximize"}, "mode must be 'max' or 'min', got 'maximize'"),
        ({"score_window": 0}, "score_window must be a positive int"),
        ({"max_lead": 0}, "max_lead must be a positive int or None, got 0"),
        ({"max_failures": -1}, "max_failures must be an int >= 0, got -1"),
        ({"step_timeout": 0}, "step_timeout must be a positive number of seconds"),
        ({"budget": [10]}, "budget entries must be hp.Steps, hp.WallTime or hp.Target"),
        ({"ready": "often"}, "ready must be an int (steps) or hp.Ready"),
        ({"seed": 1.5}, "seed must be an int or None, got 1.5"),
    ],
)
def test_every_bad_setting_is_one_line_in_one_format(kw, says):
    with pytest.raises(SettingsError) as info:
        RunSettings.create(metric="score", **kw)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_backend_instance_takes_no_options_it_would_ignore():
    with pytest.raises(SettingsError, match="backend_options are for a backend named"):
        hp.run(climb, SPACE, metric="score", backend=SimulatedBackend(2),
               backend_options={"duration": None}, progress=False)  # fmt: skip
    with pytest.raises(SettingsError, match="workers=3 but the 'simulated' backend instance"):
        hp.run(climb, SPACE, metric="score", backend=SimulatedBackend(2), workers=3,
               progress=False)  # fmt: skip
    res = hp.run(climb, SPACE, metric="score", population=2, budget=4,
                 backend=SimulatedBackend(2), workers=2, progress=False)  # fmt: skip
    assert res.population.settings["workers"] == 2


def test_a_stored_run_is_refused_before_a_ray_backend_connects(tmp_path):
    pytest.importorskip("ray")
    db = tmp_path / "r.db"
    hp.run(climb, SPACE, metric="score", population=2, budget=4, backend="simulated",
           storage=db, progress=False)  # fmt: skip
    # nothing listens there: connecting first would fail with a cluster error instead
    with pytest.raises(hp.RunExistsError):
        hp.run(climb, SPACE, metric="score", storage=db, backend="ray",
               backend_options={"address": "ray://127.0.0.1:1", "connect_timeout": 1})  # fmt: skip


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_store_takes_numbered_events_only_in_sequence(tmp_path, kind):
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.db", write=True)
    first = [Event(ev.RUN_STARTED, None, {"settings": {"metric": "score"}})]
    store.append(first)
    assert first[0].seq == 1
    with pytest.raises(StoreError, match="numbered 3 but the log's next number is 2"):
        store.append([Event(ev.MEMBER_CREATED, 0, {"config": {}}, seq=3)])
    ok = [Event(ev.MEMBER_CREATED, 0, {"config": {}}, seq=2), Event(ev.MEMBER_CREATED, 1, {})]
    store.append(ok)
    assert [e.seq for e in store.read()] == [1, 2, 3]  # nothing of the refused call was kept
    store.close()


def test_the_simulated_clock_drives_wall_time_budgets_and_event_times():
    """On the simulated backend the driver's clock is the simulation's (one second a step):
    a wall-time budget ends the run at the same point every time, whatever the machine."""

    def once():
        return hp.run(climb, SPACE, metric="score", population=4, workers=2, ready=2, seed=3,
                      budget=hp.WallTime(10), backend="simulated", progress=False)  # fmt: skip

    a, b = once(), once()
    assert a.summary()["reason"] == b.summary()["reason"] == "wall time of 10s reached"
    steps = [m.step for m in a.members]
    assert steps == [m.step for m in b.members] and sum(steps) <= 2 * 12
    times = [e.time for e in a.events if e.kind == ev.REPORTED]
    assert max(times) - min(times) <= 12  # simulated seconds, not the machine's


def visible(config, checkpoint):
    import os

    start = checkpoint or 0
    for i in range(start, 1000):
        hp.report(score=float(i), gpu=int(os.environ["CUDA_VISIBLE_DEVICES"]), checkpoint=i + 1)


def test_gpus_and_gpus_per_member_reach_the_local_workers_and_are_recorded():
    res = hp.run(visible, SPACE, metric="score", population=4, budget=2, ready=1,
                 gpus=["0", "1"], gpus_per_member=0.5, progress=False)  # fmt: skip
    settings = res.population.settings
    assert settings["workers"] == 4 and settings["gpus"] == ["0", "1"]
    assert settings["gpus_per_member"] == 0.5
    assert {r["gpu"] for r in res.records()} == {0, 1}


def test_gpu_settings_are_given_once_and_only_where_they_can_be_placed():
    with pytest.raises(SettingsError, match="gpus_per_member is given twice"):
        hp.run(visible, SPACE, metric="score", gpus=["0"], gpus_per_member=1,
               backend_options={"gpus_per_member": 0.5})  # fmt: skip
    with pytest.raises(SettingsError, match="cannot place members on GPUs"):
        hp.run(visible, SPACE, metric="score", gpus=["0"], backend="simulated")
    with pytest.raises(SettingsError, match="gpus_per_member must be a positive number"):
        hp.run(visible, SPACE, metric="score", gpus_per_member=0)


class Interrupt(Callback):
    """Stops the driver like Ctrl-C once the first reports are written."""

    def on_events(self, events, pop):
        if any(e.kind == ev.REPORTED for e in events):
            raise KeyboardInterrupt


def test_resume_on_another_backend_does_not_take_the_recorded_worker_count(tmp_path):
    import os

    db = tmp_path / "r.db"
    with pytest.raises(KeyboardInterrupt):
        hp.run(climb, SPACE, metric="score", population=4, workers=3, budget=4, ready=2,
               backend="simulated", storage=db, progress=False,
               callbacks=[Interrupt()])  # fmt: skip
    res = hp.resume(db, climb, backend="local", progress=False)
    resumed = [e for e in res.events if e.kind == ev.RUN_RESUMED]
    assert resumed[0].data["workers"] == os.cpu_count()  # the local default, not the 3 slots
    assert res.summary()["status"] == "finished" and all(m.step == 4 for m in res.members)


def test_a_simulated_run_resumed_on_it_keeps_the_log_in_time_order(tmp_path):
    """The simulation runs ahead of the wall clock; a resume starts its clock after the log's
    last event, so times never go back (readers plot and time runs by them)."""
    db = tmp_path / "r.db"
    with pytest.raises(KeyboardInterrupt):
        hp.run(climb, SPACE, metric="score", population=4, budget=40, ready=2, seed=1,
               backend="simulated", storage=db, progress=False,
               callbacks=[Interrupt()])  # fmt: skip
    res = hp.resume(db, climb, progress=False)
    times = [e.time for e in res.events]
    assert res.population.resumes == 1 and times == sorted(times)


def test_a_backend_instance_is_not_silently_given_other_ranks_per_member():
    with pytest.raises(SettingsError, match="processes_per_member=2 but the 'local' backend"):
        hp.run(climb, SPACE, metric="score", backend=LocalBackend(1), processes_per_member=2,
               progress=False)  # fmt: skip
