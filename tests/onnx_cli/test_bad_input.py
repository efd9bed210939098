"""Bad .onnx input on the command line: exit 2, one line naming the file, no file written, the input untouched."""
from __future__ import annotations

import hashlib
import json

import onnx
import pytest
from onnx import TensorProto, helper

from normfold.cli import main

from ..fold_onnx.test_external_data import BAD_DATA
from ._files import conv_bn_relu


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _not_onnx(d):
    (d / "notes.onnx").write_text("these are my notes, not a model\n")
    return d / "notes.onnx"


def _truncated(d):
    data = conv_bn_relu()[0].SerializeToString()
    (d / "cut.onnx").write_bytes(data[: len(data) // 2])
    return d / "cut.onnx"


def _directory(d):
    (d / "folder.onnx").mkdir()
    return d / "folder.onnx"


def _over_2gb(d):
    with open(d / "huge.onnx", "wb") as f:   # sparse: no disk used
        f.truncate(2**31 + 16)
    return d / "huge.onnx"


def _two_inputs(d):
    return _save(conv_bn_relu(extra_inputs=1)[0], d / "two.onnx")


def _string_input(d):
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["y"])], "text",
                              [helper.make_tensor_value_info("text", TensorProto.STRING, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.STRING, ["n", 8])])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), d / "text.onnx")


def _symbolic(d):
    return _save(conv_bn_relu(shape=("n", 3, "h", "w"))[0], d / "dyn.onnx")


def _unknown_opset(d):
    model = conv_bn_relu()[0]
    model.opset_import[0].version = 99
    return _save(model, d / "future.onnx")


def _unknown_op(d):
    tail = [helper.make_node("Sharpen", ["relu_out"], ["y"], domain="com.example")]
    model = conv_bn_relu(tail=tail)[0]
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    return _save(model, d / "custom.onnx")


def _missing(d):
    return d / "nowhere.onnx"


# name: (make the file, extra arguments, the message)
CASES = {
    "not-onnx": (_not_onnx, [], "is not a valid ONNX model"),
    "truncated": (_truncated, [], "is not a valid ONNX model"),
    "directory": (_directory, [], "is a directory, not an ONNX file"),
    "missing": (_missing, [], "does not exist"),
    **{f"external-data-{name}": (make, [], message) for name, (make, message) in BAD_DATA.items()},
    "over-2gb": (_over_2gb, [], "over protobuf's 2 GB limit"),
    "unnamed-shape-of-two-inputs": (_two_inputs, ["--input-shape", "1,3,8,8"],
                                    "takes 2 inputs (x, x1); name the shape of each: --input-shape x=1,3,8,8"),
    "unknown-input-name": (_symbolic, ["--input-shape", "image=1,3,8,8"], "has no input 'image' (its inputs: x)"),
    "string-input": (_string_input, [], "input 'text' is a STRING; normfold feeds float32/float16, integer and bool"),
    "symbolic-dims": (_symbolic, [], "has shape ['n', 3, 'h', 'w'] with symbolic axis 2 (h), axis 3 (w); "
                                     "give --input-shape N,C,H,W"),
    "shape-does-not-fit": (_symbolic, ["--input-shape", "1,4,8,8"], "--input-shape 1,4,8,8 does not fit"),
    "unknown-opset": (_unknown_opset, [], "onnxruntime cannot load"),
    "unknown-op": (_unknown_op, [], "com.example"),
}


def _snapshot(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and p.stat().st_size < 2**30 else None
            for p in d.iterdir()}


# inspect runs the fold pass only, which skips what it does not know: no error there (tested below)
PASS_ONLY = {"unknown-op", "unknown-opset"}
COMBINATIONS = [pytest.param(command, *case, id=f"{command}-{name}")
                for command in ("run", "inspect", "verify", "bench") for name, case in CASES.items()
                if not (command == "inspect" and name in PASS_ONLY)]


@pytest.mark.parametrize("command, make, extra, message", COMBINATIONS)
def test_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, command, make, extra, message):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    src = make(src_dir)
    before = _snapshot(src_dir)
    out = tmp_path / "out"
    argv = {
        "run": ["run", str(src), "--out", str(out), "--json", str(tmp_path / "r.json")],
        "inspect": ["inspect", str(src), "--json", str(tmp_path / "r.json")],
        "verify": ["verify", str(src), str(src), "--json", str(tmp_path / "r.json")],
        "bench": ["bench", str(src), "--rounds", "1", "--runs-per-round", "1", "--warmup", "1",
                  "--creation-repeats", "1", "--providers", "cpu", "--json", str(tmp_path / "r.json")],
    }[command] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("normfold: error: ") and message in err[0]
    if message != "does not exist":
        assert str(src) in err[0] or src.name in err[0] or "--input-shape" in err[0]
    assert _snapshot(src_dir) == before
    assert not (tmp_path / "r.json").exists()
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("make", [_unknown_op, _unknown_opset], ids=["unknown-op", "unknown-opset"])
def test_inspect_reports_the_sites_of_a_file_onnxruntime_cannot_load(tmp_path, capsys, make):
    """inspect runs the fold pass only: what it does not know is no site, the rest is reported."""
    src = make(tmp_path)
    assert main(["inspect", str(src), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(f["norm"], f["into"]) for f in data["folded"]] == [("bn", "conv")]


@pytest.mark.parametrize("target", ["out", "json"])
def test_run_never_writes_over_its_input(tmp_path, capsys, target):
    src = _save(conv_bn_relu()[0], tmp_path / "model.onnx")
    before = src.read_bytes()
    argv = ["run", str(src)] + (["--out", str(tmp_path)] if target == "out"
                                else ["--out", str(tmp_path / "o"), "--json", str(src)])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would overwrite the input file" in err[0] and str(src) in err[0]
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
