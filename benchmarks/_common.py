"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def example(name: str) -> ModuleType:
    """Load ``examples/<name>.py`` as a run file (so worker processes can unpickle it)."""
    from hyperpop.userfile import load_file

    return load_file(ROOT / "examples" / f"{name}.py").module


def machine() -> str:
    """A one-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, {platform.system()}"
