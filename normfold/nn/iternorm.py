"""IterNorm: whitening by Newton's iterations (Huang et al., CVPR 2019).

Per group of ``g`` channels, with ``m`` positions (N times spatial):

    Sigma   = eps*I + (1/m) X_c X_c^T             X_c: centered (g, m)
    Sigma_N = Sigma / tr(Sigma)
    P_0 = I,   P_k = (3 P_{k-1} - P_{k-1}^3 Sigma_N) / 2,   k = 1..T
    W = P_T / sqrt(tr(Sigma))                     ~ Sigma^{-1/2} as T grows
    y = W X_c

Eval uses ``running_wm`` (a running average of W, as the paper's code does) and
``running_mean``: y = W_run (x - mu_run), then gamma, beta. No linear algebra
routine runs in either forward, so both export to plain ONNX ops.

Frozen channel map: A = diag(gamma) blockdiag(W_run), c = beta - A mu_run.
"""
from __future__ import annotations

import torch
from torch import nn

from ._channels import (
    apply_grouped,
    channel_matrix,
    channel_view,
    check_input,
    from_channel_matrix,
    update_running,
)
from ._groups import block_diag, group_layout, identity_blocks


def newton_whitening(sigma: torch.Tensor, T: int) -> torch.Tensor:
    """W = P_T / sqrt(tr Sigma) for a batch of covariances ``sigma`` (G, g, g)."""
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    sigma_n = sigma / trace
    p = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    for _ in range(T):
        p = 0.5 * (3.0 * p - torch.matmul(torch.matmul(torch.matmul(p, p), p), sigma_n))
    return p / trace.sqrt()


class IterNorm(nn.Module):
    def __init__(
        self,
        num_features: int,
        group_size: int = 64,
        T: int = 5,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
    ):
        super().__init__()
        self.groups, self.group_size = group_layout("IterNorm", num_features, group_size)
        if T < 1:
            raise ValueError(f"IterNorm: T must be >= 1, got {T}")
        self.num_features = num_features
        self.T = T
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_wm", identity_blocks(self.groups, self.group_size))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.num_features)
        if self.training:
            xm = channel_matrix(x).reshape(self.groups, self.group_size, -1)
            mean = xm.mean(dim=-1, keepdim=True)
            xc = xm - mean
            eye = torch.eye(self.group_size, dtype=x.dtype, device=x.device)
            sigma = self.eps * eye + torch.matmul(xc, xc.transpose(1, 2)) / xc.shape[-1]
            w = newton_whitening(sigma, self.T)
            y = from_channel_matrix(torch.matmul(w, xc).reshape(self.num_features, -1), x)
            update_running(self.running_mean, mean.reshape(-1), self.momentum)
            update_running(self.running_wm, w, self.momentum)
            self.num_batches_tracked.add_(1)
        else:
            y = apply_grouped(x - channel_view(self.running_mean, x), self.running_wm)
        if self.affine:
            y = y * channel_view(self.weight, x) + channel_view(self.bias, x)
        return y

    @torch.no_grad()
    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) in float64: A = diag(gamma) blockdiag(W_run) (C, C), c = beta - A mu_run."""
        a = block_diag(self.running_wm.double())
        if self.affine:
            a = self.weight.double()[:, None] * a
        c = -a @ self.running_mean.double()
        if self.affine:
            c = c + self.bias.double()
        return a, c

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, group_size={self.group_size}, T={self.T}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}"
        )
