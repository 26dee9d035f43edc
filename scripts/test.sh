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
# Two processes (CI has two cores; most tests wait on worker processes they start); the Ray
# tests share one process (tests/conftest.py), so one Ray cluster runs at a time. The 15 slowest
# tests are printed: one over about 5 s belongs in tests/conftest.py's SLOW.
# `pytest -m "not slow"` runs the fast part only.
python -m pytest -q --durations=15 -n 2 --dist loadgroup "$@"
