"""Ctrl-C and SIGTERM (issue 12): one line, exit 128 + the signal, no debris, earlier outputs intact.

The console script runs in a subprocess; the signal is sent at a moment the
test observes (never after a sleep): while torch is still importing (the
script has installed its handlers: SIGTERM shows as caught in
/proc/PID/status, long before ``import normfold`` returns), or once the
staging directory of ``normfold run`` exists (the model is being exported).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._workspace import snapshot, workspace

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="polls /proc (Linux)")

EXE = Path(sys.executable).with_name("normfold")
POLL_LIMIT_S = 120   # a hung child fails the test instead of hanging CI; not a timing assertion


def _start(d: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([str(EXE), "run", "user.py:tiny", "--input-shape", "1,3,8,8", "--out", str(out)],
                            cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _poll(proc: subprocess.Popen, ready) -> None:
    """Wait until ``ready()``; fail if the child exits first."""
    deadline = time.monotonic() + POLL_LIMIT_S
    while not ready():
        assert proc.poll() is None, f"exited before the signal could be sent: {proc.communicate()}"
        assert time.monotonic() < deadline, "the child never reached the state to interrupt"
        time.sleep(0.005)


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def _finish(proc: subprocess.Popen) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=POLL_LIMIT_S)
    return proc.returncode, err.splitlines()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_while_exporting_removes_the_staging_and_keeps_the_previous_outputs(tmp_path, sig):
    d = workspace(tmp_path)
    out = d / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"the previous run's model")
    before = snapshot(d)
    proc = _start(d, out)
    _poll(proc, lambda: any(p.name.startswith(".normfold-") for p in out.iterdir()))
    proc.send_signal(sig)
    code, err = _finish(proc)
    assert code == 128 + sig
    assert err == [f"normfold: interrupted ({signal.Signals(sig).name})"]
    assert snapshot(d) == before   # no staging directory, no .tmp file, model.onnx as it was


def test_ctrl_c_while_torch_imports_is_one_line(tmp_path):
    d = workspace(tmp_path)
    before = snapshot(d)
    proc = _start(d, d / "out")
    _poll(proc, lambda: _catches_sigterm(proc.pid))
    proc.send_signal(signal.SIGINT)
    code, err = _finish(proc)
    assert code == 130
    assert err == ["normfold: interrupted (SIGINT)"]
    assert snapshot(d) == before and not (d / "factory-called").exists()


def test_output_into_a_reader_that_has_gone_ends_quietly(tmp_path):
    """`normfold zoo | head -0`: the pipe's reader is closed before the command prints (it is still importing)."""
    proc = subprocess.Popen([str(EXE), "zoo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=POLL_LIMIT_S) == 128 + signal.SIGPIPE
    assert err == ""
