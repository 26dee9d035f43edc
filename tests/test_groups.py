"""Sub-populations and roles (MF-PBT, FIRE-PBT) show in Result, status, lineage and the
dashboard (issue 23, item 4)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

import hyperpop as hp
from hyperpop.backends.simulated import SimulatedBackend
from hyperpop.cli import main
from hyperpop.dashboard.data import RunView
from hyperpop.dashboard.figures import page_data
from hyperpop.strategies import FIREPBT, MFPBT
from hyperpop.summary import group_of
from hyperpop.userfile import load_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MF = {0: "mf 1/2 (every 1)", 1: "mf 2/2 (every 4)"}
FIRE = {0: "greedy", 1: "greedy", 2: "greedy", 3: "parent", 4: "parent", 5: "parent"}
FIRE |= {6: "evaluator", 7: "evaluator"}


def _run(db: Path, exploit: object) -> hp.Result:
    rf = load_file(EXAMPLES / "deceptive.py")
    return hp.run(
        rf.trainable,
        rf.space,
        metric="Q",
        mode="max",
        population=8,
        budget=hp.Steps(60),
        ready=5,
        seed=3,
        exploit=exploit,
        storage=db,
        backend=SimulatedBackend(workers=2),
        progress=False,
    )


def _label(name: str, member: int) -> str:
    return MF[member % 2] if name == "mf" else FIRE[member % 8]


def cli(*args: object) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module", params=["mf", "fire"])
def run(request, tmp_path_factory):
    db = tmp_path_factory.mktemp(request.param) / "run.db"
    exploit = MFPBT((1, 4)) if request.param == "mf" else FIREPBT()
    _run(db, exploit)
    return request.param, db, hp.Result.load(db)


def test_group_labels_come_from_the_recorded_settings():
    settings = {"exploit": MFPBT((1, 2, 4)).describe(), "population": 12}
    assert [group_of(settings, i) for i in range(4)] == [
        "mf 1/3 (every 1)",
        "mf 2/3 (every 2)",
        "mf 3/3 (every 4)",
        "mf 1/3 (every 1)",
    ]
    # too few members for three sub-populations of four: the fastest and the slowest
    assert group_of({**settings, "population": 8}, 1) == "mf 2/2 (every 4)"
    fire = {"exploit": FIREPBT(greedy=2, parents=2, evaluators=1).describe(), "population": 10}
    assert [group_of(fire, i) for i in range(6)] == [
        "greedy", "greedy", "parent", "parent", "evaluator", "greedy"
    ]  # fmt: skip
    assert group_of({"exploit": {"name": "truncation", "quantile": 0.25}}, 3) is None
    assert group_of({}, 3) is None
    # settings that no longer build a strategy label nobody instead of failing the read
    assert group_of({"exploit": {"name": "mfpbt", "frequencies": []}}, 0) is None


def test_result_shows_each_members_group(run):
    name, _, res = run
    rows = res.records()
    assert rows and all(r["group"] == _label(name, r["member"]) for r in rows)
    assert list(rows[0])[:3] == ["member", "group", "step"]
    assert all(m.group == _label(name, m.id) for m in res.members)
    assert res.best.group == _label(name, res.best.id)
    lineage = res.lineage()
    assert lineage
    for e in lineage:
        assert (e["group"], e["donor_group"]) == (
            _label(name, e["member"]),
            _label(name, e["donor"]),
        )
    pd = pytest.importorskip("pandas")
    table = res.table()
    assert isinstance(table, pd.DataFrame)
    assert table.groupby("group")["member"].nunique().to_dict() == (
        {MF[0]: 4, MF[1]: 4} if name == "mf" else {"greedy": 3, "parent": 3, "evaluator": 2}
    )


def test_status_counts_members_per_group_and_lineage_labels_them(run):
    name, db, _ = run
    out = cli("status", db)
    line = next(x for x in out.splitlines() if x.strip().startswith("groups:"))
    if name == "mf":
        assert line.split(": ", 1)[1] == f"4 {MF[0]}, 4 {MF[1]}"
    else:
        assert line.split(": ", 1)[1] == "3 greedy, 3 parent, 2 evaluator"
    rows = list(csv.DictReader(io.StringIO(cli("lineage", db))))
    assert rows
    for r in rows:
        assert r["group"] == _label(name, int(r["member"]))
        assert r["donor_group"] == _label(name, int(r["donor"]))


def test_dashboard_page_data_carries_groups_whole_and_incrementally(run):
    name, _, res = run
    whole = page_data(RunView(res.events))
    assert {r["member"]: r["group"] for r in whole["members"]} == {
        i: _label(name, i) for i in range(8)
    }
    assert sum(whole["summary"]["groups"].values()) == 8
    # a page that has the first half of the log gets the changed members' rows, with groups
    half = len(res.events) // 2
    view = RunView(res.events[:half])
    since = view.seq
    view.update(res.events[half:])
    part = page_data(view, since=since)
    assert part["members"]
    assert all(r["group"] == _label(name, r["member"]) for r in part["members"])


def test_a_strategy_without_groups_shows_none(tmp_path):
    res = _run(tmp_path / "plain.db", "truncation")
    assert "group" not in res.records()[0]
    assert res.summary()["groups"] == {}
    assert all(m.group is None for m in res.members)
    assert all("group" not in e for e in res.lineage())
    assert "groups:" not in cli("status", tmp_path / "plain.db")
    rows = page_data(RunView(res.events))["members"]
    assert rows and all(r["group"] is None for r in rows)


#: what the page drew of the groups: each member line's colour and legend entry, the table's
#: group cells and the groups card
DRAWN = """() => {
  const data = document.getElementById('plot-scores')._fullData;
  const lines = data.filter((t) => t.meta.kind === 'member');
  const card = document.querySelector('#summary .card[data-key="groups"] .v');
  return {
    lines: lines.map((t) => [t.meta.member, t.meta.group, t.line.color, t.showlegend, t.name]),
    cells: Array.from(document.querySelectorAll('#members tbody tr')).map(
      (r) => [Number(r.dataset.member), r.querySelector('td.group').textContent]),
    card: card ? card.textContent : null,
    legend: Array.from(document.querySelectorAll('#plot-scores .legendtext'))
      .map((t) => t.textContent),
  };
}"""


@pytest.mark.parametrize("run", ["fire"], indirect=True)  # a browser once: three groups
def test_the_page_colours_members_by_group(run, tmp_path):
    pytest.importorskip("plotly")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is absent (apt-get install chromium)")
    name, db, _ = run
    out = tmp_path / "report.html"
    cli("report", db, "-o", out)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri())
            page.wait_for_function("Number(document.body.dataset.renders || 0) >= 1")
            shown = page.evaluate(DRAWN)
        finally:
            browser.close()
    assert not errors, errors
    colours: dict[str, set[str]] = {}
    for member, group, colour, legend, label in shown["lines"]:
        assert group == _label(name, member)
        colours.setdefault(group, set()).add(colour)
        assert label == (group if legend else f"member {member} ({group})")
    assert all(len(c) == 1 for c in colours.values())  # one colour per group
    assert len(set().union(*colours.values())) == len(colours)  # and a different one each
    assert sum(legend for *_, legend, _ in shown["lines"]) == len(colours)  # one legend entry each
    assert set(colours) <= set(shown["legend"])
    assert sorted(shown["cells"]) == [[i, _label(name, i)] for i in range(8)]
    want = f"4 {MF[0]}, 4 {MF[1]}" if name == "mf" else "3 greedy, 3 parent, 2 evaluator"
    assert shown["card"] == want
