"""Centering: batch normalization without scaling (mean-only BN).

Training:  y = x - mu_B                (mu_B: per-channel mean over N and space)
Eval:      y = x - mu_run
then ``+ beta`` when ``affine``.  Frozen channel map: A = I, c = beta - mu_run.
"""
from __future__ import annotations

import torch
from torch import nn

from ._channels import channel_matrix, channel_view, check_args, check_input, update_running


class Centering(nn.Module):
    def __init__(self, num_features: int, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"Centering: num_features must be >= 1, got {num_features}")
        check_args("Centering", momentum=momentum)
        self.num_features = num_features
        self.momentum = momentum
        self.affine = affine
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.num_features)
        if self.training:
            mean = channel_matrix(x).mean(dim=1)
            update_running(self.running_mean, mean, self.momentum)
            self.num_batches_tracked.add_(1)
        else:
            mean = self.running_mean
        y = x - channel_view(mean, x)
        if self.bias is not None:
            y = y + channel_view(self.bias, x)
        return y

    @torch.no_grad()
    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) with A = 1 (diagonal, shape (C,)) and c = beta - mu_run, in float64."""
        a = torch.ones(self.num_features, dtype=torch.float64, device=self.running_mean.device)
        c = -self.running_mean.double()
        if self.bias is not None:
            c = c + self.bias.double()
        return a, c

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, affine={self.affine}"
