"""LayerNorm2d: layer norm over the channel axis of a channels-first tensor.

For x of shape (N, C, *S), each position is normalized over its C channels
(as timm's ``LayerNorm2d``): y = (x - mean_C) / sqrt(var_C + eps) * gamma + beta.
Statistics belong to each sample, so it is recognised as a norm but never
folded (it is an ``nn.LayerNorm``); it exports as Transpose, LayerNormalization,
Transpose.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._channels import check_input


class LayerNorm2d(nn.LayerNorm):
    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True):
        super().__init__(num_features, eps=eps, elementwise_affine=affine)
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x, self.num_features)
        y = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)
