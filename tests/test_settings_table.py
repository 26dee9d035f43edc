"""Each setting is declared once (hyperpop.settings.TABLE), and everything comes from it: the
check and its one-line error, the record in the log and its defaults for older logs, and the
command-line options (issue 20, item 5)."""

from __future__ import annotations

import inspect
import json
import re
import sqlite3
from pathlib import Path

import pytest
from cli_jobs import counter_job
from click.testing import CliRunner

import hyperpop as hp
from hyperpop.cli import main
from hyperpop.commands.run import resume as resume_command
from hyperpop.commands.run import run as run_command
from hyperpop.errors import SettingsError
from hyperpop.settings import TABLE, RunSettings

#: a value of each setting other than its default (a new setting must add one here)
OTHER = {
    "metric": "loss",
    "mode": "min",
    "population": 5,
    "workers": 3,
    "budget": [hp.Steps(20), hp.WallTime(60.0), hp.Target(0.9)],
    "ready": hp.Ready(steps=None, seconds=2.5, burn_in=3),
    "exploit": "tournament",
    "explore": "resample",
    "synchronous": True,
    "rejuvenate": hp.Rejuvenate(2, config="keep", reset="shrink_perturb", grace=3),
    "score_window": 3,
    "max_lead": None,
    "deterministic": True,
    "max_failures": 0,
    "step_timeout": 30.5,
    "seed": None,
    "backend": "ray",
    "gpus": ["0", 1],
    "gpus_per_member": 0.5,
    "processes_per_member": 2,
}

#: a bad value of each setting, as hp.run would be given it
BAD = {
    "metric": "",
    "mode": "maximize",
    "population": 0,
    "workers": 1.5,
    "budget": "long",
    "ready": "often",
    "exploit": 3,
    "explore": "perturbb",
    "synchronous": "yes",
    "rejuvenate": "later",
    "score_window": 0,
    "max_lead": 0,
    "deterministic": 1,
    "max_failures": -1,
    "step_timeout": float("inf"),
    "seed": 1.5,
    "backend": "",
    "gpus": 1.5,
    "gpus_per_member": 0,
    "processes_per_member": 0,
}

#: a value each command-line option parses but the setting refuses (switches and choices
#: cannot be given wrong: click refuses the rest)
BAD_OPTION = {
    "metric": ("--metric", "", "metric must be the name of a metric the trainable reports"),
    "population": ("-p", "0", "population must be a positive int, got 0"),
    "workers": ("-w", "0", "workers must be a positive int (members training at once) or 'auto'"),
    "budget": ("--steps", "0", "--steps must be a positive number of training steps"),
    "ready": ("--ready", "0", "must be a positive int, got 0"),
    "exploit": ("--exploit", "truncate", "unknown exploit strategy 'truncate'"),
    "explore": ("--explore", "perturbb", "unknown explore strategy 'perturbb'"),
    "rejuvenate": ("--rejuvenate", "0", "rejuvenate must be a positive number of ready points"),
    "score_window": ("--score-window", "0", "score_window must be a positive int"),
    "max_lead": ("--max-lead", "0", "max_lead must be a positive int or None, got 0"),
    "max_failures": ("--max-failures", "-1", "max_failures must be an int >= 0, got -1"),
    "step_timeout": ("--step-timeout", "0", "step_timeout must be a positive number of seconds"),
    "gpus_per_member": ("--gpus-per-member", "0", "gpus_per_member must be a positive number"),
    "processes_per_member": ("--processes-per-member", "0", "processes_per_member must be a"),
}


def test_every_setting_has_a_value_other_than_its_default_and_a_bad_one_here():
    assert set(OTHER) == set(BAD) == set(TABLE)


def test_every_setting_round_trips_through_the_log():
    default = RunSettings.create(metric="score").to_dict()
    for name, value in OTHER.items():
        settings = RunSettings.create(**{"metric": "score", name: value})
        recorded = json.loads(json.dumps(settings.to_dict()))  # as the store keeps it
        assert recorded[name] != default[name], name
        again = RunSettings.from_dict(recorded)
        assert again.to_dict() == recorded, name
        if name not in ("exploit", "explore"):  # strategies compare by identity
            assert getattr(again, name) == getattr(settings, name), name


def test_a_bad_value_of_each_setting_is_one_line_from_hp_run():
    """Through hp.run itself: every setting reaches the table's check, and nothing runs."""
    for name, value in BAD.items():
        with pytest.raises(SettingsError) as info:
            hp.run(lambda config, checkpoint: None, {"lr": hp.uniform(0.1, 1.0)},
                   **{"metric": "score", name: value}, progress=False)  # fmt: skip
        line = str(info.value)
        assert "\n" not in line, name
        if name not in ("explore", "exploit", "rejuvenate"):  # their own classes say why
            assert line.startswith(f"{name} must be {TABLE[name].expected}, got {value!r}"), line
        else:
            assert repr(value) in line, line


def test_a_log_from_before_a_setting_gets_the_value_of_that_time():
    old = RunSettings.from_dict({"metric": "score"})
    assert old.seed is None  # the one setting whose default changed since
    new = RunSettings.create(metric="score")
    assert old.replace(seed=0) == new.replace(exploit=old.exploit, explore=old.explore)
    recorded_none = RunSettings.from_dict({"metric": "score", "score_window": None, "ready": {}})
    assert recorded_none.score_window == 1 and recorded_none.ready == hp.Ready()


def test_the_settings_an_earlier_release_recorded_read_back_as_they_were():
    conn = sqlite3.connect(":memory:")
    conn.executescript((Path(__file__).parent / "data" / "old_store.sql").read_text())
    rows = [
        json.loads(r[0]) for r in conn.execute("SELECT data FROM events") if '"settings"' in r[0]
    ]
    conn.close()
    assert rows
    default = RunSettings.create(metric="score").to_dict()
    for data in rows:
        recorded = data["settings"]
        written = RunSettings.from_dict(recorded).to_dict()
        assert {k: written[k] for k in recorded} == recorded
        newer = set(written) - set(recorded)  # settings added since: their default
        assert all(written[k] == default[k] for k in newer)


def test_hp_run_takes_every_setting_with_the_tables_default_and_documents_it():
    params = inspect.signature(hp.run).parameters
    doc = inspect.getdoc(hp.run) or ""
    default = RunSettings.create(metric="score").to_dict()
    for name in TABLE:
        assert name in params and f"    {name}: " in doc, name
        if name != "metric":
            given = RunSettings.create(metric="score", **{name: params[name].default})
            assert given.to_dict()[name] == default[name], name
    resume_params = inspect.signature(hp.resume).parameters
    for name, setting in TABLE.items():
        if setting.cli is not None and setting.cli.resume:
            assert name in resume_params, name


def test_every_setting_has_an_option_or_says_why_not():
    run_options = {p.name for p in run_command.params}
    resume_options = {p.name for p in resume_command.params}
    for name, setting in TABLE.items():
        assert setting.help.endswith("."), name
        if setting.cli is None:
            assert setting.api_only, f"{name}: no option and no reason given"
            continue
        assert name in run_options, name
        assert (name in resume_options) == setting.cli.resume, name


def cli(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def test_options_override_the_run_files_settings(tmp_path):
    db = tmp_path / "r.db"
    code, out = cli(
        "run", counter_job(tmp_path), "-s", db, "-q", "--steps", "6", "--ready", "3",
        "--population", "3", "--workers", "1", "--mode", "min", "--exploit", "tournament",
        "--explore", "resample", "--synchronous", "--score-window", "2", "--max-lead", "2",
        "--deterministic", "--max-failures", "1", "--seed", "5", "--rejuvenate", "4",
    )  # fmt: skip
    assert code == 0, out
    recorded = hp.Result.load(db).population.settings
    assert recorded["budget"] == [{"type": "steps", "n": 6}] and recorded["ready"]["steps"] == 3
    assert recorded["population"] == 3 and recorded["workers"] == 1
    assert recorded["mode"] == "min" and recorded["synchronous"] and recorded["deterministic"]
    assert recorded["exploit"]["name"] == "tournament" and recorded["explore"]["name"] == "resample"
    assert (recorded["score_window"], recorded["max_lead"]) == (2, 2)
    assert (recorded["max_failures"], recorded["seed"]) == (1, 5)
    assert recorded["rejuvenate"]["patience"] == 4 and recorded["backend"] == "simulated"


@pytest.mark.parametrize("name", sorted(BAD_OPTION))
def test_a_bad_option_is_one_line_and_creates_nothing(tmp_path, name):
    flag, value, says = BAD_OPTION[name]
    db = tmp_path / "r.db"
    code, out = cli("run", counter_job(tmp_path), "-s", db, "-q", flag, value)
    lines = [x for x in out.splitlines() if x.strip() and not x.startswith("hyperpop: running ")]
    assert code == 1 and len(lines) == 1, out
    assert says in lines[0] and "Traceback" not in out
    assert not db.exists()


@pytest.mark.parametrize("name", ["workers", "step_timeout", "processes_per_member"])
def test_resume_checks_what_it_changes_before_it_opens_anything(tmp_path, name):
    with pytest.raises(SettingsError, match=re.escape(f"{name} must be {TABLE[name].expected}")):
        hp.resume(tmp_path / "missing.db", **{name: BAD[name]})
    assert not list(tmp_path.iterdir())


def test_workers_auto_is_a_setting_of_the_ray_backend_only():
    auto = RunSettings.create(metric="score", workers="auto", backend="ray")
    recorded = json.loads(json.dumps(auto.to_dict()))
    again = RunSettings.from_dict(recorded)
    assert recorded["workers"] == again.workers == "auto" and again.to_dict() == recorded
    with pytest.raises(SettingsError, match="the 'local' backend trains on a fixed number: use"):
        RunSettings.create(metric="score", workers="auto")


@pytest.mark.parametrize(
    "given, says",
    [
        (("-w", "lots"), "--workers must be a number or 'auto', got 'lots'"),
        (("-w", "auto"), "workers='auto' follows a Ray cluster as nodes join and leave; the "
                         "'simulated' backend trains on a fixed number: use backend='ray'"),
    ],
)  # fmt: skip
def test_workers_auto_on_the_command_line_is_one_line_off_ray(tmp_path, given, says):
    db = tmp_path / "r.db"
    code, out = cli("run", counter_job(tmp_path), "-s", db, "-q", *given)
    assert code == 1 and says in out and "Traceback" not in out, out
    assert not db.exists()
