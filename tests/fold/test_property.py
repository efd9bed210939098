"""Property: for any conv site, the folded model equals the unfolded one within the fp32 budget.

Drawn: conv kind (Conv / ConvTranspose) x input rank (3, 4, 5) x groups (1, 2,
depthwise) x stride x dilation x padding (+ padding mode) x bias x norm type x
position (norm after the conv: backward; before it: forward). Eagerly for every
example; on onnxruntime for a fixed handful (exports take seconds).
"""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import normfold
from normfold.nn import Centering, IterNorm, Scaling, ZCAWhitening, is_norm

from ..conftest import assert_equivalent_outputs, populate_stats, run_eager, run_onnx

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
NORMS = {
    "bn": lambda c, d: BN[d](c),
    "center": lambda c, d: Centering(c),
    "scale": lambda c, d: Scaling(c),
    "zca": lambda c, d: ZCAWhitening(c, group_size=c),             # one block of all channels
    "iternorm": lambda c, d: IterNorm(c, group_size=c // 2, T=5),  # two blocks
    "center+scale": lambda c, d: nn.Sequential(Centering(c), Scaling(c)),
}
SPATIAL = {1: 7, 2: 5, 3: 5}


def build_case(kind, dims, groups, stride, dilation, padding, padding_mode, bias, norm, position):
    """(model, input shape): the conv and the norm next to it, statistics populated."""
    cin, cout = 4, 4
    if groups == "depthwise":
        groups = cin
    if kind == "convT":
        layer = CONVT[dims](cin, cout, 3, stride=stride, padding=padding, dilation=dilation, groups=groups,
                            bias=bias, output_padding=stride - 1 if stride > 1 else 0)
    else:
        layer = CONV[dims](cin, cout, 3, stride=stride, padding=padding, dilation=dilation, groups=groups,
                           bias=bias, padding_mode=padding_mode)
    channels = cout if position == "after" else cin
    normed = NORMS[norm](channels, dims)
    model = nn.Sequential(layer, normed) if position == "after" else nn.Sequential(normed, layer)
    shape = (2, cin, *[SPATIAL[dims]] * dims)
    torch.manual_seed(0)
    return populate_stats(model, (8, *shape[1:])), shape


def expected_to_fold(kind, groups, norm, position, densify):
    """None if it must fold, else a word the skip reason must contain."""
    blocks = {"zca": 1, "iternorm": 2}.get(norm)
    mixes = blocks is not None and groups > blocks   # the map's blocks span several conv groups
    if position == "before" and kind == "convT":
        return "ConvTranspose"
    if mixes and not densify:
        return "densify=True"
    return None


def check_case(model, shape, kind, groups, norm, position, densify):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    result = normfold.fold(model, x, densify=densify)
    norms = [n for n, m in model.named_modules() if is_norm(m)]
    report = result.report
    assert sorted([f.norm for f in report.folded] + [s.norm for s in report.skipped]) == sorted(norms)
    why_not = expected_to_fold(kind, groups, norm, position, densify)
    if why_not is None:
        assert not report.skipped, report.lines()
        assert not any(is_norm(m) for m in result.model.modules())
    else:
        assert report.skipped and all(why_not in s.reason for s in report.skipped), report.lines()
    assert_equivalent_outputs(model, run_eager(result.model, x), x)
    return result, x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["conv", "convT"]),
    dims=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2, "depthwise"]),
    stride=st.sampled_from([1, 2]),
    dilation=st.sampled_from([1, 2]),
    padding=st.sampled_from([0, 1, 2]),
    padding_mode=st.sampled_from(["zeros", "reflect", "circular"]),
    bias=st.booleans(),
    norm=st.sampled_from(sorted(NORMS)),
    position=st.sampled_from(["after", "before"]),
    densify=st.booleans(),
)
def test_folded_equals_unfolded_eagerly(kind, dims, groups, stride, dilation, padding, padding_mode, bias, norm,
                                        position, densify):
    model, shape = build_case(kind, dims, groups, stride, dilation, padding, padding_mode, bias, norm, position)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_case(model, shape, kind, groups if groups != "depthwise" else 4, norm, position, densify)


# A fixed handful through the whole pipeline: fold -> ONNX -> onnxruntime.
ORT_CASES = {
    "conv2d-depthwise-stride2-bn": ("conv", 2, "depthwise", 2, 1, 1, "zeros", False, "bn", "after", False),
    "convT3d-groups2-center": ("convT", 3, 2, 2, 1, 1, "zeros", True, "center", "after", False),
    "conv1d-dilated-reflect-zca-densify": ("conv", 1, 2, 1, 2, 2, "reflect", True, "zca", "after", True),
    "bn-before-zero-padded-conv2d": ("conv", 2, 1, 1, 1, 1, "zeros", True, "bn", "before", False),
}


@pytest.mark.parametrize("case", ORT_CASES)
def test_folded_equals_unfolded_on_onnxruntime(case, tmp_onnx):
    kind, dims, groups, stride, dilation, padding, mode, bias, norm, position, densify = ORT_CASES[case]
    model, shape = build_case(kind, dims, groups, stride, dilation, padding, mode, bias, norm, position)
    g = 4 if groups == "depthwise" else groups
    result, x = check_case(model, shape, kind, g, norm, position, densify)
    exported = normfold.export(result.model, x, tmp_onnx, fold=False)
    assert not {"BatchNormalization", "MatMul", "Div"} & set(exported.op_counts), exported.op_counts
    assert_equivalent_outputs(model, run_onnx(tmp_onnx, x), x)
