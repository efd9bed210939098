"""IterNorm: whitening by Newton's iterations (Huang et al., CVPR 2019).

Per group of ``g`` channels, with Sigma = eps I + (1/m) X_c X_c^T
(see ``group_whitening`` for the shared training/eval formulas):

    Sigma_N = Sigma / tr(Sigma)
    P_0 = I,   P_k = (3 P_{k-1} - P_{k-1}^3 Sigma_N) / 2,   k = 1..T
    W = P_T / sqrt(tr(Sigma))                     -> Sigma^{-1/2} as T grows

Only matmuls, so W is differentiable and needs no linear-algebra routine. The
iteration converges for every Sigma (eigenvalues of Sigma_N lie in (0, 1]), but
slowly for small eigenvalues: about log_{1.5} sqrt(tr Sigma / lambda_min)
steps before the quadratic phase; at the paper's T = 5 an ill-conditioned group
is only partly whitened.

Running statistics: ``running="wm"`` (default) averages the batch W's, as the
paper's code does. With finite T, W(Sigma_B) is what the network was trained
on, and a running average of it reproduces that at eval; it also keeps the
``running_wm`` state of existing checkpoints. ``running="cov"`` averages the
covariance and evaluates W(running_cov + eps I) in float64, closer to the
population whitening but not to what training applied at small T.

``group_size`` must divide C (``group_size >= C`` means one group): a shorter
last group would change the trace normalization for those channels only.
"""
from __future__ import annotations

import torch

from .group_whitening import GroupWhitening


def newton_whitening(sigma: torch.Tensor, T: int) -> torch.Tensor:
    """W = P_T / sqrt(tr Sigma) for a batch of covariances ``sigma`` (..., g, g).

    Computed in the coupled Newton-Schulz form, whose iterates equal P_k in exact
    arithmetic: Y_0 = Sigma_N, Z_0 = I, M_k = (3I - Z_k Y_k)/2,
    Y_{k+1} = Y_k M_k, Z_{k+1} = M_k Z_k = P_{k+1}. Same cost (three matmuls a
    step), but stable: the uncoupled form amplifies rounding errors and diverges
    for large T on ill-conditioned Sigma (Higham, Functions of Matrices, 6.3).
    """
    trace = sigma.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    eye = torch.eye(sigma.shape[-1], dtype=sigma.dtype, device=sigma.device).expand_as(sigma)
    y, z = sigma / trace, eye
    for _ in range(T):
        m = 0.5 * (3.0 * eye - torch.matmul(z, y))
        y, z = torch.matmul(y, m), torch.matmul(m, z)
    return z / trace.sqrt()


class IterNorm(GroupWhitening):
    running_modes = ("wm", "cov")

    def __init__(
        self,
        num_features: int,
        group_size: int = 64,
        T: int = 5,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        running: str = "wm",
    ):
        if not (isinstance(T, int) and T >= 1):
            raise ValueError(f"IterNorm: T must be an integer >= 1, got {T!r}")
        super().__init__(num_features, group_size, eps, momentum, affine, running)
        self.T = T

    def whitening_matrix(self, sigma: torch.Tensor) -> torch.Tensor:
        return newton_whitening(sigma, self.T)

    def _stats_key(self):
        return (*super()._stats_key(), self.T)  # changing T changes W(running_cov)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, T={self.T}"
