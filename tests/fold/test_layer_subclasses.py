"""Trust no class, for layers: a subclass of Conv2d/Linear is a fold target where its forward folds like one.

The shapes of the subclasses are those of the libraries that ship them:
segmentation_models_pytorch / efficientnet_pytorch's ``Conv2dStaticSamePadding``
(a ZeroPad2d, then a conv without padding), transformers'
``EfficientNetDepthwiseConv2d`` (only a constructor), a trivial ``MyConv``;
and layers whose forward is not their conv (weight standardization, a
low-rank path, a constant added), which must be refused with a reason and
left as they are. Every folded model is compared with the original in float64.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ..conftest import assert_equivalent_outputs, populate_stats, run_eager
from ._helpers import fold_quietly, outcome

SHAPE = (2, 4, 9, 9)


class MyConv(nn.Conv2d):
    pass


class StaticSamePadConv(nn.Conv2d):
    """efficientnet_pytorch's Conv2dStaticSamePadding: TF "same" padding fixed at construction, then a valid conv."""

    def __init__(self, cin, cout, k, stride=1, image_size=9, **kw):
        super().__init__(cin, cout, k, stride=stride, **kw)
        pad_h = max((-(-image_size // stride) - 1) * stride + k - image_size, 0)
        self.static_padding = nn.ZeroPad2d((pad_h // 2, pad_h - pad_h // 2, pad_h // 2, pad_h - pad_h // 2))

    def forward(self, x):
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class DepthwiseConv(nn.Conv2d):
    """transformers' EfficientNetDepthwiseConv2d: groups = in_channels, set in the constructor only."""

    def __init__(self, cin, depth_multiplier=1, k=3, padding="same"):
        super().__init__(cin, cin * depth_multiplier, k, padding=padding, groups=cin, bias=False)


class StandardizedConv(nn.Conv2d):
    """timm's StdConv2d: the weight is standardized in forward, so scaling it by the norm's A is undone."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / w.std(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class ShiftedConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) + 0.5


class LoRALinear(nn.Linear):
    """A low-rank path beside the weight: y = W x + b + B (A x); the norm would have to scale it too."""

    def __init__(self, cin, cout, rank=2):
        super().__init__(cin, cout)
        self.down, self.up = nn.Linear(cin, rank, bias=False), nn.Linear(rank, cout, bias=False)

    def forward(self, x):
        return super().forward(x) + self.up(self.down(x))


def _fold(model, x):
    result = fold_quietly(model, x)
    assert_equivalent_outputs(model, run_eager(result.model, x), x)
    return result, outcome(result.report)


def _stats(model: nn.Module, shape=SHAPE) -> nn.Module:
    torch.manual_seed(0)
    return populate_stats(model, (8, *shape[1:])).eval()


FOLD_BACKWARD = {
    "trivial": lambda: MyConv(4, 6, 3, padding=1),
    "static-same-padding-stride-2": lambda: StaticSamePadConv(4, 6, 3, stride=2),
    "static-same-padding": lambda: StaticSamePadConv(4, 6, 5),
    "depthwise-constructor-only": lambda: DepthwiseConv(4, depth_multiplier=2),
}


@pytest.mark.parametrize("case", sorted(FOLD_BACKWARD))
def test_a_norm_after_a_conv_subclass_folds_into_it(case):
    torch.manual_seed(0)
    conv = FOLD_BACKWARD[case]()
    model = _stats(nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU()))
    result, got = _fold(model, torch.randn(SHAPE))
    assert got == {"1": ("folded", "0")}, result.report.lines()
    assert type(result.model.get_submodule("0")) is type(conv)   # the user's class, with the folded weight
    assert not any(isinstance(m, nn.BatchNorm2d) for m in result.model.modules())


def test_a_norm_before_a_static_same_padding_conv_folds_forward_with_the_input_shift():
    """The conv pads zeros in the norm's output domain: only the shift x - nu keeps the borders exact."""
    torch.manual_seed(0)
    model = _stats(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4), StaticSamePadConv(4, 6, 3)))
    result, got = _fold(model, torch.randn(SHAPE))
    assert got == {"1": ("folded", "2")}, result.report.lines()
    assert "pads with zeros first" in result.report.folded[0].note


def test_a_norm_before_a_trivial_subclass_folds_forward_without_a_shift():
    torch.manual_seed(0)
    model = _stats(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(4), MyConv(4, 6, 3)))
    result, got = _fold(model, torch.randn(SHAPE))
    assert got == {"1": ("folded", "2")}, result.report.lines()
    assert not any(b.dim() == 4 and b.shape[0] == 1 for b in result.model.buffers())   # no x - nu buffer


REFUSED = {
    "weight-standardized": (lambda: StandardizedConv(4, 6, 3, padding=1), "StandardizedConv, a subclass of Conv2d"),
    "adds-a-constant": (lambda: ShiftedConv(4, 6, 3, padding=1), "ShiftedConv, a subclass of Conv2d"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_conv_subclass_whose_forward_is_not_its_conv_is_refused_with_a_reason(case):
    make, reason = REFUSED[case]
    torch.manual_seed(0)
    model = _stats(nn.Sequential(make(), nn.BatchNorm2d(6), nn.ReLU()))
    result, got = _fold(model, torch.randn(SHAPE))
    status, why = got["1"]
    assert status == "skipped" and reason in why and "does not fold like one" in why, why
    assert isinstance(result.model.get_submodule("1"), nn.BatchNorm2d)


def test_a_linear_with_a_low_rank_path_is_refused_both_ways():
    torch.manual_seed(0)
    model = _stats(nn.Sequential(LoRALinear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.BatchNorm1d(6), LoRALinear(6, 3)),
                   (4, 5))
    result, got = _fold(model, torch.randn(4, 5))
    for norm in ("1", "3"):
        status, why = got[norm]
        assert status == "skipped" and "LoRALinear, a subclass of Linear" in why, why


def test_the_user_model_is_not_edited():
    torch.manual_seed(0)
    model = _stats(nn.Sequential(StaticSamePadConv(4, 6, 3), nn.BatchNorm2d(6)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fold(model, torch.randn(SHAPE))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
