"""`normfold run`: exit 0 on pass, 1 on a failed check, 2 on bad input with one line and no files."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from normfold.cli import main

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn


    def tiny():
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(4)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), bn, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


    def raises():
        raise RuntimeError("factory is broken")


    def not_a_module():
        return 42
''')


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(MODEL_FILE)
    return path


def test_run_passes_and_writes_files_and_json(model_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", f"{model_file}:tiny", "--input-shape", "1,3,8,8", "--out", str(out), "--json", str(tmp_path / "r.json")])
    text = capsys.readouterr().out
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.unfolded.onnx"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verify"]["ok"] is True
    assert [f["norm"] for f in report["fold"]["folded"]] == ["1"]
    assert report["op_counts"]["unfolded"]["BatchNormalization"] == 1
    assert "BatchNormalization" not in report["op_counts"]["folded"]
    assert report["files"] == {"folded": str(out / "model.onnx"), "unfolded": str(out / "model.unfolded.onnx")}
    assert report["model"] == f"{model_file}:tiny" and report["input_shape"] == [1, 3, 8, 8]
    assert "PASS" in text and "1 folded, 0 skipped" in text


def test_run_exits_1_when_the_fold_is_wrong(model_file, tmp_path, capsys, wrong_fold):
    wrong_fold("0.weight", 2, 1.01)   # the folded conv, 1% off on one output channel
    code = main(["run", f"{model_file}:tiny", "--input-shape", "1,3,8,8", "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert code == 1, text
    assert "FAIL" in text and "fold site 1 -> 0" in text


@pytest.mark.parametrize(
    "spec, shape, message",
    [
        ("no-such-model", "1,3,8,8", "unknown model 'no-such-model'"),
        ("{dir}/missing.py:tiny", "1,3,8,8", "does not exist"),
        ("{file}:raises", "1,3,8,8", "factory is broken"),
        ("{file}:nothing", "1,3,8,8", "has no callable 'nothing'"),
        ("{file}:not_a_module", "1,3,8,8", "not a torch.nn.Module"),
        ("{file}:tiny", "1,5,8,8", "rejects input shape 1,5,8,8"),
        ("{file}:tiny", "1,3,9,9", "rejects input shape 1,3,9,9"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_files(model_file, tmp_path, capsys, spec, shape, message):
    out = tmp_path / "out"
    spec = spec.format(dir=tmp_path, file=model_file)
    code = main(["run", spec, "--input-shape", shape, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_unwritable_output_directory_exits_2(model_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["run", f"{model_file}:tiny", "--input-shape", "1,3,8,8", "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be written" in err and str(blocker) in err
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("shape", ["1,x3", "1,,3", "1,3,", "1,0,8", "a,b", ""])
def test_malformed_input_shape_exits_2_before_building_a_model(capsys, shape):
    assert main(["run", "--input-shape", shape]) == 2
    err = capsys.readouterr().err
    assert "expected an input shape of positive integers" in err and repr(shape) in err


def test_console_script_runs_the_default_model(tmp_path):
    exe = Path(sys.executable).with_name("normfold")  # installed beside the interpreter running the tests
    assert exe.is_file(), f"console script missing: {exe}"
    proc = subprocess.run(
        [exe, "run", "--input-shape", "1,3,32,32", "--out", str(tmp_path), "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"] == "resnet18-iternorm"
    assert len(report["fold"]["folded"]) == 20 and report["fold"]["skipped"] == []
    assert "MatMul" in report["op_counts"]["unfolded"] and "MatMul" not in report["op_counts"]["folded"]


@pytest.mark.parametrize("text, expected", [
    ("short reason", "short reason"),
    ("TraceError: Proxy object cannot be iterated. " + "More words. " * 20 + "(at tasks.py:163 in forward: f(x))",
     "TraceError: Proxy object cannot be iterated. (at tasks.py:163 in forward: f(x))"),
    ("y" * 200, "y" * 160 + " ..."),
], ids=["short", "sentence-and-location", "no-sentence"])
def test_a_long_reason_is_shown_briefly(text, expected):
    from normfold.cli._common import brief

    assert brief(text) == expected
