"""Scaling: batch normalization without centering (variance-only BN).

Training:  y = x / sqrt(var_B + eps)     var_B: biased per-channel variance of the batch
Eval:      y = x / sqrt(var_run + eps)   var_run: running unbiased variance (as BN keeps)
then ``* gamma + beta`` when ``affine``.  Frozen map: A = gamma/sqrt(var_run+eps), c = beta.
"""
from __future__ import annotations

import torch
from torch import nn

from ._channels import batch_mean_var, channel_view, check_args, check_input, positions, unbiased, update_running
from .affine import diagonal_affine


class Scaling(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"Scaling: num_features must be >= 1, got {num_features}")
        check_args("Scaling", eps=eps, momentum=momentum)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.num_features)
        if self.training:
            m = positions(self, x)
            _, var = batch_mean_var(x)
            update_running(self.running_var, unbiased(var, m), self.momentum)
            self.num_batches_tracked.add_(1)
        else:
            var = self.running_var
        y = x * channel_view(torch.rsqrt(var + self.eps), x)
        if self.affine:
            y = y * channel_view(self.weight, x) + channel_view(self.bias, x)
        return y

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) in float64: A = gamma / sqrt(var_run + eps) (diagonal, (C,)), c = beta."""
        return diagonal_affine(self.running_var, self.eps, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
