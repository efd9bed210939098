"""recalibrate(): population statistics equal a direct float64 computation, layer by layer in order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normfold.recalibrate import RecalibrationError, recalibrate, statistics_health

from . import _models
from ._direct import direct_statistics

STATS = ("running_mean", "running_var", "running_cov", "running_wm")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=g) * 2 + 1


def _assert_stats(result: nn.Module, expected, rtol):
    for name, stats in expected.items():
        for k, v in stats.items():
            got = getattr(result.get_submodule(name), k).detach().double().numpy()
            scale = max(np.abs(v).max(), 1.0)     # a mean of ~0 (after a norm) is judged on the data's scale
            np.testing.assert_allclose(got, v, rtol=rtol, atol=rtol * scale, err_msg=f"{name}.{k}")


@pytest.mark.parametrize("batch", [1, 6, 40])
def test_every_norm_kind_gets_the_direct_float64_population_statistics(batch):
    model, x = _models.every_norm().double(), _data()
    result, report = recalibrate(model, x, batch_size=batch)
    expected = direct_statistics(model, x)
    assert set(expected) == {"1", "5", "8", "10", "12", "14"}
    _assert_stats(result, expected, rtol=1e-10)
    assert [h.layer for h in report.layers] == list(expected) and report.passes == len(expected)
    assert report.samples == 40


def test_float32_model_keeps_its_dtype_and_weights():
    model, x = _models.conv_bn(), _data()
    result, _ = recalibrate(model, x, batch_size=16)
    _assert_stats(result, direct_statistics(model, x), rtol=1e-6)
    for (k, a), b in zip(model.state_dict().items(), result.state_dict().values()):
        assert b.dtype == a.dtype
        if not any(k.endswith(s) for s in STATS):
            assert torch.equal(a, b), k


def test_population_statistics_are_a_fixed_point():
    model, x = _models.every_norm().double(), _data()
    once, _ = recalibrate(model, x, batch_size=9)
    twice, report = recalibrate(once, x, batch_size=40)
    for (k, a), b in zip(once.state_dict().items(), twice.state_dict().values()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-10 * float(a.abs().max()), err_msg=k)
    for h in report.layers:
        assert not h.far
        if h.shift is not None:
            assert h.shift.worst < 1e-8
        if h.ratio is not None:
            assert abs(h.ratio.worst - 1) < 1e-8


def test_callers_model_training_flags_and_dropout_are_left_as_they_were():
    model, x = _models.every_norm(), _data()
    model[3].train()          # Dropout(0.5) in training mode
    model[5].train()          # a whitening layer in training mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    result, _ = recalibrate(model, x, batch_size=8)
    assert [m.training for m in model.modules()] == flags == [m.training for m in result.modules()]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # measured in eval mode: Dropout is the identity, the training-mode layer applies its frozen map
    _assert_stats(result, direct_statistics(model, x), rtol=1e-6)


def test_health_is_the_direct_mean_shift_and_variance_ratio():
    model, x = _models.conv_bn(), _data()
    health = statistics_health(model, x, batch_size=7)
    with torch.no_grad():
        a = model[0].double()(x.double()).numpy()
    cols = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
    bn = model[1]
    shift = np.abs(bn.running_mean.double().numpy() - cols.mean(1)) / cols.std(1)
    ratio = bn.running_var.double().numpy() / cols.var(1, ddof=1)
    first = health.layers[0]
    assert first.layer == "1"
    np.testing.assert_allclose(first.shift.worst, shift.max(), rtol=1e-10)
    np.testing.assert_allclose(first.shift.median, np.median(shift), rtol=1e-10)
    assert first.shift.worst_channels == list(np.argsort(-shift)[:3])
    worst = ratio[np.argmax(np.abs(np.log(ratio)))]
    np.testing.assert_allclose(first.ratio.worst, worst, rtol=1e-10)
    assert bool(first.far) == (shift.max() > 0.5 or not 0.5 <= worst <= 2)
    recalibrated, _ = recalibrate(model, x)
    assert not statistics_health(recalibrated, x).far


def test_a_layer_the_data_never_reaches_is_left_and_listed():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = _models.conv_bn(), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.used(x)

    model = Skips().eval()
    result, report = recalibrate(model, _data())
    assert report.unreached == ["unused"]
    assert torch.equal(result.unused.running_var, model.unused.running_var)


@pytest.mark.parametrize("make, data, words", [
    (_models.no_stats, _data(), ["no norm layer with running statistics", "GroupNorm"]),
    (_models.nan_model, _data(), ["norm layer 2 (BatchNorm2d)", "NaN"]),
    (_models.wide_whitening, torch.randn(10, 3, 1, 1), ["ZCAWhitening", "10 values per channel", "at least 65"]),
    (_models.conv_bn, torch.randn(10, 4, 6, 6), ["forward fails on DATA batch 0", "channels"]),
], ids=["no-norm", "nan", "too-few-for-covariance", "wrong-channels"])
def test_bad_input_is_refused_naming_it(make, data, words):
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RecalibrationError) as info:
        recalibrate(model, data)
    for w in words:
        assert w in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torch_timm_and_torchvision_batch_norms_follow_batch_norms_convention():
    timm = pytest.importorskip("timm")
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    frozen = FrozenBatchNorm2d(8)
    frozen.running_var.fill_(3.0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), timm.layers.BatchNormAct2d(8), nn.Conv2d(8, 8, 1), frozen,
                          nn.Conv2d(8, 8, 1), nn.SyncBatchNorm(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.BatchNorm1d(8), nn.Linear(8, 2)).eval().double()
    result, report = recalibrate(model, _data(), batch_size=7)
    expected = direct_statistics(model, _data())
    assert list(expected) == ["1", "3", "5", "8"] == [h.layer for h in report.layers]
    _assert_stats(result, expected, rtol=1e-10)
