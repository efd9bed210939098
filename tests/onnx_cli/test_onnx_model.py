"""An .onnx file as MODEL: `normfold run/inspect/verify/bench FILE.onnx`, with the file's graph as the oracle."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch

from normfold.cli import main

from ..conftest import K, FLOOR_ULPS, run_onnx
from ._files import conv_bn_relu, conv_bn_relu_float64, to_float16


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def conv_bn(tmp_path):
    model, params = conv_bn_relu()
    path = tmp_path / "in" / "third_party.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    return path, params


def test_run_writes_the_folded_file_and_verifies_it_against_the_input_graph(conv_bn, tmp_path, capsys):
    src, params = conv_bn
    before = _digest(src)
    out, js = tmp_path / "out", tmp_path / "r.json"
    code = main(["run", str(src), "--out", str(out), "--json", str(js)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "front end  onnx" in text and text.rstrip().endswith("PASS")
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]
    assert _digest(src) == before and sorted(p.name for p in src.parent.iterdir()) == ["third_party.onnx"]
    report = json.loads(js.read_text())
    assert report["fold"]["front_end"] == "onnx"
    assert report["input_shape"] == [1, 3, 8, 8]   # a symbolic batch axis is checked at 1 and 3
    assert report["op_counts"]["unfolded"] == {"Conv": 1, "BatchNormalization": 1, "Relu": 1}
    assert report["op_counts"]["folded"] == {"Conv": 1, "Relu": 1}
    assert report["files"] == {"folded": str(out / "model.onnx")} and report["model"] == str(src)
    assert [(f["norm"], f["into"]) for f in report["fold"]["folded"]] == [("bn", "conv")]
    verify = report["verify"]
    assert verify["ok"] and "oracle = original ONNX graph in float64" in verify["rule"]
    assert {(c["run"], c["batch"]) for c in verify["checks"]} == {
        (r, b) for r in ("original_fp32", "onnx_cpu") for b in (1, 3)}
    # the numbers, computed independently: torch in float64, onnxruntime on the written file
    x = torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    truth = conv_bn_relu_float64(params, x)
    e_ref = float(np.abs(run_onnx(src, x) - truth).max())
    err = float(np.abs(run_onnx(out / "model.onnx", x) - truth).max())
    rows = {c["run"]: c for c in verify["checks"] if c["batch"] == 1}
    assert rows["original_fp32"]["max_abs"] == pytest.approx(e_ref, rel=1e-6, abs=1e-12)
    assert rows["onnx_cpu"]["max_abs"] == pytest.approx(err, rel=1e-6, abs=1e-12)
    assert err <= K * e_ref + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(truth).max()


def test_run_with_input_shape_fixes_symbolic_dims(tmp_path, capsys):
    model, params = conv_bn_relu(shape=("n", 3, "h", "w"))
    src = tmp_path / "dyn.onnx"
    onnx.save(model, str(src))
    js = tmp_path / "r.json"
    assert main(["run", str(src), "--input-shape", "2,3,10,6", "--out", str(tmp_path / "o"), "--json", str(js)]) == 0
    report = json.loads(js.read_text())
    assert report["input_shape"] == [2, 3, 10, 6] and report["verify"]["ok"]
    assert {c["batch"] for c in report["verify"]["checks"]} == {1, 3}   # the batch axis stays symbolic
    assert onnx.load(str(tmp_path / "o" / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[2].dim_param == "h"


def _run_half(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.half().numpy()})[0].astype(np.float64)


def test_run_on_a_float16_file_holds_it_to_its_own_float16_error(tmp_path, capsys):
    model, params = conv_bn_relu()
    src = tmp_path / "half.onnx"
    onnx.save(to_float16(model), str(src))
    js = tmp_path / "r.json"
    assert main(["run", str(src), "--out", str(tmp_path / "o"), "--json", str(js)]) == 0, capsys.readouterr().out
    verify = json.loads(js.read_text())["verify"]
    assert "float16 original's error" in verify["rule"] and verify["environment"]["dtype"] == "float16"
    # independently: the fp16 weights in float64 are the truth; the folded fp16 file within 8 e16 + one fp16 ulp
    half = {k: v.astype(np.float16).astype(np.float32) for k, v in params.items()}
    x = torch.randn((1, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    truth = conv_bn_relu_float64(half, x)   # the input itself is rounded to float16 by both runs
    e16 = float(np.abs(_run_half(src, x) - truth).max())
    err = float(np.abs(_run_half(tmp_path / "o" / "model.onnx", x) - truth).max())
    row = next(c for c in verify["checks"] if c["run"] == "onnx_cpu" and c["batch"] == 1)
    assert row["max_abs"] == pytest.approx(err, rel=1e-6, abs=1e-12)
    assert err <= K * e16 + np.finfo(np.float16).eps * np.abs(truth).max()


@pytest.mark.parametrize("opset", [11, 13, 21], ids=lambda o: f"opset{o}")
def test_other_opsets_run_end_to_end(tmp_path, capsys, opset):
    model, _ = conv_bn_relu(opset=opset)
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    assert main(["run", str(src), "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().out
    assert onnx.load(str(tmp_path / "o" / "model.onnx")).opset_import[0].version == opset


def test_an_op_the_pass_does_not_know_is_left_in_place(tmp_path, capsys):
    """LpNormalization after the Relu: no fold site, kept; the file still folds, runs and verifies."""
    tail = [onnx.helper.make_node("LpNormalization", ["relu_out"], ["y"], axis=1, p=2)]
    model, _ = conv_bn_relu(tail=tail)
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    assert main(["run", str(src), "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().out
    folded = onnx.load(str(tmp_path / "o" / "model.onnx"))
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu", "LpNormalization"]


def test_verify_original_against_folded(conv_bn, tmp_path, capsys):
    src, _ = conv_bn
    out = tmp_path / "out"
    assert main(["run", str(src), "--out", str(out)]) == 0
    capsys.readouterr()
    js = tmp_path / "v.json"
    assert main(["verify", str(src), str(out / "model.onnx"), "--batch-sizes", "2", "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert data["verify"]["ok"] and data["model"] == str(src)
    assert data["verify"]["environment"]["oracle"].startswith("original ONNX graph in float64")
    assert {c["batch"] for c in data["verify"]["checks"]} == {2}


def test_verify_fails_with_exit_1_and_names_the_node(conv_bn, tmp_path, capsys):
    src, _ = conv_bn
    bad = onnx.load(str(src))
    w = next(i for i in bad.graph.initializer if i.name == "w")
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * np.float32(1.001), "w"))
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    assert main(["verify", str(src), str(tmp_path / "bad.onnx")]) == 1
    out = capsys.readouterr().out
    assert "first divergence: ONNX node conv (Conv), tensor conv_out" in out and "FAIL" in out


def test_wrong_weight_in_the_folded_file_is_localized_to_its_node(conv_bn, tmp_path, capsys):
    """The pass gives a rewritten tensor a new name, so the first shared tensor that diverges is the
    folded Conv's output (it carries the norm's output name)."""
    src, _ = conv_bn
    assert main(["run", str(src), "--out", str(tmp_path / "out")]) == 0
    folded = onnx.load(str(tmp_path / "out" / "model.onnx"))
    conv = next(n for n in folded.graph.node if n.op_type == "Conv")
    w = next(i for i in folded.graph.initializer if i.name == conv.input[1])
    w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * np.float32(1.001), w.name))
    onnx.save(folded, str(tmp_path / "bad.onnx"))
    capsys.readouterr()
    assert main(["verify", str(src), str(tmp_path / "bad.onnx")]) == 1
    out = capsys.readouterr().out
    assert f"first divergence: ONNX node {conv.name} (Conv), tensor {conv.output[0]}" in out


def test_inspect_lists_the_report_of_the_onnx_pass(conv_bn, capsys):
    src, _ = conv_bn
    assert main(["inspect", str(src), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["front_end"] == "onnx" and data["model"] == str(src) and data["input_shape"] == [1, 3, 8, 8]
    assert [(f["norm"], f["into"]) for f in data["folded"]] == [("bn", "conv")] and data["skipped"] == []
    assert main(["inspect", str(src)]) == 0
    assert capsys.readouterr().out == (f"model  {src}   input 1,3,8,8\nfront  onnx\nnorms  1: 1 folded, 0 skipped\n"
                                       "  folded  bn -> conv (backward; conv-backward)\n")


def test_bench_two_files_side_by_side(conv_bn, tmp_path, capsys):
    src, _ = conv_bn
    out = tmp_path / "out"
    assert main(["run", str(src), "--out", str(out)]) == 0
    js = tmp_path / "b.json"
    fast = ["--rounds", "2", "--runs-per-round", "2", "--warmup", "1", "--creation-repeats", "1",
            "--opt-levels", "disable", "--providers", "cpu"]
    assert main(["bench", str(src), str(out / "model.onnx"), *fast, "--json", str(js)]) == 0
    data = json.loads(js.read_text())
    assert [v["name"] for v in data["variants"]] == ["third_party", "model"]
    assert [(r["numerator"], r["denominator"]) for r in data["ratios"]] == [("model", "third_party")]
    assert data["sample_shape"] == [3, 8, 8]
