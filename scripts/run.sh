#!/usr/bin/env bash
# The README's main command: set up .venv, then `normfold run` (default: the bundled default model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
exec "${NORMFOLD_VENV:-.venv}/bin/normfold" run "$@"
