"""Decorrelating and whitening layers built on an eigen- or Cholesky decomposition.

Per group, with Sigma = eps I + (1/m) X_c X_c^T (see ``group_whitening``):

    Decorrelating   Sigma = D Lambda D^T,  W = D^T                 (PCA rotation, no scaling)
    PCAWhitening    W = Lambda^{-1/2} D^T
    ZCAWhitening    W = D Lambda^{-1/2} D^T = Sigma^{-1/2}         (decorrelated batch norm, Huang 2018)
    CholeskyWhitening  Sigma = L L^T (L lower, positive diagonal),  W = L^{-1}

Eigenvectors are ordered by decreasing eigenvalue and each is signed so that
its entry of largest magnitude is positive: D^T is then a function of Sigma
(up to ties), the same in training and when derived from running statistics.
ZCA and Cholesky matrices are unique, so those two may also keep a running
average of W (``running="wm"``); the default averages the covariance, whose
W(running_cov) is exactly the whitening matrix of the estimated population.
"""
from __future__ import annotations

import torch

from .group_whitening import GroupWhitening


def eigh_descending(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Lambda, D) of symmetric ``sigma`` (..., g, g): eigenvalues decreasing, signs fixed."""
    lam, d = torch.linalg.eigh(sigma)
    lam, d = lam.flip(-1), d.flip(-1)
    pivot = torch.gather(d, -2, d.abs().argmax(dim=-2, keepdim=True))
    return lam, d * torch.sign(pivot).detach()


class Decorrelating(GroupWhitening):
    """y = D^T (x - mu) per group: decorrelated, variances left as they are."""

    def __init__(self, num_features: int, group_size: int = 16, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, group_size, eps, momentum, affine=False)

    def whitening_matrix(self, sigma: torch.Tensor) -> torch.Tensor:
        return eigh_descending(sigma)[1].transpose(-2, -1)


class PCAWhitening(GroupWhitening):
    """y = Lambda^{-1/2} D^T (x - mu) per group."""

    def whitening_matrix(self, sigma: torch.Tensor) -> torch.Tensor:
        lam, d = eigh_descending(sigma)
        return lam.rsqrt()[..., :, None] * d.transpose(-2, -1)


class ZCAWhitening(GroupWhitening):
    """y = Sigma^{-1/2} (x - mu) per group (decorrelated batch norm)."""

    running_modes = ("cov", "wm")

    def whitening_matrix(self, sigma: torch.Tensor) -> torch.Tensor:
        lam, d = torch.linalg.eigh(sigma)
        return torch.matmul(d * lam.rsqrt()[..., None, :], d.transpose(-2, -1))


class CholeskyWhitening(GroupWhitening):
    """y = L^{-1} (x - mu) per group, Sigma = L L^T."""

    running_modes = ("cov", "wm")

    def whitening_matrix(self, sigma: torch.Tensor) -> torch.Tensor:
        low = torch.linalg.cholesky(sigma)
        eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
        return torch.linalg.solve_triangular(low, eye, upper=False)
