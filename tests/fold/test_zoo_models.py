"""The fold on real architectures (small widths): ResNet, MobileNetV2 (depthwise), pre-activation ResNet.

The report accounts for every norm layer, every norm that can fold does, and the
folded ONNX (exported with the exporter's own fusions off, so only normfold's
fold counts) has exactly the skipped norms left, and matches the float64 oracle
on onnxruntime.
"""
from __future__ import annotations

import re
import warnings

import onnx
import pytest
import torch

import normfold
from normfold import zoo
from normfold.nn import is_norm

from ..conftest import assert_equivalent_outputs, populate_stats, run_eager, run_onnx

# name: norms that cannot fold (BN after an add/maxpool and before a ReLU in pre-activation blocks)
CASES = {
    "resnet18-bn": 0,
    "mobilenetv2-bn": 0,
    "preact_resnet18-bn": 9,
}


@pytest.fixture(scope="module", params=sorted(CASES))
def folded(request, tmp_path_factory):
    name = request.param
    # zoo.build(name, small=True) populates with 8 steps at 32x32; 2 steps at 16x16 give real statistics faster
    torch.manual_seed(0)
    model = populate_stats(zoo.ZOO[name].factory(width_mult=zoo.SMALL_WIDTH), (4, 3, 16, 16), steps=2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    path = tmp_path_factory.mktemp(name) / "folded.onnx"
    normfold.export(result.model, x, path, fold=False)
    return name, model, x, result, path


def test_report_accounts_for_every_norm_layer(folded):
    name, model, _, result, _ = folded
    norms = sorted(n for n, m in model.named_modules() if is_norm(m))
    reported = sorted([f.norm for f in result.report.folded] + [s.norm for s in result.report.skipped])
    assert reported == norms
    assert len(result.report.skipped) == CASES[name], result.report.lines()
    for s in result.report.skipped:  # pre-activation: BN sits between an add/maxpool and a ReLU
        # or the add of two convs (downsampling shortcut) also feeds the next block's residual add
        assert ("not the output of a Conv" in s.reason or "MaxPool2d" in s.reason
                or re.match(r"backward: the output of add(_\d+)? \(add\) also feeds add_\d+ \(add\);", s.reason)), s.reason
        assert "ReLU" in s.reason


def test_folded_onnx_keeps_only_the_norms_that_could_not_fold(folded):
    name, model, x, result, path = folded
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("BatchNormalization") == CASES[name]
    assert_equivalent_outputs(model, run_onnx(path, x), x)
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_whitening_into_depthwise_convs_needs_densify():
    """An inverted-residual-shaped block with ZCA after its depthwise conv (a zoo model would be slow here)."""
    from torch import nn

    from normfold.nn import ZCAWhitening

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), ZCAWhitening(16, group_size=8), nn.ReLU6(),
        nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8),
    )
    model = populate_stats(model, (8, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = normfold.fold(model, x)
        dense = normfold.fold(model, x, densify=True)
    (refused,) = plain.report.skipped
    assert refused.norm == "4" and "densify=True" in refused.reason and "8x the MACs" in refused.reason
    assert not dense.report.skipped
    assert dense.model.get_submodule("3").groups == 2    # 16 groups -> 2 (blocks of 8): the least dense exact conv
    assert_equivalent_outputs(model, run_eager(dense.model, x), x)
