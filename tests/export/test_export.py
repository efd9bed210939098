"""normfold.export: unfolded baseline really keeps its norms, writes are atomic, bad paths named."""
from __future__ import annotations

import math

import onnx
import pytest
import torch
from torch import nn

import normfold
from normfold.export import ExportError

from ..conftest import assert_equivalent_outputs, populate_stats, run_onnx


@pytest.fixture(scope="module")
def model():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    return populate_stats(m, (16, 3, 6, 6))


def test_unfolded_export_keeps_batchnorm_and_folded_does_not(model, tmp_path):
    x = torch.randn(1, 3, 6, 6)
    base = normfold.export(model, x, tmp_path / "base.onnx", fold=False)
    folded = normfold.export(model, x, tmp_path / "folded.onnx")
    assert base.op_counts.get("BatchNormalization") == 1 and base.fold_report is None
    assert "BatchNormalization" not in folded.op_counts
    assert folded.op_counts["Conv"] == base.op_counts["Conv"] == 2
    for path in (base.path, folded.path):
        onnx.checker.check_model(onnx.load(path))
        assert_equivalent_outputs(model, run_onnx(path, x), x)


def test_batch_axis_is_dynamic(model, tmp_path):
    result = normfold.export(model, torch.randn(1, 3, 6, 6), tmp_path / "m.onnx")
    dim0 = onnx.load(result.path).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value
    x = torch.randn(5, 3, 6, 6)
    assert run_onnx(result.path, x).shape == (5, 4, 6, 6)


def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path):
    class Rejects(nn.Module):
        def forward(self, x):
            return torch.linalg.eigh(x.flatten(1).T @ x.flatten(1))[0]  # no ONNX lowering

    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError, match="Rejects"):
        normfold.export(Rejects(), torch.randn(2, 3), path, fold=False)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("bad", ["missing-dir/m.onnx", "."])
def test_bad_output_path_is_named(model, tmp_path, bad):
    with pytest.raises(ExportError, match="export path"):
        normfold.export(model, torch.randn(1, 3, 6, 6), tmp_path / bad)


def test_unfolded_baseline_differs_from_folded_only_by_the_folded_norms(tmp_path):
    """The baseline keeps the exporter's other optimizations: an unfoldable GroupNorm
    exports to the same compute ops either way, and the only difference is the
    BatchNormalization. (onnxsim's optimizer stage, off for the baseline, also turns
    GroupNorm's Shape->Reshape into a Reshape with copy-dims: one Shape node, no compute.)"""
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    )
    m = populate_stats(m, (8, 3, 6, 6))
    x = torch.randn(1, 3, 6, 6)
    base = normfold.export(m, x, tmp_path / "base.onnx", fold=False).op_counts
    folded = normfold.export(m, x, tmp_path / "folded.onnx").op_counts
    assert base.pop("BatchNormalization") == 1
    assert base.pop("Shape", 0) <= 1
    assert base == folded
    assert_equivalent_outputs(m, run_onnx(tmp_path / "base.onnx", x), x)


def test_unfolded_baseline_keeps_a_norm_written_as_arithmetic(tmp_path):
    """Scaling exports as Mul/Add; onnxsim's optimizer would absorb it into the Conv."""
    from normfold.nn import Scaling

    m = populate_stats(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Scaling(8), nn.ReLU()), (8, 3, 6, 6))
    x = torch.randn(1, 3, 6, 6)
    base = normfold.export(m, x, tmp_path / "base.onnx", fold=False).op_counts
    folded = normfold.export(m, x, tmp_path / "folded.onnx").op_counts
    assert base.get("Mul", 0) >= 1 and base.get("Add", 0) >= 1, base
    assert folded == {"Conv": 1, "Relu": 1}
    assert_equivalent_outputs(m, run_onnx(tmp_path / "base.onnx", x), x)


def test_fp16_export_refuses_a_folded_weight_beyond_float16_and_keeps_the_old_file(tmp_path):
    """BN with a tiny variance scales the conv by ~7e5: fine in fp32, beyond fp16's 65504."""
    bn = nn.BatchNorm2d(4, eps=1e-12).eval()
    bn.running_var.fill_(1e-12)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), bn)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    x = torch.randn(1, 3, 4, 4)
    path = tmp_path / "half.onnx"
    path.write_bytes(b"previous")
    biggest = 1.0 / math.sqrt(1e-12 + 1e-12)  # gamma / sqrt(var + eps) times a weight of 1
    with pytest.raises(ExportError, match=rf"0\.weight reaches {biggest:.4g}, beyond the float16 maximum 65504".replace("+", r"\+")):
        normfold.export(model, x, path, precision="fp16")
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["half.onnx"]
    normfold.export(model, x, tmp_path / "full.onnx")  # the same fold fits float32
