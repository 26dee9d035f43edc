"""The architecture's floors: an import only ever points down (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hyperpop"

FLOORS = [
    {"__main__"},
    {"cli"},
    {"commands"},  # the command line calls the public API
    {"__init__"},
    {"run", "replay", "testing"},
    {"session"},  # one session assembled: the controller, the backend, the driver
    {"driver"},
    {"settings", "steering", "scheduling", "journal", "monitor", "metric"},
    {"controller", "live", "integrations"},
    {
        "strategies",
        "decisions",
        "candidates",
        "results",
        "backends",
        "torch",
        "vectorized",
        "callbacks",
    },
    {"dashboard"},
    {"summary"},  # the read side: one fold for Result, the live view, dashboard and CLI
    {"population", "userfile", "steer", "runfiles"},
    {"space", "store", "trainable", "checkpoints", "distributed"},
    {"errors", "_version", "parameters", "ranking", "criteria"},
]


def floor_of(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"hyperpop.{module} is on no floor: add it to docs/architecture.md")


def imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hyperpop"):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("hyperpop")]
    return out


def test_imports_only_point_down():
    wrong = []
    for path in SRC.rglob("*.py"):
        me = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mine = floor_of(me)
        for target in imports(path):
            rel = target.removeprefix("hyperpop").lstrip(".") or "__init__"
            if rel.split(".")[0] == me.split(".")[0]:
                continue  # inside one package
            if floor_of(rel) <= mine:
                wrong.append(f"{me} (floor {mine}) imports {target} (floor {floor_of(rel)})")
    assert not wrong, "\n".join(wrong)


def test_the_controller_never_sees_a_backend_or_the_store():
    for name in ("controller.py", "strategies/base.py", "strategies/exploit.py"):
        targets = imports(SRC / name)
        assert not [
            t for t in targets if t.startswith(("hyperpop.backends", "hyperpop.store.sqlite"))
        ]


def test_the_architecture_doc_shows_these_floors():
    section = (SRC.parents[1] / "docs" / "architecture.md").read_text().split("## Floors")[1]
    rows = [line.split("|") for line in section.splitlines() if line[:3].strip("| ").isdigit()]
    documented = [{name.strip(" `") for name in row[2].split(",")} for row in rows]
    assert documented == FLOORS
