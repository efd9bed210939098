"""Fold through the structure real networks have, exactly, and refuse the rest with the reason.

No-ops (Identity, dropout in eval), reshapes that keep the channel axis (LeViT's
Linear -> flatten(0, 1) -> BatchNorm1d -> reshape_as; Flatten before a
Linear), a cat of several layers along the channel axis (MixNet), an add of
several layers (RepVGG). Each case is checked against the unfolded model in
float64; each refusal names what blocked it.
"""
from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.nn import functional as F

from normfold.nn import ZCAWhitening

from ..conftest import assert_equivalent_outputs, populate_stats, run_eager
from ._helpers import fold_quietly, outcome


_fold, _outcome = fold_quietly, outcome


def _check(model, shape, expected):
    """Fold ``model`` (statistics populated) and compare its outcome and its output with the original."""
    torch.manual_seed(0)
    model = populate_stats(model, (16, *shape[1:]))
    x = torch.randn(shape)
    result = _fold(model, x)
    outcome = _outcome(result.report)
    assert set(outcome) == set(expected), result.report.lines()
    for norm, want in expected.items():
        kind, detail = outcome[norm]
        assert kind == want[0] and want[1] in detail, (norm, outcome[norm])
    assert_equivalent_outputs(model, run_eager(result.model, x), x)
    return result


class Between(nn.Module):
    """conv -> step -> bn -> conv."""

    def __init__(self, step):
        super().__init__()
        self.conv, self.step, self.bn, self.out = nn.Conv2d(3, 4, 3), step, nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(self.bn(self.step(self.conv(x))))


class FunctionalDropout(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.3, training=self.training)


NO_OPS = {
    "identity": nn.Identity(),
    "dropout": nn.Dropout(0.5),
    "dropout2d": nn.Dropout2d(0.5),
    "functional-dropout": FunctionalDropout(),
    "identity-then-dropout": nn.Sequential(nn.Identity(), nn.Dropout(0.1)),
}


@pytest.mark.parametrize("case", sorted(NO_OPS))
def test_no_ops_between_the_layer_and_the_norm(case):
    _check(Between(NO_OPS[case]), (2, 3, 6, 6), {"bn": ("folded", "conv")})


class LinearNorm(nn.Module):
    """timm's levit LinearNorm: Linear on (B, L, C), batch norm over C of (B*L, C)."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.linear, self.bn = nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out)

    def forward(self, x):
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


def test_levit_linear_flatten_batchnorm1d_reshape_as():
    model = nn.Sequential(LinearNorm(6, 8), nn.GELU(), LinearNorm(8, 5))
    result = _check(model, (2, 7, 6), {"0.bn": ("folded", "0.linear"), "2.bn": ("folded", "2.linear")})
    assert "through flatten" in result.report.folded[0].note


def test_timm_levit_blocks_fold():
    from timm.models import levit
    model = nn.Sequential(levit.LinearNorm(6, 8), nn.Hardswish(), levit.LinearNorm(8, 4))
    _check(model, (2, 5, 6), {"0.bn": ("folded", "0.linear"), "2.bn": ("folded", "2.linear")})


class Head(nn.Module):
    """bn -> flatten -> Linear: a classifier head after global pooling."""

    def __init__(self, c, size):
        super().__init__()
        self.bn, self.flat, self.fc = nn.BatchNorm2d(c), nn.Flatten(), nn.Linear(c * size * size, 3)

    def forward(self, x):
        return self.fc(self.flat(self.bn(x)))


RESHAPES = {  # name: (model, input shape, expected outcome)
    "bn-flatten-linear-1x1": (lambda: nn.Sequential(nn.ReLU(), Head(4, 1)), (2, 4, 1, 1),
                              {"1.bn": ("folded", "1.fc")}),
    "bn-flatten-linear-2x2": (lambda: nn.Sequential(nn.ReLU(), Head(4, 2)), (2, 4, 2, 2),
                              {"1.bn": ("skipped", "the norm has 4 channels but 1.fc has 16 input features")}),
    "conv-flatten2-bn1d": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(2), nn.BatchNorm1d(4)), (2, 3, 5, 5),
                           {"2": ("folded", "0")}),
    "linear-transpose-bn1d": (lambda: nn.Sequential(nn.Linear(5, 4), Transpose(), nn.BatchNorm1d(4)), (2, 3, 5),
                              {"2": ("skipped", "its input is transpose (transpose), not the output of a Conv")}),
    "linear-reshape-moves-the-axis": (lambda: nn.Sequential(nn.Linear(4, 4), Regroup(), nn.BatchNorm1d(4)),
                                      (2, 4, 4), {"2": ("skipped", "features are the last axis")}),
}


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class Regroup(nn.Module):
    """(N, L, C) -> (N, C, L) by a reshape (not a transpose): every element changes channel."""

    def forward(self, x):
        return x.reshape(x.shape[0], x.shape[2], x.shape[1])


@pytest.mark.parametrize("case", sorted(RESHAPES))
def test_reshapes_fold_when_the_channel_axis_keeps_its_layout(case):
    make, shape, expected = RESHAPES[case]
    _check(make(), shape, expected)


class Mixed(nn.Module):
    """MixNet's mixed conv: channel groups with different kernels, concatenated, then one norm."""

    def __init__(self, norm, share=False):
        super().__init__()
        self.k3, self.k5 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 5, padding=2)
        self.norm, self.share = norm, share

    def forward(self, x):
        a, b = self.k3(x), self.k5(x)
        y = self.norm(torch.cat([a, b], 1))
        return y + a.repeat(1, 2, 1, 1) if self.share else y


CATS = {
    "bn": (lambda: Mixed(nn.BatchNorm2d(8)), {"norm": ("folded", "k3, k5")}),
    "whitening-within-blocks": (lambda: Mixed(ZCAWhitening(8, group_size=4)), {"norm": ("folded", "k3, k5")}),
    "whitening-across-blocks": (lambda: Mixed(ZCAWhitening(8, group_size=8)),
                                {"norm": ("skipped", "its map mixes channels across the concatenated layers")}),
    "producer-also-used": (lambda: Mixed(nn.BatchNorm2d(8), share=True), {"norm": ("skipped", "also feeds")}),
}


@pytest.mark.parametrize("case", sorted(CATS))
def test_cat_of_layers_along_the_channel_axis(case):
    make, expected = CATS[case]
    _check(make(), (2, 3, 6, 6), expected)


def test_cat_along_a_non_channel_axis_is_refused():
    class CatW(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(torch.cat([self.a(x), self.b(x)], 3))

    _check(CatW(), (2, 3, 4, 4), {"bn": ("skipped", "joins axis 3 of (2, 4, 4, 8), which is not the norm's channel axis")})


def test_timm_mixed_conv_with_batchnormact():
    from timm import layers
    model = nn.Sequential(layers.MixedConv2d(3, 8, [3, 5, 7]), layers.BatchNormAct2d(8, act_layer=nn.SiLU))
    result = _check(model, (2, 3, 8, 8), {"1": ("folded", "0.0, 0.1, 0.2")})
    assert isinstance(result.model.get_submodule("1.act"), nn.SiLU)


class Branches(nn.Module):
    """RepVGG-style: parallel convs summed, then one norm."""

    def __init__(self, kind):
        super().__init__()
        self.k3, self.k1, self.kind = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), kind
        self.k3b, self.bn = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        if self.kind == "two":
            y = self.k3(x) + self.k1(x)
        elif self.kind == "three":
            y = self.k3(x) + self.k1(x) + self.k3b(x)
        elif self.kind == "identity":
            y = self.k3(x) + x
        elif self.kind == "broadcast":
            y = self.k3(x) + self.k1(x.mean((2, 3), keepdim=True))
        elif self.kind == "torch-add":
            y = torch.add(self.k3(x), self.k1(x))
        return self.bn(y)


ADDS = {
    "two": {"bn": ("folded", "k3, k1")},
    "three": {"bn": ("folded", "k3, k1, k3b")},
    "torch-add": {"bn": ("folded", "k3, k1")},
    "identity": {"bn": ("skipped", "whose operand the model input 'x' is not the output of a Conv")},
    "broadcast": {"bn": ("skipped", "broadcasts k1 of shape (2, 4, 1, 1) to (2, 4, 5, 5)")},
}


@pytest.mark.parametrize("case", sorted(ADDS))
def test_add_of_layers(case):
    result = _check(Branches(case), (2, 4, 5, 5), ADDS[case])
    if result.report.folded:
        assert "A into each layer, c into k3" in result.report.folded[0].note


def test_add_puts_c_into_one_layer_only():
    """Folding c into both terms would count it twice; the bias of k1 must only take A."""
    torch.manual_seed(0)
    model = populate_stats(Branches("two"), (16, 4, 5, 5))
    result = _fold(model, torch.randn(2, 4, 5, 5))
    bn = model.bn
    a = (bn.weight / (bn.running_var + bn.eps).sqrt()).double()
    assert torch.allclose(result.model.k1.bias.double(), a * model.k1.bias.double(), atol=1e-6)
