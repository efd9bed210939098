"""Eval-mode export with both torch exporters: plain ops only, same outputs on onnxruntime.

One small model holds every foldable layer, so the whole file costs four exports.
"""
from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

from normfold.nn import LayerNorm2d, WSConv2d, create_norm
from normfold.nn.bake import bake_weights

from ..conftest import assert_equivalent_outputs, populate_stats, run_onnx

# What a frozen channel map may lower to: no eigendecomposition, solve or inverse.
PLAIN_OPS = {"Conv", "Relu", "BatchNormalization", "Reciprocal", "Sub", "Add", "Mul", "Div", "MatMul", "Reshape", "Constant", "Sqrt", "Transpose", "Identity", "Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Cast"}
INPUT = (2, 3, 8, 8)


def all_norms_model() -> nn.Module:
    layers = [nn.Conv2d(3, 8, 3, padding=1)]
    for name, kw in [
        ("bn", {}), ("center", {}), ("scale", {}), ("brn", {}), ("decorr", {"group_size": 4}),
        ("pca", {"group_size": 4}), ("zca", {"group_size": 8}), ("zca", {"group_size": 4, "running": "wm"}),
        ("cholesky", {"group_size": 4}), ("iternorm", {"group_size": 4}), ("iternorm", {"group_size": 8, "running": "cov"}),
    ]:
        layers += [create_norm(name, 8, **kw), nn.ReLU()]
    return nn.Sequential(*layers)


def _torch_onnx(model: nn.Module, x: torch.Tensor, dynamo: bool) -> tuple[onnx.ModelProto, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, (x,), dynamo=True, optimize=False, verbose=False)
            return program.model_proto, program.exported_program
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17)
        return onnx.load_from_string(buf.getvalue()), None


@pytest.fixture(scope="module")
def norms_model():
    torch.manual_seed(0)
    return populate_stats(all_norms_model(), (16, 3, 8, 8))


@pytest.fixture(scope="module", params=[True, False], ids=["dynamo", "torchscript"])
def exported(request, norms_model, tmp_path_factory):
    x = torch.randn(INPUT)
    proto, program = _torch_onnx(copy.deepcopy(norms_model), x, request.param)
    path = tmp_path_factory.mktemp("nn_export") / "norms.onnx"
    onnx.save(proto, path)
    return proto, program, path


def test_export_has_no_linalg_op(exported):
    proto, program, _ = exported
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= PLAIN_OPS, f"unexpected ops: {sorted(ops - PLAIN_OPS)}"
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    if program is not None:  # the torch.export graph itself
        targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert not [t for t in targets if "linalg" in t or "eigh" in t or "cholesky" in t], targets


def test_export_runs_on_onnxruntime_with_the_same_outputs(exported, norms_model):
    x = torch.randn(INPUT, generator=torch.Generator().manual_seed(5))
    assert_equivalent_outputs(norms_model, run_onnx(exported[2], x), x)


def test_per_sample_norms_export_as_native_layernorm(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), LayerNorm2d(8)).eval()
    proto, _ = _torch_onnx(model, torch.randn(INPUT), dynamo=True)
    assert "LayerNormalization" in {n.op_type for n in proto.graph.node}
    onnx.save(proto, tmp_path / "ln.onnx")
    x = torch.randn(INPUT)
    assert_equivalent_outputs(model, run_onnx(tmp_path / "ln.onnx", x), x)


def weight_normalized_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        WSConv2d(3, 8, 3, padding=1), nn.ReLU(),
        parametrizations.weight_norm(nn.Conv2d(8, 8, 3, padding=1)), nn.ReLU(),
        parametrizations.spectral_norm(nn.Conv2d(8, 4, 1)),
    ).eval()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_baked_weight_normalized_convs_export_as_single_convs(dynamo, tmp_path):
    model = weight_normalized_model()
    baked = bake_weights(copy.deepcopy(model))
    assert [type(m) for m in baked if not isinstance(m, nn.ReLU)] == [nn.Conv2d] * 3
    proto, _ = _torch_onnx(baked, torch.randn(INPUT), dynamo)
    ops = [n.op_type for n in proto.graph.node if n.op_type != "Constant"]
    assert sorted(ops) == ["Conv", "Conv", "Conv", "Relu", "Relu"], ops
    onnx.save(proto, tmp_path / "wn.onnx")
    x = torch.randn(INPUT)
    assert_equivalent_outputs(model, run_onnx(tmp_path / "wn.onnx", x), x)


def test_wsconv_standardizes_each_filter():
    conv = WSConv2d(3, 4, 3).double()
    w = conv.weight.detach().numpy().reshape(4, -1)
    w_hat = (w - w.mean(1, keepdims=True)) / np.sqrt(w.var(1, keepdims=True) + conv.eps)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, torch.from_numpy(w_hat.reshape(conv.weight.shape)), conv.bias)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(conv.baked().double()(x), expected, rtol=0, atol=1e-12)
