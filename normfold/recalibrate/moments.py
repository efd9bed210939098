"""Population moments of a layer's input, per channel group, merged exactly across batches.

For a norm layer's input x of shape (N, C, *S), channel c's values are its
m = N * prod(S) positions. Channels are split into G consecutive groups of g
(g = 1: a per-channel variance; g > 1: the covariance of a whitening group).
Per batch b, in float64, with X_b the group's (g, m_b) channel matrix:

    mu_b = X_b 1 / m_b,        M2_b = (X_b - mu_b)(X_b - mu_b)^T

and two partial results (n_a, mu_a, M2_a), (n_b, mu_b, M2_b) merge exactly
(Chan, Golub & LeVeque 1979), with d = mu_b - mu_a and n = n_a + n_b:

    mu = mu_a + d n_b / n,     M2 = M2_a + M2_b + d d^T n_a n_b / n

so the result is the moments of all positions of all batches, whatever the
batch size, without the cancellation of sum(x^2) - n mu^2 when |mu| >> sigma.
The covariance is M2 / n (biased) or M2 / (n - 1) (unbiased, what torch's
batch norm stores in ``running_var``). Memory: (C,) + (G, g, g) float64.
"""
from __future__ import annotations

import torch


class ChannelMoments:
    """Streaming mean and (grouped) covariance of ``channels`` channels in groups of ``group_size``."""

    def __init__(self, channels: int, group_size: int = 1):
        if channels % group_size:
            raise ValueError(f"group size {group_size} does not divide {channels} channels")
        self.channels, self.group_size = channels, group_size
        self.groups = channels // group_size
        self.count = 0
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(self.groups, group_size, group_size, dtype=torch.float64)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the positions of ``x`` (N, C, *S) into the moments (in float64)."""
        xm = x.detach().transpose(0, 1).reshape(x.shape[1], -1).to(device="cpu", dtype=torch.float64)
        m = xm.shape[1]
        if m == 0:
            return
        mean_b = xm.mean(dim=1)
        xc = (xm - mean_b[:, None]).reshape(self.groups, self.group_size, m)
        m2_b = torch.matmul(xc, xc.transpose(1, 2))
        n_a, n = self.count, self.count + m
        d = (mean_b - self.mean).reshape(self.groups, self.group_size)
        self.m2 += m2_b + (d[:, :, None] * d[:, None, :]) * (n_a * m / n)
        self.mean += (mean_b - self.mean) * (m / n)
        self.count = n

    def covariance(self, unbiased: bool = True) -> torch.Tensor:
        """(G, g, g): M2 / (n - 1) when ``unbiased``, else M2 / n."""
        return self.m2 / (self.count - 1 if unbiased else self.count)

    def variance(self, unbiased: bool = True) -> torch.Tensor:
        """(C,): the diagonal of the group covariances."""
        return self.covariance(unbiased).diagonal(dim1=-2, dim2=-1).reshape(-1)
