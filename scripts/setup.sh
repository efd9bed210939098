#!/usr/bin/env bash
# Create .venv (if missing) and install torch 2.14.1 + torchvision 0.29.1 + normfold with test extras.
# torch and torchvision are pinned as a matching pair and installed first: on this machine's disk they are a
# pair that imports together (PyPI's torchvision does not import beside the torch 2.13.0 CPU file), and an
# unpinned torch pulled in by another package would download a CUDA build of several GB.
# Idempotent: a second run only re-checks. Set NORMFOLD_VENV to use another path.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NORMFOLD_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi

# pip install, its "WARNING: Location" lines left out; a failed install stops set-up (and so CI) with pip's error.
# (grep exits 1 when it leaves out every line: that is not a failure; with pipefail, pip's own status counts.)
pip_install() {
  local status=0
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v "^WARNING: Location" || true; } \
    || status=$?
  if [ "$status" -ne 0 ]; then
    echo "scripts/setup.sh: pip install $* failed (exit $status)" >&2
    exit "$status"
  fi
}

pip_install "torch==2.14.1" "torchvision==0.29.1"
pip_install -e ".[test]"
"$venv/bin/python" -c "import normfold, onnxruntime, torch; print('normfold', normfold.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__)"
