"""Norm + activation modules (timm's norm_act layers) fold their norm and keep the rest.

timm's BatchNormAct2d, SyncBatchNormAct, FrozenBatchNormAct2d and the
ConvNormAct blocks whose ``.bn`` holds the activation: the norm folds into the
conv, the report names the original module, and the folded model keeps every
activation and dropout in place. timm's per-sample norms are reported as not
foldable. normfold itself imports no timm: these classes are registered by name.
"""
from __future__ import annotations

import sys
from collections import OrderedDict

import pytest
import torch
from timm import layers as timm_layers
from torch import nn

import normfold
from normfold.nn import composite

from ..conftest import assert_equivalent_outputs, populate_stats, run_eager
from ._helpers import fold_quietly, registered

SHAPE = (2, 3, 6, 6)


_fold = fold_quietly


def _bn_act(**kw):
    return timm_layers.BatchNormAct2d(4, **kw)


def _frozen(**kw):
    bn = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _bn_act(**kw)), (8, *SHAPE[1:]))[1]
    return timm_layers.freeze_batch_norm_2d(bn)


def _sync(**kw):
    return timm_layers.convert_sync_batchnorm(_bn_act(**kw))


COMPOSITES = {  # name: (the norm+act module, the activation kept in the folded model)
    "bnact-relu": (lambda: _bn_act(), nn.ReLU),
    "bnact-silu-dropout": (lambda: _bn_act(act_layer=nn.SiLU, drop_layer=lambda: nn.Dropout(0.5)), nn.SiLU),
    "bnact-hardswish": (lambda: _bn_act(act_layer=nn.Hardswish), nn.Hardswish),
    "bnact-no-act": (lambda: _bn_act(apply_act=False), nn.Identity),
    "frozen-bnact-relu6": (lambda: _frozen(act_layer=nn.ReLU6), nn.ReLU6),
    "sync-bnact-gelu": (lambda: _sync(act_layer=nn.GELU), nn.GELU),
}


@pytest.mark.parametrize("case", sorted(COMPOSITES))
def test_norm_act_folds_its_norm_and_keeps_the_activation(case):
    make, act = COMPOSITES[case]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), make(), nn.Conv2d(4, 5, 1))
    if not isinstance(model[1], timm_layers.FrozenBatchNormAct2d):
        model = populate_stats(model, (8, *SHAPE[1:]))
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    assert [(f.norm, f.into, f.direction) for f in result.report.folded] == [("1", "0", "backward")], \
        result.report.lines()
    kept = dict(result.model.named_modules())
    assert isinstance(kept.get("1.act"), act) and "1.drop" in kept and "1.norm" not in kept
    assert not any(isinstance(m, (nn.modules.batchnorm._NormBase, timm_layers.FrozenBatchNormAct2d))
                   for m in result.model.modules())
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


@pytest.mark.parametrize("case", ["bnact-relu", "frozen-bnact-relu6", "sync-bnact-gelu"])
def test_a_composite_with_broken_statistics_is_skipped_naming_the_buffer(case):
    """The statistics are checked before the parts are probed (a NaN map would only say "differs by nan")."""
    make, _ = COMPOSITES[case]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), make(), nn.Conv2d(4, 5, 1))
    if not isinstance(model[1], timm_layers.FrozenBatchNormAct2d):
        model = populate_stats(model, (8, *SHAPE[1:]))
    buffer = "running_var" if hasattr(model[1], "running_var") else "bias"
    with torch.no_grad():
        getattr(model[1], buffer)[2] = float("nan")
    result = _fold(model, torch.randn(SHAPE))
    assert result.report.folded == []
    (skipped,) = result.report.skipped
    assert skipped.norm == "1" and f"{buffer}[2] = nan: not a finite number" in skipped.reason, skipped.reason
    assert torch.isnan(getattr(model[1], buffer)[2])   # the user's model is as it was


def test_conv_norm_act_block_folds_through_its_bn():
    torch.manual_seed(0)
    model = nn.Sequential(
        timm_layers.ConvNormAct(3, 8, 3, norm_layer=timm_layers.BatchNormAct2d, act_layer=nn.SiLU),
        timm_layers.ConvNormAct(8, 4, 1, norm_layer=timm_layers.BatchNormAct2d, apply_act=False),
    )
    model = populate_stats(model, (8, *SHAPE[1:]))
    assert isinstance(model[0].bn, timm_layers.BatchNormAct2d) and isinstance(model[0].bn.act, nn.SiLU)
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    assert {(f.norm, f.into) for f in result.report.folded} == {("0.bn", "0.conv"), ("1.bn", "1.conv")}
    assert isinstance(result.model.get_submodule("0.bn.act"), nn.SiLU)
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_a_composite_whose_norm_cannot_fold_is_put_back_whole():
    """Pre-activation: BatchNormAct2d after a ReLU folds nowhere; the module stays as it was."""
    torch.manual_seed(0)
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), _bn_act(act_layer=nn.SiLU)),
                           (8, *SHAPE[1:]))
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    (skipped,) = result.report.skipped
    assert skipped.norm == "2" and "its input comes from 1 (ReLU)" in skipped.reason
    assert "its output feeds 2.act (SiLU) (through 2.drop)" in skipped.reason
    assert type(result.model.get_submodule("2")) is timm_layers.BatchNormAct2d
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


class ScaledBNAct(timm_layers.BatchNormAct2d):
    """A user's subclass of a registered composite whose forward adds a scale: its parts do not describe it."""

    def forward(self, x):
        return 3 * super().forward(x)


class NormThenTanh(nn.Module):
    """A user's own norm+act module, made a composite with register_composite."""

    def __init__(self, c):
        super().__init__()
        self.bn, self.act = nn.BatchNorm2d(c), nn.Tanh()

    def forward(self, x):
        return self.act(self.bn(x))


SPLITTERS = {  # name: (splitter, folds, the reason's distinctive part)
    "right": (lambda m: nn.Sequential(OrderedDict(norm=m.bn, act=m.act)), True, None),
    "forgets-the-act": (lambda m: nn.Sequential(OrderedDict(norm=m.bn)), False,
                        "NormThenTanh.forward differs from its parts (norm) by"),
    "part-not-found": (lambda m: nn.Sequential(OrderedDict(norm=m.bn, act=m.activation)), False,
                       "cannot split NormThenTanh into a norm and the rest: AttributeError"),
    "not-a-sequential": (lambda m: m.bn, False, "did not return Sequential(norm=..., ...)"),
}


@pytest.mark.parametrize("case", sorted(SPLITTERS))
def test_register_composite_splits_a_users_module_only_when_its_parts_check_out(case):
    splitter, folds, reason = SPLITTERS[case]
    torch.manual_seed(0)
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), NormThenTanh(4)), (8, *SHAPE[1:]))
    x = torch.randn(SHAPE)
    with registered(composite.register_composite, composite._SPLITTERS, NormThenTanh, splitter):
        result = _fold(model, x)
    if folds:
        assert [(f.norm, f.into) for f in result.report.folded] == [("1", "0")]
        assert isinstance(result.model.get_submodule("1.act"), nn.Tanh)
    else:
        (skipped,) = result.report.skipped
        assert skipped.norm == "1" and reason in skipped.reason, skipped.reason
        assert type(result.model.get_submodule("1")) is NormThenTanh
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_a_subclass_of_a_registered_composite_that_differs_is_skipped():
    torch.manual_seed(0)
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), ScaledBNAct(4)), (8, *SHAPE[1:]))
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    (skipped,) = result.report.skipped
    assert "ScaledBNAct.forward differs from its parts (norm, drop, act) by" in skipped.reason
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_a_composite_missing_a_part_is_skipped_with_the_reason():
    """SyncBatchNormAct applies drop/act only when present; BatchNormAct2d needs its act."""
    torch.manual_seed(0)
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), _sync()), (8, *SHAPE[1:]))
    del model[1].act, model[1].drop          # now a plain SyncBatchNorm forward: folds
    broken = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), _bn_act()), (8, *SHAPE[1:]))
    broken[1].act = None                     # BatchNormAct2d without an act module
    x = torch.randn(SHAPE)
    assert [f.norm for f in _fold(model, x).report.folded] == ["1"]
    with pytest.raises(TypeError):  # the model itself cannot run, but fold must not raise
        broken(x)
    (skipped,) = normfold.fold(broken, x).report.skipped
    assert "cannot split BatchNormAct2d into a norm and the rest: it has no 'act' submodule" in skipped.reason


PER_SAMPLE = {  # name: (module, the reason's distinctive part)
    "GroupNormAct": (lambda: timm_layers.GroupNormAct(4, num_groups=2), "GroupNormAct is a GroupNorm"),
    "LayerNormAct2d": (lambda: timm_layers.LayerNormAct2d(4), "LayerNormAct2d is a LayerNorm"),
    "timm LayerNorm2d": (lambda: timm_layers.LayerNorm2d(4), "LayerNorm2d is a LayerNorm"),
    "timm GroupNorm1": (lambda: timm_layers.GroupNorm1(4), "GroupNorm1 is a GroupNorm"),
    "timm RmsNorm2d": (lambda: timm_layers.RmsNorm2d(4), "RmsNorm2d normalizes with statistics of each sample"),
}


@pytest.mark.parametrize("case", sorted(PER_SAMPLE))
def test_timm_per_sample_norms_are_reported_not_foldable(case):
    make, reason = PER_SAMPLE[case]
    model = nn.Sequential(nn.Conv2d(3, 4, 3), make()).eval()
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    (skipped,) = result.report.skipped
    assert skipped.norm == "1" and reason in skipped.reason and "each sample" in skipped.reason, skipped.reason
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_normfold_imports_no_timm():
    code = "import sys, normfold; normfold.fold; sys.exit('timm' in sys.modules)"
    import subprocess
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
