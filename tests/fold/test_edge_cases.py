"""One test per edge case in DESIGN.md ("Edge cases that existing tools get wrong"),
plus the safety rules of the fold pass. Each asserts the outcome (folded or the
reason it was not) and numerical equivalence with the unfolded model."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import normfold
from normfold.fold import ChannelMap
from normfold.fold.algebra import fold_forward, to_groups
from normfold.nn import Centering, Scaling, is_norm

from ..conftest import assert_equivalent_outputs, fp32_budget, populate_stats, run_eager
from ._helpers import ChannelAffine, fold_quietly, outcome


_fold, _outcome = fold_quietly, outcome


class ConvCalledTwice(nn.Module):
    """One Conv module, two call sites: only the first feeds the BN."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x.flip(-1))


def test_conv_called_twice_folds_into_its_own_copy():
    model = populate_stats(ConvCalledTwice(), (8, 4, 6, 6))
    x = torch.randn(2, 4, 6, 6)
    result = _fold(model, x)
    (folded,) = result.report.folded
    assert folded.norm == "bn" and folded.into != "conv" and "several sites" in folded.note
    # the second call site still uses the original weights
    assert torch.equal(result.model.conv.weight, model.conv.weight)
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


@pytest.mark.parametrize("shape, folds", [((2, 6, 6), False), ((2, 6), True)])
def test_linear_bn1d_folds_only_on_the_feature_axis(shape, folds):
    """Linear -> BatchNorm1d on (N, C, L) with C == L normalizes axis 1, not the Linear's features."""
    model = populate_stats(nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6)), (16, *shape[1:]))
    x = torch.randn(shape)
    result = _fold(model, x)
    if folds:
        assert _outcome(result.report) == {"1": ("folded", "0")}
    else:
        (skipped,) = result.report.skipped
        assert "features are the last axis" in skipped.reason
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("groups", [2, 6])
def test_grouped_and_depthwise_conv_transpose_then_bn(dims, groups):
    convt = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[dims]
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    model = nn.Sequential(convt(6, 12, 3, stride=2, padding=1, output_padding=1, groups=groups), bn(12))
    shape = (2, 6, *[4] * dims)
    model = populate_stats(model, (8, *shape[1:]))
    x = torch.randn(shape)
    result = _fold(model, x)
    assert _outcome(result.report) == {"1": ("folded", "0")}
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


class Residual(nn.Module):
    """conv output feeds the BN *and* the residual add."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(self.bn(y)) + y


def test_conv_output_with_two_consumers_is_left_or_cloned():
    model = populate_stats(Residual(), (8, 4, 5, 5))
    x = torch.randn(2, 4, 5, 5)
    kept = _fold(model, x)
    (skipped,) = kept.report.skipped
    assert "also feeds" in skipped.reason and "clone_shared" in skipped.reason
    assert_equivalent_outputs(model, run_eager(kept.model, x), x)

    cloned = _fold(model, x, clone_shared=True)
    (folded,) = cloned.report.folded
    assert folded.into != "conv" and "copy of conv" in folded.note
    assert torch.equal(cloned.model.conv.weight, model.conv.weight)  # the residual branch is untouched
    assert_equivalent_outputs(model, run_eager(cloned.model, x), x)


@pytest.mark.parametrize("norm", [lambda: nn.BatchNorm2d(4), lambda: Centering(4)])
def test_norm_before_zero_padded_conv_folds_exactly_with_an_input_shift(norm):
    model = populate_stats(nn.Sequential(norm(), nn.Conv2d(4, 3, 3, padding=1)), (8, 4, 6, 6))
    x = torch.randn(2, 4, 6, 6)
    result = _fold(model, x)
    (folded,) = result.report.folded
    assert folded.direction == "forward" and "input shift" in folded.note
    assert_equivalent_outputs(model, run_eager(result.model, x), x)

    # The naive fold (the shift c moved into the bias) is wrong at the borders: the test can tell.
    conv = model[1]
    m = ChannelMap.of(*normfold.inference_affine(model[0]))
    k, b = fold_forward(to_groups(conv.weight, 1, False), conv.bias, m)
    naive = torch.nn.functional.conv2d(x.double(), k.squeeze(0), b, padding=1).numpy()
    oracle, allowed = fp32_budget(model, x)
    assert abs(naive - oracle).max() > 100 * allowed


def test_zero_padded_conv_with_a_singular_norm_is_skipped_with_the_reason():
    model = populate_stats(nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 3, 3, padding=1)), (8, 4, 6, 6))
    with torch.no_grad():
        model[0].weight[1] = 0.0          # A singular: no shift nu with A x + c = A (x - nu)
    x = torch.randn(2, 4, 6, 6)
    result = _fold(model, x)
    (skipped,) = result.report.skipped
    assert "pads with zeros" in skipped.reason and "singular" in skipped.reason
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_norm_before_a_conv_padding_with_copies_folds_into_weights_and_bias(mode):
    model = populate_stats(nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 3, 3, padding=1, padding_mode=mode)),
                           (8, 4, 6, 6))
    x = torch.randn(2, 4, 6, 6)
    result = _fold(model, x)
    (folded,) = result.report.folded
    assert folded.direction == "forward" and folded.note == ""
    assert [n.op for n in result.model.graph.nodes] == ["placeholder", "call_module", "output"]
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def _fp16_model(var: float, eps: float):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=eps))
    model = populate_stats(model, (8, 3, 6, 6))
    with torch.no_grad():
        model[1].running_var.fill_(var)
    return model


def test_fp16_folds_in_float64_and_casts_once():
    model = _fp16_model(var=1e-4, eps=1e-5)
    half = model.half()
    result = _fold(half, torch.randn(2, 3, 6, 6).half())
    assert len(result.report.folded) == 1
    conv, bn = model[0], model[1]   # fp16 values, folded here in float64 by hand
    a = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    expected = (conv.weight.double() * a[:, None, None, None]).half()
    assert result.model.get_submodule("0").weight.dtype == torch.float16
    assert torch.equal(result.model.get_submodule("0").weight, expected)


@pytest.mark.parametrize("dtype, limit", [(torch.float16, "65504"), (torch.bfloat16, "3.38")])
def test_folded_weights_that_overflow_the_dtype_are_skipped(dtype, limit):
    model = _fp16_model(var=0.0, eps=1e-5).to(dtype)
    with torch.no_grad():
        model[1].eps = 1e-12 if dtype == torch.float16 else 1e-80
        model[0].weight.mul_(1e3)
    result = _fold(model, torch.randn(2, 3, 6, 6).to(dtype))
    (skipped,) = result.report.skipped
    assert "beyond the" in skipped.reason and limit in skipped.reason
    assert isinstance(result.model.get_submodule("1"), nn.BatchNorm2d)


def test_nonlinearity_between_conv_and_norm_blocks_the_fold():
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)), (8, 3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    result = _fold(model, x)
    (skipped,) = result.report.skipped
    assert "ReLU" in skipped.reason
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_register_norm_makes_a_users_layer_foldable_and_chains_collapse():
    """Conv -> BN -> user affine: one map, one fold (the user layer via register_norm)."""
    torch.manual_seed(0)
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), ChannelAffine(4)), (8, 3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    before = _fold(model, x)
    assert not is_norm(model[2]) and _outcome(before.report) == {"1": ("folded", "0")}

    normfold.register_norm(ChannelAffine, lambda m: (m.scale.detach().double(), m.shift.detach().double()))
    try:
        result = _fold(model, x)
    finally:
        from normfold.nn import affine
        affine._ADAPTERS.pop(ChannelAffine)
    assert _outcome(result.report) == {"1": ("folded", "0"), "2": ("folded", "0")}
    assert {f.chain for f in result.report.folded} == {("1", "2")}
    assert [type(m) for m in result.model.children()] == [nn.Conv2d]
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


class SizeInChain(nn.Module):
    """Conv -> BN -> Scaling, the BN's output also read for its shape (``x.size(0)``)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.scale = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Scaling(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.scale(y).reshape(y.size(0), -1)


def test_a_shape_only_use_inside_a_chain_of_norms_keeps_it_one_chain():
    model = populate_stats(SizeInChain(), (8, 3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    result = _fold(model, x)
    assert {(f.norm, f.into, f.chain) for f in result.report.folded} == {
        ("bn", "conv", ("bn", "scale")), ("scale", "conv", ("bn", "scale"))}
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_chain_of_norms_with_no_producer_folds_forward_as_one_map():
    """input -> Centering -> Scaling -> Linear (input normalization before a classifier)."""
    model = populate_stats(nn.Sequential(Centering(6), Scaling(6), nn.Linear(6, 3)), (16, 6))
    x = torch.randn(4, 6)
    result = _fold(model, x)
    assert {(f.norm, f.into, f.direction, f.chain) for f in result.report.folded} == {
        ("0", "2", "forward", ("0", "1")), ("1", "2", "forward", ("0", "1"))}
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_training_mode_norm_folds_from_running_stats_with_a_warning():
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (8, 3, 6, 6)).train()
    x = torch.randn(2, 3, 6, 6)
    with pytest.warns(UserWarning, match="training mode"):
        result = normfold.fold(model, x)
    assert len(result.report.folded) == 1 and not result.model.training and model.training
    assert_equivalent_outputs(model.eval(), run_eager(result.model, x), x)


def test_never_updated_statistics_are_reported():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    result = _fold(model, torch.randn(2, 3, 6, 6))
    assert any("1 never updated its statistics" in w for w in result.report.warnings)
    assert any(line.startswith("warning 1 never updated") for line in result.report.lines())


def test_statistics_set_directly_are_not_called_never_updated():
    """num_batches_tracked stays 0 when statistics are loaded or set by hand: the values decide, not the counter."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.randn(4))   # the variance still holds its ones: set directly all the same
    assert int(model[1].num_batches_tracked) == 0
    result = _fold(model, torch.randn(2, 3, 6, 6))
    never = [w for w in result.report.warnings if "never updated" in w]
    assert len(never) == 1 and never[0].startswith("3 "), never


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        if x.mean() > 0:  # data-dependent control flow: torch.fx cannot trace this
            return self.bn(self.conv(x))
        return self.conv(x)


def test_untraceable_model_is_returned_whole_naming_the_call():
    """The model's own forward cannot be traced: fold returns it as it is, the failing call under ""."""
    model = populate_stats(DataDependent(), (8, 3, 4, 4))
    x = torch.randn(2, 3, 4, 4)
    result = _fold(model, x)
    assert re.search(r"test_edge_cases.py:\d+ in forward: if x.mean\(\) > 0", result.report.untraced[""])
    assert not result.report.folded
    (skipped,) = result.report.skipped
    assert skipped.norm == "bn" and "the model's own forward, which torch.fx could not trace" in skipped.reason
    assert result.model is not model and isinstance(result.model.bn, nn.BatchNorm2d)
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_untraceable_submodule_is_kept_whole_and_the_rest_folds():
    model = populate_stats(nn.Sequential(DataDependent(), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), (8, 3, 4, 4))
    x = torch.randn(2, 3, 4, 4)
    result = _fold(model, x)
    outcome = _outcome(result.report)
    assert outcome["2"] == ("folded", "1")
    assert outcome["0.bn"][0] == "skipped" and "inside 0, which torch.fx could not trace" in outcome["0.bn"][1]
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_per_sample_norms_are_reported_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)).eval()
    result = _fold(model, torch.randn(2, 3, 6, 6))
    (skipped,) = result.report.skipped
    assert skipped.norm == "1" and "statistics of each sample" in skipped.reason
