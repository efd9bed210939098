"""Tiny models for the bench tests."""
from __future__ import annotations

import torch
from torch import nn

from normfold.nn import Centering, IterNorm
from tests.conftest import populate_stats

SAMPLE_SHAPE = (3, 8, 8)


def tiny(seed: int = 0) -> nn.Sequential:
    """Conv-BN-ReLU, Conv-IterNorm-ReLU, Conv-Centering, head: three foldable norm kinds."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 1), IterNorm(8, group_size=4, T=3), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), Centering(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    )
    return populate_stats(model, (8, *SAMPLE_SHAPE))
