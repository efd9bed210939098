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
