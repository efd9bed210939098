"""Fold a frozen channel map into the producer that feeds it: pure tensor math.

The producer computes ``z = W * x + b`` (Conv or Linear: output channel ``o`` is
``W[o]``); the norm computes ``y = A z + c`` over the channel axis. Then

    W'[o] = sum_c A[o, c] W[c]          b' = A b + c

exactly, for any stride, dilation, padding or padding mode, because the map acts
on output channels only. A diagonal A (shape (C,)) scales each output channel;
a full A mixes them, which a grouped conv can hold only if A is block-diagonal
within its groups (the caller checks). Everything is computed in float64 and
cast once to the producer's dtype.
"""
from __future__ import annotations

import torch


def fold_into_producer(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    a: torch.Tensor,
    c: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (W', b') for a producer with output channels on weight dim 0.

    ``weight``: (O, ...) in any dtype; ``bias``: (O,) or None; ``a``: (O,) or
    (O, O); ``c``: (O,). The result has ``weight``'s dtype and device.
    """
    out_channels = weight.shape[0]
    if c.shape != (out_channels,) or a.shape not in ((out_channels,), (out_channels, out_channels)):
        raise ValueError(
            f"channel map of shape A{tuple(a.shape)}, c{tuple(c.shape)} does not match "
            f"a producer with {out_channels} output channels"
        )
    w64 = weight.detach().double()
    b64 = bias.detach().double() if bias is not None else torch.zeros(out_channels, dtype=torch.float64, device=weight.device)
    a64 = a.to(device=weight.device, dtype=torch.float64)
    c64 = c.to(device=weight.device, dtype=torch.float64)
    if a64.dim() == 1:
        w_new = a64.reshape(-1, *([1] * (w64.dim() - 1))) * w64
        b_new = a64 * b64 + c64
    else:
        w_new = torch.tensordot(a64, w64, dims=([1], [0]))
        b_new = a64 @ b64 + c64
    return w_new.to(weight.dtype), b_new.to(weight.dtype)


def is_block_diagonal(a: torch.Tensor, groups: int) -> bool:
    """True when the (C, C) matrix ``a`` has no entry outside its ``groups`` diagonal blocks."""
    if a.dim() == 1 or groups == 1:
        return True
    size = a.shape[0] // groups
    mask = torch.block_diag(*[torch.ones(size, size, dtype=torch.bool)] * groups)
    return bool((a[~mask.to(a.device)] == 0).all())
