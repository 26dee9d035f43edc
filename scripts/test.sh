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
python -m pytest -q --durations=15 "$@"
