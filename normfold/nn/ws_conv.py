"""Weight-standardized convolution (Qiao et al., 2019; timm's ``StdConv2d``).

The effective weight standardizes each output filter over its fan-in:

    W_hat[o] = (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps)     (biased variance)

At inference W_hat is a constant: :meth:`WSConv2d.baked` returns a plain
``nn.Conv2d`` holding it, which ``normfold.nn.bake.bake_weights`` (called by
fold and export) substitutes, so the ONNX graph has a single Conv.
"""
from __future__ import annotations

import torch
from torch import nn
from ._channels import check_args


def standardize(w: torch.Tensor, eps: float) -> torch.Tensor:
    """W_hat[o] = (W[o] - mean W[o]) / sqrt(var W[o] + eps), over each filter's fan-in."""
    flat = w.reshape(w.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    var = flat.var(dim=1, unbiased=False, keepdim=True)
    return ((flat - mean) * torch.rsqrt(var + eps)).reshape(w.shape)


class WSConv2d(nn.Conv2d):
    def __init__(self, *args, eps: float = 1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        check_args("WSConv2d", eps=eps)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardize(self.weight, self.eps), self.bias)

    @torch.no_grad()
    def baked(self) -> nn.Conv2d:
        """A plain Conv2d with the standardized weight (computed in float64, cast once)."""
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
            bias=self.bias is not None, padding_mode=self.padding_mode,
            device=self.weight.device, dtype=self.weight.dtype,
        )
        conv.weight.copy_(standardize(self.weight.double(), self.eps))
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv.train(self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"
