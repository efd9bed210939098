"""Trust no class: every norm's map is checked against the module's own forward before it folds.

A batch norm subclass that activates, scales or shifts in forward, a user layer
whose inference_affine() lies, an adapter that is wrong or raises: each is
skipped with a reason naming the class, and the folded model still equals the
original in float64. Subclasses whose forward is still the map fold.
"""
from __future__ import annotations


import pytest
import torch
from torch import nn

import normfold
from normfold.nn import affine

from ..conftest import assert_equivalent_outputs, populate_stats, run_eager
from ._helpers import ChannelAffine, fold_quietly, registered

SHAPE = (2, 3, 6, 6)


class BNAct(nn.BatchNorm2d):
    def forward(self, x):
        return torch.relu(super().forward(x))


class BNTwice(nn.BatchNorm2d):
    def forward(self, x):
        return 2 * super().forward(x)


class BNPlusOne(nn.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) + 1.0


class BNClamp(nn.BatchNorm2d):
    """Agrees with the map for |y| < 6 only: the probe's outputs reach beyond."""

    def forward(self, x):
        return super().forward(x).clamp(-6, 6)


class BNLogged(nn.BatchNorm2d):
    """Overrides forward, still batch norm, and counts its calls (state the probe must not touch)."""

    def __init__(self, c):
        super().__init__(c)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


class BNRejectsLarge(nn.BatchNorm2d):
    """Raises on inputs beyond 100 (the probe's reach): the probe cannot run it."""

    def forward(self, x):
        if bool(x.abs().max() > 100):
            raise ValueError("BNRejectsLarge: input out of range")
        return super().forward(x)


class BNOnlyTracedSize(nn.BatchNorm2d):
    """Rejects the probe's small input; the probe falls back to the traced shape."""

    def forward(self, x):
        if x.shape[-1] != 6:
            raise ValueError("expects width 6")
        return super().forward(x)


class LyingAffine(ChannelAffine):
    """A user's layer whose inference_affine() forgets its shift."""

    def inference_affine(self):
        return self.scale.detach().double(), torch.zeros_like(self.shift, dtype=torch.float64)


class HonestAffine(LyingAffine):
    def inference_affine(self):
        return self.scale.detach().double(), self.shift.detach().double()


_fold = fold_quietly


def _model(norm: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm, nn.Conv2d(4, 5, 1)), (8, *SHAPE[1:]))


SKIPPED = {  # name: (norm, the reason's distinctive part)
    "bn-relu": (lambda: BNAct(4), "BNAct.forward differs from its batch-norm map by"),
    "bn-times-2": (lambda: BNTwice(4), "BNTwice.forward differs from its batch-norm map by"),
    "bn-plus-1": (lambda: BNPlusOne(4), "BNPlusOne.forward differs from its batch-norm map by"),
    "bn-clamp-6": (lambda: BNClamp(4), "BNClamp.forward differs from its batch-norm map by"),
    "lying-inference-affine": (lambda: LyingAffine(4), "LyingAffine.forward differs from its inference_affine() by"),
    "raises-on-the-probe": (lambda: BNRejectsLarge(4),
                            "BNRejectsLarge.forward fails on a float64 probe input of shape (2, 4, 6, 6): ValueError"),
}


@pytest.mark.parametrize("case", sorted(SKIPPED))
def test_a_norm_whose_forward_is_not_its_map_is_skipped_naming_the_class(case):
    make, reason = SKIPPED[case]
    model = _model(make())
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    assert not result.report.folded
    (skipped,) = result.report.skipped
    assert skipped.norm == "1" and reason in skipped.reason, skipped.reason
    assert type(result.model.get_submodule("1")) is type(model[1])   # left in place, whole
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_the_reported_deviation_is_the_size_of_the_difference():
    """BNTwice: 2y - y = y, the same size as the terms: a relative deviation of order 1."""
    result = _fold(_model(BNTwice(4)), torch.randn(SHAPE))
    value = float(result.report.skipped[0].reason.split(" by ")[1].split()[0])
    assert 0.3 < value <= 1.0


FOLDED = {
    "forward-overridden-still-bn": lambda: BNLogged(4),
    "probe-falls-back-to-traced-shape": lambda: BNOnlyTracedSize(4),
    "honest-inference-affine": lambda: HonestAffine(4),
}


@pytest.mark.parametrize("case", sorted(FOLDED))
def test_a_subclass_whose_forward_is_still_its_map_folds(case):
    model = _model(FOLDED[case]())
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    assert [(f.norm, f.into) for f in result.report.folded] == [("1", "0")], result.report.lines()
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_the_probe_changes_no_state():
    """The probe runs copies: neither the caller's counter nor the folded model's copy moves."""
    kept = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), BNLogged(4))   # after a ReLU: not folded, kept
    model = populate_stats(kept, (8, *SHAPE[1:]))
    model[2].calls.zero_()
    result = _fold(model, torch.randn(SHAPE))
    assert "its input comes from 1 (ReLU)" in result.report.skipped[0].reason
    assert int(model[2].calls) == 0 and int(result.model.get_submodule("2").calls) == 0


def test_the_probe_runs_in_float64_for_an_fp16_model():
    model = _model(BNAct(4)).half()
    result = _fold(model, torch.randn(SHAPE).half())
    assert "BNAct.forward differs from its batch-norm map" in result.report.skipped[0].reason


ADAPTERS = {  # name: (adapter, folds, the reason's distinctive part)
    "right": (lambda m: (m.scale.detach().double(), m.shift.detach().double()), True, None),
    "wrong-sign": (lambda m: (m.scale.detach().double(), -m.shift.detach().double()), False,
                   "ChannelAffine.forward differs from the map of the adapter registered for ChannelAffine by"),
    "raises": (lambda m: m.no_such_attribute, False, "inference_affine failed: AttributeError"),
    "nan-map": (lambda m: (torch.full((4,), float("nan"), dtype=torch.float64), m.shift.detach().double()), False,
                "ChannelAffine.forward differs from the map of the adapter registered for ChannelAffine by nan"),
    "wrong-shape": (lambda m: (torch.ones(3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)), False,
                    "inference_affine failed: ValueError: a channel map needs A (C,) or (C, C)"),
}


@pytest.mark.parametrize("case", sorted(ADAPTERS))
def test_register_norm_adapters_are_checked_too(case):
    adapter, folds, reason = ADAPTERS[case]
    model = _model(ChannelAffine(4))
    x = torch.randn(SHAPE)
    with registered(normfold.register_norm, affine._ADAPTERS, ChannelAffine, adapter):
        result = _fold(model, x)
    if folds:
        assert [f.norm for f in result.report.folded] == ["1"]
    else:
        (skipped,) = result.report.skipped
        assert reason in skipped.reason, skipped.reason
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_an_adapter_registered_for_a_base_class_does_not_cover_a_subclass_that_differs():
    """The _NormBase adapter is found for BNAct along the MRO; the probe refuses it, plain BN still folds."""
    torch.manual_seed(0)
    model = populate_stats(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), BNAct(4)),
                           (8, *SHAPE[1:]))
    x = torch.randn(SHAPE)
    result = _fold(model, x)
    assert [f.norm for f in result.report.folded] == ["1"]
    assert [s.norm for s in result.report.skipped] == ["3"]
    assert_equivalent_outputs(model, run_eager(result.model, x), x)


def test_a_map_that_is_not_finite_is_skipped():
    """A NaN statistic is named before any map is computed (normfold.nn.statistics, issue 12); a map that is
    not finite for another reason is the probe's (the adapter case "nan-map" below)."""
    model = _model(nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].running_var[2] = float("nan")
    result = _fold(model, torch.randn(SHAPE))
    (skipped,) = result.report.skipped
    assert skipped.reason == "running_var[2] = nan: not a finite number"
    assert isinstance(result.model.get_submodule("1"), nn.BatchNorm2d)
