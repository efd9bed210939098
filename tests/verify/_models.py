"""Tiny models for the verify tests; also loaded by the CLI as ``_models.py:<factory>``."""
from __future__ import annotations

import torch
from torch import nn

from normfold.zoo.populate import populate

SHAPE = (1, 3, 16, 16)


class TinyNet(nn.Module):
    def __init__(self, second_norm: str = "bn", in_channels: int = 3, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16) if second_norm == "bn" else nn.GroupNorm(4, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.stem(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


def _built(model: nn.Module, channels: int = 3) -> nn.Module:
    return populate(model, (4, channels, *SHAPE[2:]), steps=3, seed=0).eval()


def tiny_bn() -> nn.Module:
    torch.manual_seed(0)
    return _built(TinyNet("bn"))


def tiny_gn() -> nn.Module:
    torch.manual_seed(0)
    return _built(TinyNet("gn"))


def tiny_one_channel() -> nn.Module:
    torch.manual_seed(0)
    return _built(TinyNet("bn", in_channels=1), channels=1)


class TwoInputNet(nn.Module):
    """An image and a one-channel mask, each through Conv -> BN -> ReLU, summed; two outputs:
    class logits (N, 10) and a 4-channel map (N, 4, H, W)."""

    def __init__(self):
        super().__init__()
        self.image_conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.image_bn = nn.BatchNorm2d(8)
        self.mask_conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.mask_bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, image, mask):
        h = torch.relu(self.image_bn(self.image_conv(image))) + torch.relu(self.mask_bn(self.mask_conv(mask)))
        return self.fc(h.mean((2, 3))), self.head(h)


def two_inputs() -> nn.Module:
    """TwoInputNet with statistics from training-mode passes (populate takes one input)."""
    torch.manual_seed(0)
    model = TwoInputNet()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (model.image_bn, model.mask_bn):
            bn.weight.copy_(torch.rand(8, generator=gen) + 0.5)
            bn.bias.copy_(0.1 * torch.randn(8, generator=gen))
        model.train()
        for _ in range(3):
            model(torch.randn(4, 3, *SHAPE[2:], generator=gen), torch.rand(4, 1, *SHAPE[2:], generator=gen))
    return model.eval()


def feature_map() -> nn.Module:
    """Conv -> BN only: an output that is a feature map, not class scores."""
    torch.manual_seed(0)
    return _built(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)))


class _FailsOnLargeBatches(nn.Module):
    """tiny_bn whose forward raises from batch 5 on (a model with a fixed-size buffer, say)."""

    def __init__(self):
        super().__init__()
        self.net = tiny_bn()

    def forward(self, x):
        if x.shape[0] > 4:
            raise RuntimeError(f"batch {x.shape[0]} is over this model's 4")
        return self.net(x)


def fails_on_large_batches() -> nn.Module:
    return _FailsOnLargeBatches().eval()
