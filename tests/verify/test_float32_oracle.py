"""Files onnx.reference cannot evaluate (com.microsoft ops): folded, and verified against the original on
onnxruntime in float32, the report naming that oracle and what its pass is worth."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

import normfold
from normfold.cli import main
from normfold.verify import verify

from ..conftest import FLOOR_ULPS, K, third_party_file
from ..onnx_cli._files import conv_bn_relu, conv_bn_relu_float64

SHAPE = (1, 3, 8, 8)
ALPHA = 1.702


def quickgelu_file(path):
    """Conv -> BatchNormalization -> Relu -> com.microsoft QuickGelu (x * sigmoid(1.702 x)); returns the
    float32 parameters for an independent float64 computation."""
    model, params = conv_bn_relu()
    model.graph.node[-1].output[0] = "relu_out"
    model.graph.node.append(helper.make_node("QuickGelu", ["relu_out"], ["y"], name="gelu",
                                             domain="com.microsoft", alpha=ALPHA))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    return params


def fusedconv_file(path):
    """onnxruntime's own optimized file (ORT_ENABLE_EXTENDED, saved): Conv+Relu becomes com.microsoft
    FusedConv; the BatchNormalization after the Relu stays for normfold to fold into the 1x1 Conv after it."""
    rng = np.random.default_rng(3)
    arrays = {"w1": rng.standard_normal((4, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(4) * 0.1,
              "g": rng.uniform(0.5, 1.5, 4), "be": rng.standard_normal(4) * 0.1,
              "mu": rng.standard_normal(4) * 0.3, "var": rng.uniform(0.2, 2, 4),
              "w2": rng.standard_normal((5, 4, 1, 1)) * 0.3, "b2": rng.standard_normal(5) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("BatchNormalization", ["r1", "g", "be", "mu", "var"], ["bn"], name="bn", epsilon=1e-3),
             helper.make_node("Conv", ["bn", "w2", "b2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "plain", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                             ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 5, 8, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    plain = path.with_name("plain.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(plain))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(path)
    ort.InferenceSession(str(plain), opts, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == ["FusedConv", "BatchNormalization", "Conv"]


BUILDERS = {"quickgelu": quickgelu_file, "fusedconv": fusedconv_file}


def ort_run(path, x: np.ndarray, level: str = "ORT_DISABLE_ALL") -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


def one_ulp_away(x: np.ndarray) -> np.ndarray:
    """x moved by one float32 ulp, up or down as the oracle does (seed 0, one draw per element)."""
    up = np.random.default_rng(0).random(x.shape) >= 0.5
    return np.nextafter(x.astype(np.float32), np.where(up, np.inf, -np.inf).astype(np.float32))


@pytest.fixture(params=sorted(BUILDERS))
def contrib_file(request, tmp_path):
    path = tmp_path / "in" / f"{request.param}.onnx"
    path.parent.mkdir()
    params = BUILDERS[request.param](path)
    return request.param, path, params


def test_run_folds_and_verifies_against_the_original_in_float32(contrib_file, tmp_path, capsys):
    name, src, params = contrib_file
    out, js = tmp_path / "out", tmp_path / "r.json"
    code = main(["run", str(src), "--input-shape", ",".join(map(str, SHAPE)), "--out", str(out), "--json", str(js)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "errors against the float32 oracle" in text and text.rstrip().endswith("PASS")
    report = json.loads(js.read_text())
    assert "BatchNormalization" in report["op_counts"]["unfolded"]
    assert "BatchNormalization" not in report["op_counts"]["folded"]
    assert [f["norm"] for f in report["fold"]["folded"]] == ["bn"]
    checked = report["verify"]
    custom = {"quickgelu": "QuickGelu (com.microsoft)", "fusedconv": "FusedConv (com.microsoft)"}[name]
    assert checked["oracle"] == "float32" and f"onnx.reference has no {custom}" in checked["rule"]
    assert "spread" in checked["claim"] and "cannot see" in checked["claim"]
    # the numbers, computed here on onnxruntime: truth = the original with optimizations off; the
    # original's error = the farther of ORT_ENABLE_ALL and the input one ulp away; the checked file as written
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).numpy()
    truth = ort_run(src, x)
    spread = max(np.abs(ort_run(src, x, "ORT_ENABLE_ALL") - truth).max(),
                 np.abs(ort_run(src, one_ulp_away(x)) - truth).max())
    err = np.abs(ort_run(out / "model.onnx", x, "ORT_ENABLE_ALL") - truth).max()
    rows = {c["run"]: c for c in checked["checks"] if c["batch"] == 1}
    assert rows["original_fp32"]["max_abs"] == pytest.approx(spread, rel=1e-6, abs=1e-12) and spread > 0
    assert rows["onnx_cpu"]["max_abs"] == pytest.approx(err, rel=1e-6, abs=1e-12)
    assert rows["onnx_cpu"]["allowed"] == pytest.approx(
        K * spread + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(truth).max(), rel=1e-6)
    if name == "quickgelu":   # and the fold is right in float64 too, against torch
        relu = conv_bn_relu_float64(params, torch.from_numpy(x))
        exact = relu / (1 + np.exp(-ALPHA * relu))
        e32 = np.abs(truth - exact).max()
        assert np.abs(ort_run(out / "model.onnx", x) - exact).max() <= K * e32 + 1e-6 * np.abs(exact).max()


def test_api_fold_and_verify_pass_and_a_wrong_fold_fails(contrib_file, tmp_path):
    _, src, _ = contrib_file
    folded, fold_report = normfold.fold_onnx(str(src), input_shapes={"x": list(SHAPE)})
    assert [f.norm for f in fold_report.folded] == ["bn"]
    good, bad = tmp_path / "folded.onnx", tmp_path / "wrong.onnx"
    onnx.save(folded, str(good))
    into = next(n for n in folded.graph.node if n.name == fold_report.folded[0].into)
    weights = {i.name: i for i in folded.graph.initializer}
    w = numpy_helper.to_array(weights[into.input[1]])
    weights[into.input[1]].CopyFrom(numpy_helper.from_array(w * np.float32(1.001), into.input[1]))
    onnx.save(folded, str(bad))
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    report = verify(str(src), good, x)
    assert report.ok and report.oracle == "float32" and report.to_dict()["oracle"] == "float32"
    wrong = verify(str(src), bad, x)
    assert not wrong.ok and {c.run for c in wrong.failures()} == {"onnx_cpu"}
    truth = ort_run(src, x.numpy())
    fail = wrong.failures()[0]
    assert fail.stats.max_abs == pytest.approx(np.abs(ort_run(bad, x.numpy(), "ORT_ENABLE_ALL") - truth).max(),
                                               rel=1e-6)
    assert fail.stats.max_abs > 10 * fail.allowed   # far outside: a 1e-3 weight error, not rounding
    assert [d.node for d in wrong.localization] == [into.name]   # the corrupted node, found in float32 too


def test_a_dynamically_quantized_file_with_a_contrib_lstm_goes_through(tmp_path, capsys):
    """ddddocr's quantized recognizer (com.microsoft DynamicQuantizeLSTM) was refused whole: now verified
    against itself in float32, with nothing folded into a quantized weight."""
    src = third_party_file("ddddocr-ocr-quant")
    js = tmp_path / "r.json"
    code = main(["run", str(src), "--input-shape", "1,1,64,160", "--out", str(tmp_path / "out"), "--json", str(js)])
    text = capsys.readouterr().out
    assert code == 0, text
    report = json.loads(js.read_text())
    assert report["verify"]["oracle"] == "float32"
    assert "DynamicQuantizeLSTM (com.microsoft)" in report["verify"]["rule"]
    before, after = report["op_counts"]["unfolded"], report["op_counts"]["folded"]
    for op in ("ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM"):
        assert after.get(op) == before.get(op), op
