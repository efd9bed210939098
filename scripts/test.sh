#!/usr/bin/env bash
# The README's test command: set up .venv, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${NORMFOLD_VENV:-.venv}/bin/python" -m pytest -q "$@"
