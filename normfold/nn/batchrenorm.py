"""Batch renormalization (Ioffe, 2017).

Training, per channel, with sigma_B = sqrt(var_B + eps) (var_B biased) and
sigma_run = sqrt(var_run + eps):

    r = clip(sigma_B / sigma_run, 1/r_max, r_max)        (no gradient through r)
    d = clip((mu_B - mu_run) / sigma_run, -d_max, d_max)  (no gradient through d)
    x_hat = (x - mu_B) / sigma_B * r + d

Running statistics start at mean 0, variance 1 and are updated as batch norm's
(unbiased variance, PyTorch's momentum). Eval is batch norm with running
statistics, so the frozen map is BN's: A = gamma/sigma_run, c = beta - A mu_run.
``r_max`` and ``d_max`` are plain attributes a training loop may schedule
(the paper starts at r_max = 1, d_max = 0, i.e. batch norm, and relaxes them).
"""
from __future__ import annotations

import torch
from torch import nn

from ._channels import batch_mean_var, channel_view, check_args, check_input, positions, unbiased, update_running
from .affine import diagonal_affine


class BatchRenorm(nn.Module):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        r_max: float = 3.0,
        d_max: float = 5.0,
        affine: bool = True,
    ):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"BatchRenorm: num_features must be >= 1, got {num_features}")
        check_args("BatchRenorm", eps=eps, momentum=momentum)
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.r_max, self.d_max = r_max, d_max
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.num_features)
        if self.training:
            if not (self.r_max >= 1.0 and self.d_max >= 0.0):
                raise ValueError(f"BatchRenorm: need r_max >= 1 and d_max >= 0, got {self.r_max}, {self.d_max}")
            m = positions(self, x)
            mean, var = batch_mean_var(x)
            sigma = torch.sqrt(var + self.eps)
            with torch.no_grad():
                sigma_run = torch.sqrt(self.running_var + self.eps)
                r = (sigma / sigma_run).clamp(1.0 / self.r_max, self.r_max)
                d = ((mean - self.running_mean) / sigma_run).clamp(-self.d_max, self.d_max)
            y = (x - channel_view(mean, x)) * channel_view(r / sigma, x) + channel_view(d, x)
            update_running(self.running_mean, mean, self.momentum)
            update_running(self.running_var, unbiased(var, m), self.momentum)
            self.num_batches_tracked.add_(1)
        else:
            y = (x - channel_view(self.running_mean, x)) * channel_view(torch.rsqrt(self.running_var + self.eps), x)
        if self.affine:
            y = y * channel_view(self.weight, x) + channel_view(self.bias, x)
        return y

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) in float64: batch norm's, A = gamma / sqrt(var_run + eps), c = beta - A mu_run."""
        return diagonal_affine(self.running_var, self.eps, self.weight, self.bias, self.running_mean)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"r_max={self.r_max}, d_max={self.d_max}, affine={self.affine}"
        )
