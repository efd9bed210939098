"""Give a freshly built model the statistics a trained one would have.

Freshly initialized norms are identities (mean 0, variance 1, gamma 1, beta 0),
which would make any fold trivially exact and prove nothing. ``populate`` runs
training-mode forward passes on seeded random data so every running statistic
is really estimated, and draws gamma/beta away from 1/0. It leaves the global
RNG as it found it.
"""
from __future__ import annotations

import torch
from torch import nn

from normfold.nn import is_norm


@torch.no_grad()
def populate(model: nn.Module, input_shape: tuple[int, ...], *, steps: int = 8, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if is_norm(module):
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(weight, torch.Tensor):
                weight.copy_(torch.rand(weight.shape, generator=gen) + 0.5)
            if isinstance(bias, torch.Tensor):
                bias.copy_(0.1 * torch.randn(bias.shape, generator=gen))
    was_training = model.training
    model.train()
    for _ in range(steps):
        model(torch.randn(input_shape, generator=gen))
    return model.train(was_training)
