#!/usr/bin/env bash
# Set up a virtual environment with hyperpop (core only) and run the toy PBT example.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -e .
hyperpop run examples/toy.py --overwrite "$@"
