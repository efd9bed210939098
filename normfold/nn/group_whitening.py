"""Group whitening: what decorrelating and whitening layers share.

Per group of ``g`` consecutive channels (the rule in ``_groups``), with
``m = N * prod(S)`` positions and X the group's (g, m) channel matrix:

    mu_B    = X 1 / m,      X_c = X - mu_B
    Sigma_B = eps I + (1/m) X_c X_c^T
    y       = W(Sigma_B) X_c            training; gradients flow through W
    y       = W_run (x - mu_run)        eval
    then    y * gamma + beta            when ``affine``

A subclass defines only ``whitening_matrix(Sigma) -> W`` (batched over groups).
Frozen channel map: A = diag(gamma) blockdiag(W_run), c = beta - A mu_run.

Running statistics (``running=``):

* ``"cov"``: ``running_cov`` averages the *unbiased* batch covariance, as batch
  norm's ``running_var`` does, and W_run = W(running_cov + eps I). W_run is
  derived in float64 **outside** the exported forward and cached, cast once, in
  the non-persistent buffer ``eval_matrix``: the eval graph is Sub, Reshape,
  MatMul, never an eigendecomposition. The cache is rebuilt when the
  statistics can have changed: on ``eval()``/``train(False)``, after
  ``load_state_dict``, after ``.to()``/``.double()``/``.float()``, and, in an
  eager eval forward, whenever ``running_cov`` was modified in place (its
  version counter moved). While torch.export / jit tracing the cache is used as
  it stands, so nothing from ``torch.linalg`` is ever traced.
* ``"wm"``: ``running_wm`` averages the batch whitening matrices, as the
  reference DBN/IterNorm code does. Only offered where W(Sigma) is unique
  (ZCA, Cholesky, IterNorm); a running average of PCA rotations is ill-posed
  (eigenvector signs and order flip between batches).
"""
from __future__ import annotations

import torch
from torch import nn

from ._channels import (
    apply_grouped,
    channel_matrix,
    channel_view,
    check_args,
    check_input,
    from_channel_matrix,
    positions,
    unbiased,
    update_running,
)
from ._groups import block_diag, group_layout, identity_blocks

RUNNING_MODES = ("cov", "wm")


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class GroupWhitening(nn.Module):
    """Base class; subclasses implement :meth:`whitening_matrix`."""

    #: running modes a subclass accepts; "wm" only where W(Sigma) is unique.
    running_modes: tuple[str, ...] = ("cov",)

    def __init__(
        self,
        num_features: int,
        group_size: int = 16,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        running: str = "cov",
    ):
        super().__init__()
        layer = type(self).__name__
        self.groups, self.group_size = group_layout(layer, num_features, group_size)
        check_args(layer, eps=eps, momentum=momentum)
        if running not in self.running_modes:
            raise ValueError(f"{layer}: running must be one of {self.running_modes}, got {running!r}")
        self.num_features, self.eps, self.momentum, self.affine, self.running = (
            num_features, eps, momentum, affine, running,
        )
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        eye = identity_blocks(self.groups, self.group_size)
        if running == "cov":
            self.register_buffer("running_cov", eye)
            self.register_buffer("eval_matrix", eye.clone(), persistent=False)
        else:
            self.register_buffer("running_wm", eye)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self._cache_key = None  # which running_cov the eval_matrix was derived from
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh())

    def whitening_matrix(self, sigma: torch.Tensor) -> torch.Tensor:
        """W(Sigma) for covariances ``sigma`` of shape (G, g, g), differentiable."""
        raise NotImplementedError

    # -- forward -----------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.num_features)
        if self.training:
            m = positions(self, x)
            xm = channel_matrix(x).reshape(self.groups, self.group_size, m)
            mean = xm.mean(dim=-1, keepdim=True)
            xc = xm - mean
            cov = torch.matmul(xc, xc.transpose(1, 2)) / m
            eye = torch.eye(self.group_size, dtype=x.dtype, device=x.device)
            w = self.whitening_matrix(cov + self.eps * eye)
            y = from_channel_matrix(torch.matmul(w, xc).reshape(self.num_features, -1), x)
            update_running(self.running_mean, mean.reshape(-1), self.momentum)
            if self.running == "cov":
                update_running(self.running_cov, unbiased(cov, m), self.momentum)
            else:
                update_running(self.running_wm, w, self.momentum)
            self.num_batches_tracked.add_(1)
        else:
            if not _tracing():
                self._refresh_if_stale()
            w = self.running_wm if self.running == "wm" else self.eval_matrix
            y = apply_grouped(x - channel_view(self.running_mean, x), w)
        if self.affine:
            y = y * channel_view(self.weight, x) + channel_view(self.bias, x)
        return y

    # -- the frozen map ----------------------------------------------------

    @torch.no_grad()
    def running_whitening(self) -> torch.Tensor:
        """W_run (G, g, g) in float64, derived from the running statistics."""
        if self.running == "wm":
            return self.running_wm.double()
        eye = torch.eye(self.group_size, dtype=torch.float64, device=self.running_cov.device)
        return self.whitening_matrix(self.running_cov.double() + self.eps * eye)

    @torch.no_grad()
    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) in float64: A = diag(gamma) blockdiag(W_run) (C, C), c = beta - A mu_run."""
        a = block_diag(self.running_whitening())
        if self.affine:
            a = self.weight.double()[:, None] * a
        c = -a @ self.running_mean.double()
        if self.affine:
            c = c + self.bias.double()
        return a, c

    # -- keeping eval_matrix in step with running_cov ----------------------

    def _stats_key(self):
        cov = self.running_cov
        try:
            version = cov._version
        except RuntimeError:  # inference tensors carry no version counter
            version = None
        return (version, cov.data_ptr(), cov.dtype, cov.device, self.eps)

    @torch.no_grad()
    def refresh(self) -> None:
        """Re-derive ``eval_matrix`` from the running statistics (float64, cast once)."""
        if self.running != "cov" or self.running_cov.is_meta:
            return
        self.eval_matrix = self.running_whitening().to(self.running_cov.dtype)
        self._cache_key = self._stats_key()

    def _refresh_if_stale(self) -> None:
        if self.running == "cov" and (self._cache_key is None or self._cache_key != self._stats_key()):
            self.refresh()

    def train(self, mode: bool = True):
        super().train(mode)
        if not mode:
            self._refresh_if_stale()
        return self

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.running == "cov":
            self._cache_key = None
            self.refresh()
        return self

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, group_size={self.group_size}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, running={self.running!r}"
        )
