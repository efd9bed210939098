"""What the command line writes (issue 12): files a plain open() would make (mode under the umask, symlinks
written through), nothing else left in the output directory."""
from __future__ import annotations

import json
import os

import pytest

from normfold.cli import main

from ._workspace import workspace


@pytest.mark.parametrize("mask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_run_writes_files_with_the_mode_open_would_give(tmp_path, capsys, mask):
    d = workspace(tmp_path)
    saved = os.umask(mask)
    try:
        with open(d / "plain", "w"):
            pass
        code = main(["run", str(d / "in.onnx"), "--out", str(d / "out"), "--json", str(d / "r.json")])
    finally:
        os.umask(saved)
    assert code == 0, capsys.readouterr().err
    expected = os.stat(d / "plain").st_mode & 0o777
    assert expected == 0o666 & ~mask
    assert sorted(p.name for p in (d / "out").iterdir()) == ["model.onnx"]   # no staging directory left
    for f in (d / "out" / "model.onnx", d / "r.json"):
        assert os.stat(f).st_mode & 0o777 == expected, f


def test_json_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path, capsys):
    d = workspace(tmp_path)
    (d / "reports").mkdir()
    (d / "reports" / "latest.json").write_text("{}")
    os.chmod(d / "reports" / "latest.json", 0o640)
    (d / "r.json").symlink_to(d / "reports" / "latest.json")
    assert main(["inspect", str(d / "in.onnx"), "--json", str(d / "r.json")]) == 0, capsys.readouterr().err
    assert (d / "r.json").is_symlink()
    assert [f["norm"] for f in json.loads((d / "reports" / "latest.json").read_text())["folded"]] == ["bn"]
    assert os.stat(d / "reports" / "latest.json").st_mode & 0o777 == 0o640
    assert sorted(p.name for p in (d / "reports").iterdir()) == ["latest.json"]


def test_json_to_a_pipe_and_to_dev_null(tmp_path):
    """--json /dev/stdout on a pipe (its real path, /proc/N/fd/pipe:[...], names no file) and /dev/null:
    written in place, nothing created beside them."""
    import subprocess
    import sys
    from pathlib import Path

    d = workspace(tmp_path)
    exe = str(Path(sys.executable).with_name("normfold"))
    got = subprocess.run([exe, "inspect", str(d / "in.onnx"), "--json", "/dev/stdout"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    report, _ = json.JSONDecoder().raw_decode(got.stdout)   # the report, then the human-readable lines
    assert [(f["norm"], f["into"]) for f in report["folded"]] == [("bn", "conv")]
    got = subprocess.run([exe, "inspect", str(d / "in.onnx"), "--json", "/dev/null"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert got.returncode == 0 and got.stderr == "", got.stderr
