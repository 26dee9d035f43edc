"""Helpers of the integrations' tests: the diffs of docs/integrations.md, the benchmark."""

from __future__ import annotations

import importlib.util
import re
import runpy
from pathlib import Path
from typing import Any


def docs_diff(name: str) -> tuple[str, str, int]:
    """(before, after, changed lines) of the unified diff in docs/integrations.md whose new file
    is ``name``."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "integrations.md").read_text()
    blocks = [b for b in re.findall(r"```diff\n(.*?)```", text, flags=re.S) if f"+++ {name}\n" in b]
    assert len(blocks) == 1, f"docs/integrations.md has no single diff to {name}"
    before, after, changed = [], [], 0
    for line in blocks[0].splitlines()[2:]:
        if line.startswith("@@"):
            continue
        tag, rest = line[:1], line[1:]
        if tag in ("", " "):
            before.append(rest)
            after.append(rest)
        else:
            assert tag in "+-", line
            (after if tag == "+" else before).append(rest)
            changed += 1
    return "\n".join(before) + "\n", "\n".join(after) + "\n", changed


def run_script(path: Path, text: str) -> None:
    """Run ``text`` as the script ``path`` in this process (as ``python path`` would)."""
    path.write_text(text)
    runpy.run_path(str(path), run_name="__main__")


def integrations_benchmark() -> Any:
    """benchmarks/integrations.py as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "integrations.py"
    spec = importlib.util.spec_from_file_location("bench_integrations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
