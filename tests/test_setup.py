"""scripts/setup.sh stops, with pip's error, when an install fails (CI runs it before the tests: a failed
install must not turn into skipped tests), and goes on when pip only prints the lines it leaves out.

Run against a stand-in virtual environment whose ``python`` fails ``pip install`` for a chosen argument.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parent.parent / "scripts" / "setup.sh"
PIP_ERROR = "ERROR: No matching distribution found for the-package"
FAKE_PYTHON = f"""#!/bin/sh
if [ "$1 $2 $3" = "-m pip install" ]; then
  echo "WARNING: Location of this package is not the one pip expects" >&2
  case " $* " in *" $FAIL_ON "*) echo "{PIP_ERROR}" >&2; exit 3;; esac
  exit 0
fi
echo "imports checked"
"""


def run_setup(tmp_path: Path, fail_on: str) -> subprocess.CompletedProcess:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {**os.environ, "NORMFOLD_VENV": str(python.parent.parent), "FAIL_ON": fail_on}
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("fail_on", ["torch==2.14.1", ".[test]"])
def test_a_failed_install_stops_setup_with_pips_error(tmp_path, fail_on):
    done = run_setup(tmp_path, fail_on)
    assert done.returncode == 3, done
    assert PIP_ERROR in done.stdout + done.stderr
    assert "imports checked" not in done.stdout   # nothing after the failed step ran


def test_an_install_whose_every_line_is_left_out_is_not_a_failure(tmp_path):
    done = run_setup(tmp_path, fail_on="no-such-argument")
    assert done.returncode == 0, done
    assert "WARNING: Location" not in done.stdout + done.stderr
    assert done.stdout.strip() == "imports checked"
