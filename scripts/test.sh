#!/usr/bin/env bash
# Set up a virtual environment with hyperpop and every extra, then run lint, the type checker and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch is pinned in constraints.txt to the CPU wheel; the library itself accepts a range.
python -m pip install -q -c constraints.txt -e ".[test,torch,ray,raytune,dashboard,examples,pb2,lightning,transformers,tensorboard,mlflow,wandb]"
ruff check .
ruff format --check .
mypy
# Compile the project's modules once: where Python is told not to write bytecode
# (PYTHONDONTWRITEBYTECODE, set on some CI images), each of the hundreds of worker processes the
# tests start would compile hyperpop, its examples and the test helpers from source again.
python -m compileall -q src tests examples benchmarks >/dev/null
# Tests run in up to 4 processes (pytest-xdist; 2 on a 2-core machine): most tests wait on worker
# processes, sockets or a browser as much as they compute, so two at a time fill two cores. Each
# test process and every worker it starts runs its numerical libraries on one thread
# (tests/conftest.py), so side-by-side PyTorch tests do not starve each other, and the Ray tests
# share one cluster on one of the processes (`--dist loadgroup`).
# The 15 slowest tests are printed: one over about 5 s belongs in tests/conftest.py's SLOW.
# `pytest -m "not slow"` runs the fast part only; `-n 0` runs everything in this process.
python -m pytest -q -n "$(python -c 'import os; print(min(4, os.cpu_count() or 1))')" \
    --dist loadgroup --durations=15 "$@"
