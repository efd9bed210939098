"""`normfold run FILE.onnx` runs onnxsim on the folded graph: never more nodes than onnxsim alone leaves;
--no-simplify keeps the fold as it is; where onnxsim fails or its graph fails the check, the fold is kept."""
from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import onnxsim
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import normfold
from normfold.cli import main

from ..conftest import FLOOR_ULPS, K, run_onnx
from ._files import conv_bn_relu, conv_bn_relu_float64

SHAPE = (1, 3, 8, 8)


def with_shape_arithmetic(path):
    """conv_bn_relu, then a flatten whose target shape is computed (Shape, Gather, Unsqueeze, Concat), an
    Identity, and a Mul by a scalar computed from two Constants (0.5 * 2): y = relu(bn(conv(x))).reshape(1, -1).
    Returns the float32 parameters."""
    model, params = conv_bn_relu(shape=SHAPE)
    g = model.graph
    g.node[-1].output[0] = "relu_out"
    g.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "zero"),
                          numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])

    def constant(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))

    g.node.extend([
        helper.make_node("Shape", ["relu_out"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        constant("axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Identity", ["relu_out"], ["same"]),
        helper.make_node("Reshape", ["same", "target"], ["flat"]),
        constant("half", np.array(0.5, np.float32)),
        constant("two", np.array(2.0, np.float32)),
        helper.make_node("Mul", ["half", "two"], ["unit"]),
        helper.make_node("Mul", ["flat", "unit"], ["y"]),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4 * 8 * 8]))
    onnx.save(model, str(path))
    return params


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in" / "shapes.onnx"
    path.parent.mkdir()
    return path, with_shape_arithmetic(path)


def nodes(model) -> int:
    return len((onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model).graph.node)


def run(src, out, *extra) -> tuple[int, dict]:
    js = out.with_suffix(".json")
    code = main(["run", str(src), "--out", str(out), "--json", str(js), *extra])
    return code, json.loads(js.read_text())


def assert_right(path, src):
    """``path`` on onnxruntime is as close to the graph in float64 (torch) as the float32 original is."""
    original, params = src
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    truth = conv_bn_relu_float64(params, x).reshape(1, -1)
    e32 = np.abs(run_onnx(original, x) - truth).max()
    err = np.abs(run_onnx(path, x) - truth).max()
    assert err <= K * e32 + FLOOR_ULPS * np.finfo(np.float32).eps * np.abs(truth).max()


def test_run_leaves_no_more_nodes_than_onnxsim_and_no_simplify_keeps_the_fold(src, tmp_path):
    path, _ = src
    alone, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok
    folded, _ = normfold.fold_onnx(str(path))
    assert nodes(folded) > nodes(alone)     # the fold alone leaves the constant Mul onnxsim removes

    code, report = run(path, tmp_path / "default")
    assert code == 0, report["verify"]["notes"]
    written = tmp_path / "default" / "model.onnx"
    assert nodes(written) <= nodes(alone)
    assert report["op_counts"]["folded"] == collections.Counter(n.op_type for n in onnx.load(str(written)).graph.node)
    assert f"simplify: onnxsim after the fold: {nodes(folded)} -> {nodes(written)} nodes" in report["verify"]["notes"]
    assert_right(written, src)

    code, report = run(path, tmp_path / "kept", "--no-simplify")
    assert code == 0
    kept = tmp_path / "kept" / "model.onnx"
    assert [n.op_type for n in onnx.load(str(kept)).graph.node] == [n.op_type for n in folded.graph.node]
    assert "simplify: not simplified (--no-simplify)" in report["verify"]["notes"]
    assert_right(kept, src)


def _raises(out):
    raise RuntimeError("no schema for this op")


def _scales_the_conv_weight(out):
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    weight = next(i for i in out.graph.initializer if i.name == conv.input[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01), weight.name))


def _reads_nothing(out):
    out.graph.node[-1].input[0] = "nowhere"


@pytest.mark.parametrize("spoil, note", [
    (_raises, "simplify: onnxsim failed (RuntimeError: no schema for this op): kept the folded graph"),
    (_scales_the_conv_weight, "but its graph failed the check and the folded graph passes: kept that"),
    (_reads_nothing, "but its graph was refused (ExportError: onnx.checker rejected"),
], ids=["onnxsim-raises", "wrong-weights", "checker-refuses"])
def test_the_folded_graph_is_written_where_onnxsim_fails(src, tmp_path, monkeypatch, spoil, note):
    """onnxsim raising, or its graph off by 1% in the conv's weight (fails verify), or reading a tensor
    nothing produces (onnx.checker refuses it): the folded graph is written, verified, and the note says why."""
    path, _ = src
    folded, _ = normfold.fold_onnx(str(path))
    real = onnxsim.simplify

    def spoiled(model, *args, **kwargs):
        out, ok = real(model, *args, **kwargs)
        spoil(out)
        return out, ok

    monkeypatch.setattr(onnxsim, "simplify", spoiled)
    code, report = run(path, tmp_path / "out")
    assert code == 0 and report["verify"]["ok"]
    assert nodes(tmp_path / "out" / "model.onnx") == nodes(folded)
    assert any(note in n for n in report["verify"]["notes"]), report["verify"]["notes"]
    assert_right(tmp_path / "out" / "model.onnx", src)
