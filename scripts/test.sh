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
# One process: on the shared 2-core machine, `-n 2` (pytest-xdist) was no faster under load, and two
# PyTorch-heavy tests side by side slowed each other past 10x. Where cores are idle, pass
# `-n 2 --dist loadgroup` (the Ray tests then share one process: tests/conftest.py).
# The 15 slowest tests are printed: one over about 5 s belongs in tests/conftest.py's SLOW.
# `pytest -m "not slow"` runs the fast part only.
python -m pytest -q --durations=15 "$@"
