"""The README's Python snippets run verbatim as scripts, with no main guard (issue 11, item 3)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_a_readme_snippet_runs_as_a_script(tmp_path, index):
    """Each snippet runs; one that stores its run runs a second time in the same folder too,
    as a reader who runs it again would (issue 19: RunExistsError)."""
    script = tmp_path / f"snippet{index}.py"
    script.write_text(SNIPPETS[index])
    for _ in range(2 if "storage=" in SNIPPETS[index] else 1):
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr


def test_the_tensorboard_extra_brings_the_viewer_it_tells_people_to_run():
    """Issue 19: `[tensorboard]` installed the writer only, so `tensorboard --logdir` was not
    there to read the logs."""
    import tomllib

    root = README.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[ ]", req, maxsplit=1)[0] for req in extras["tensorboard"]}
    assert {"tensorboardX", "tensorboard"} <= names
    assert "`tensorboard --logdir runs/tb`" in (root / "docs" / "trackers.md").read_text()
