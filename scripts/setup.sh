#!/usr/bin/env bash
# Create .venv (if missing) and install torch 2.13.0 + normfold with test extras.
# Idempotent: a second run only re-checks. Set NORMFOLD_VENV to use another path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NORMFOLD_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" -c "import normfold, onnxruntime, torch; print('normfold', normfold.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
