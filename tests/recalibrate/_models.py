"""Small models with stale frozen statistics for the recalibration tests (factories for the command line too)."""
from __future__ import annotations

import torch
from torch import nn

from normfold.nn import BatchRenorm, Centering, IterNorm, Scaling, ZCAWhitening

CHANNELS = 8


def _stale(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random running statistics far from any data's (means in [-1, 1], variances in [0.3, 3])."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 2 - 1)
            if getattr(m, "running_var", None) is not None:
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 2.7 + 0.3)
            if getattr(m, "running_cov", None) is not None:
                a = torch.randn(m.running_cov.shape, generator=g) * 0.3
                m.running_cov.copy_(a @ a.transpose(1, 2) + torch.eye(m.running_cov.shape[-1]))
    return model


def conv_bn() -> nn.Module:
    """Conv -> BN -> ReLU -> Conv -> BN -> pool -> Linear: the second BN's input depends on the first BN."""
    torch.manual_seed(0)
    c = CHANNELS
    return _stale(nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))).eval()


def every_norm() -> nn.Module:
    """One of each kind: BN, ZCA (running_cov), IterNorm (running_wm), Centering, Scaling, BatchRenorm; a Dropout."""
    torch.manual_seed(0)
    c = CHANNELS
    return _stale(nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(c, c, 1), ZCAWhitening(c, group_size=4), nn.ReLU(),
        nn.Conv2d(c, c, 1), IterNorm(c, group_size=4, T=5),
        nn.Conv2d(c, c, 1), Centering(c), nn.Conv2d(c, c, 1), Scaling(c), nn.Conv2d(c, c, 1), BatchRenorm(c),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))).eval()


def bn_zca() -> nn.Module:
    """Conv -> BN -> ReLU -> Conv -> ZCA whitening (groups of 4) -> pool -> Linear."""
    torch.manual_seed(0)
    c = CHANNELS
    return _stale(nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                nn.Conv2d(c, c, 1), ZCAWhitening(c, group_size=4),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))).eval()


def no_stats() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten()).eval()


def wide_whitening() -> nn.Module:
    """A ZCA whitening group of 64 channels on a 1x1 input: a covariance needs at least 65 positions."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 1), ZCAWhitening(64, group_size=64), nn.Flatten()).eval()


def nan_model() -> nn.Module:
    """log of negative activations: NaN at the BN's input."""
    class Log(nn.Module):
        def forward(self, x):
            return torch.log(x)

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), Log(), nn.BatchNorm2d(4), nn.Flatten()).eval()
