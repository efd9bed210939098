"""Channel-axis helpers shared by every normalization layer.

A normalization layer sees ``x`` of shape ``(N, C, *S)`` with ``len(S)`` in 0..3.
Batch statistics are taken over the ``m = N * prod(S)`` positions of each
channel; a frozen layer applies one affine map over the channel axis at every
position.
"""
from __future__ import annotations

import torch

SUPPORTED_RANKS = (2, 3, 4, 5)


def check_input(module: torch.nn.Module, x: torch.Tensor, num_features: int) -> None:
    """Raise a ValueError naming the layer when ``x`` is not ``(N, C, *S)``."""
    if x.dim() not in SUPPORTED_RANKS:
        raise ValueError(
            f"{type(module).__name__} expects input of rank 2 to 5 (N, C, *spatial), "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[1] != num_features:
        raise ValueError(
            f"{type(module).__name__}(num_features={num_features}) got {x.shape[1]} "
            f"channels in input of shape {tuple(x.shape)}"
        )


def check_args(layer: str, *, eps: float | None = None, momentum: float | None = None) -> None:
    """Raise a ValueError naming the layer, the argument and its value."""
    if eps is not None and not eps > 0:
        raise ValueError(f"{layer}: eps must be > 0, got {eps!r}")
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"{layer}: momentum must be in [0, 1], got {momentum!r}")


def positions(module: torch.nn.Module, x: torch.Tensor) -> int:
    """``m = N * prod(S)``; training statistics need m > 1 (as torch's batch norm does)."""
    m = x.numel() // x.shape[1]
    if m < 2:
        raise ValueError(
            f"{type(module).__name__} expects more than 1 value per channel when training, "
            f"got input of shape {tuple(x.shape)}"
        )
    return m


def batch_mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and *biased* variance over the N * prod(S) positions."""
    xm = channel_matrix(x)
    return xm.mean(dim=1), xm.var(dim=1, unbiased=False)


def channel_matrix(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, *S) -> (C, m)``: one row per channel, one column per position."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def from_channel_matrix(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`channel_matrix` for a tensor shaped like ``like``."""
    shape = (like.shape[1], like.shape[0], *like.shape[2:])
    return y.reshape(shape).transpose(0, 1)


def channel_view(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-channel vector ``(C,)`` to broadcast against ``x``."""
    return v.reshape(1, -1, *([1] * (x.dim() - 2)))


def apply_grouped(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y[n, group g, :, p] = w[g] @ x[n, group g, :, p] for ``w`` of shape (G, g, g).

    Written with reshape and matmul only, so it exports to plain ONNX ops with a
    dynamic batch axis.
    """
    groups, size = w.shape[0], w.shape[1]
    xg = x.reshape(x.shape[0], groups, size, -1)
    return torch.matmul(w, xg).reshape(x.shape)


@torch.no_grad()
def update_running(running: torch.Tensor, batch: torch.Tensor, momentum: float) -> None:
    """PyTorch's convention: ``running = (1 - momentum) * running + momentum * batch``."""
    running.mul_(1.0 - momentum).add_(batch.detach().to(running.dtype), alpha=momentum)


def unbiased(biased: torch.Tensor, m: int) -> torch.Tensor:
    """Running variances/covariances store the unbiased estimate, as torch's batch norm does."""
    return biased * (m / (m - 1))
