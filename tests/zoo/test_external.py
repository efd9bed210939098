"""The external-architecture list and the statistics randomizer behind tests/real and scripts/real_models.py.

The randomizer is checked against statistics computed here from the activations
its norms really see; the list, without building anything, against the
families the issue asks for.
"""
from __future__ import annotations

import copy
import re

import pytest
import torch
from torch import nn

from normfold.zoo import external
from normfold.zoo.randomize import MEAN_STD, VAR_FLOOR, VAR_RATIO, randomize_statistics

TORCHVISION_FAMILIES = {
    "alexnet", "convnext", "densenet", "efficientnet", "efficientnet_v2", "googlenet", "inception_v3", "maxvit",
    "mnasnet", "mobilenet_v2", "mobilenet_v3", "regnet", "resnet", "resnext", "shufflenet_v2", "squeezenet",
    "swin", "vgg", "vit", "wide_resnet",
}
TIMM_FAMILIES = {
    "EfficientNet", "MobileNetV3", "MobileNetV4", "RegNet", "CSPDarknet", "DenseNet", "ResNetV2", "Inception",
    "GhostNet", "VoVNet", "ReXNet", "MixNet", "LeViT", "FastViT", "MobileViT", "ConvNeXt", "NFNet",
}


def test_external_list_covers_the_families_asked_for():
    timm = [m for m in external.EXTERNAL.values() if m.source == "timm" and not m.frozen]
    assert len(timm) >= 25 and TIMM_FAMILIES <= {m.family for m in timm}
    assert {m.name for m in external.EXTERNAL.values() if m.frozen} == {
        "timm/efficientnet_b0-frozen", "torchvision/resnet18-frozen"
    }


def test_one_smallest_variant_of_every_torchvision_classification_family():
    """Smallest by torchvision's own parameter counts (its weights' metadata: nothing is downloaded);
    for VGG the smallest with batch norm."""
    import torchvision.models as tvm
    chosen = {_family(m.builder): m.builder for m in external.EXTERNAL.values()
              if m.source == "torchvision" and not m.frozen}
    assert set(chosen) == TORCHVISION_FAMILIES
    variants: dict[str, list[str]] = {}
    for builder in tvm.list_models(module=tvm):
        if _family(builder) == "vgg" and not builder.endswith("_bn"):
            continue
        variants.setdefault(_family(builder), []).append(builder)
    for family, builder in chosen.items():
        smallest = min(variants[family], key=lambda b: _num_params(tvm, b))
        assert _num_params(tvm, builder) == _num_params(tvm, smallest), f"{family}: {builder}, smallest {smallest}"


def _family(builder: str) -> str:
    """The longest family name ``builder`` is (``efficientnet_v2_s``: efficientnet_v2, not efficientnet)."""
    fits = [f for f in TORCHVISION_FAMILIES if builder == f or re.match(re.escape(f) + r"[_0-9]", builder)]
    return max(fits, key=len) if fits else builder


def _num_params(tvm, builder: str) -> int:
    return next(iter(tvm.get_model_weights(builder))).meta["num_params"]


def test_example_input_is_seeded_and_has_the_listed_shape():
    name = "torchvision/inception_v3"
    x = external.example_input(name, seed=3)
    assert tuple(x.shape) == (external.BATCH, 3, 75, 75) == external.EXTERNAL[name].input_shape
    assert torch.equal(x, external.example_input(name, seed=3))
    assert not torch.equal(x, external.example_input(name, seed=4))


def test_unknown_external_name_lists_the_available_ones():
    with pytest.raises(KeyError, match="timm/efficientnet_b0"):
        external.build("timm/efficientnet_b9")


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        nn.init.zeros_(self.conv.bias)
        self.bn = nn.BatchNorm2d(16)
        self.scale = nn.Parameter(torch.full((16, 1, 1), 1e-6))   # a layer scale at its init value
        self.head = nn.Linear(16, 4)
        nn.init.zeros_(self.head.weight)                           # a zero-initialized classifier

    def forward(self, x):
        return self.head((self.scale * self.bn(self.conv(x))).mean((2, 3)))


def test_randomize_is_seeded_and_changes_every_fresh_value():
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fresh = ConvBN()
    a = randomize_statistics(copy.deepcopy(fresh), x, seed=0)
    b = randomize_statistics(copy.deepcopy(fresh), x, seed=0)
    c = randomize_statistics(copy.deepcopy(fresh), x, seed=1)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.bn.running_var, c.bn.running_var)
    assert not torch.equal(a.bn.running_mean, c.bn.running_mean)
    assert ((a.bn.weight >= 0.7) & (a.bn.weight <= 1.3)).all() and not torch.equal(a.bn.weight, fresh.bn.weight)
    assert a.bn.bias.abs().max() > 0 and a.conv.bias.abs().max() > 0
    assert ((a.scale >= 0.3) & (a.scale <= 1.0)).all(), "a 1e-6 layer scale would mute the branch"
    assert a.head.weight.std() > 0.1, "a zero head would make every output equal"
    assert torch.equal(a.conv.weight, fresh.conv.weight), "random initial weights are kept"


def test_running_statistics_are_drawn_in_units_of_the_norms_input():
    x = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 5 + 2
    model = randomize_statistics(ConvBN(), x, seed=0)
    with torch.no_grad():
        seen = model.conv(x).double().transpose(0, 1).reshape(16, -1)   # what bn sees, computed here
    mean, var = seen.mean(1), seen.var(1, unbiased=False)
    var = var.clamp_min(VAR_FLOOR * var.mean())
    ratio = model.bn.running_var.double() / var
    assert ((ratio >= VAR_RATIO[0] - 1e-9) & (ratio <= VAR_RATIO[1] + 1e-9)).all(), ratio
    z = (model.bn.running_mean.double() - mean) / (MEAN_STD * var.sqrt())
    assert z.abs().max() < 5 and z.std() > 0.3, z                  # N(0, 1) offsets, not zero, not huge


def test_frozen_batch_norm_buffers_are_randomized():
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = nn.Sequential(nn.Conv2d(3, 8, 1), FrozenBatchNorm2d(8))
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    randomize_statistics(model, x, seed=0)
    frozen = model[1]
    assert not torch.equal(frozen.running_var, torch.ones(8)) and not torch.equal(frozen.running_mean, torch.zeros(8))
    assert not torch.equal(frozen.weight, torch.ones(8)) and not torch.equal(frozen.bias, torch.zeros(8))
