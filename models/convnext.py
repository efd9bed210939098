"""A ConvNeXt-style net (Liu et al. 2022), sized like ConvNeXt-Atto.

Block: 7x7 depthwise conv -> Norm -> 1x1 conv (4x) -> GELU -> 1x1 conv ->
layer scale, plus the identity. With ``norm="ln"`` (LayerNorm over channels,
as the paper) the norms depend on each sample: nothing here is foldable, and
normfold's report must say so rather than fold it.
"""
from __future__ import annotations

import torch
from torch import nn

from normfold.nn import create_norm

from ._common import scaled

DEPTHS, DIMS = (2, 2, 6, 2), (40, 80, 160, 320)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, norm: str, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = create_norm(norm, dim)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(4 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), layer_scale))

    def forward(self, x):
        out = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))
        return x + self.gamma * out


class ConvNeXt(nn.Module):
    def __init__(self, depths=DEPTHS, dims=DIMS, norm: str = "ln", num_classes: int = 1000,
                 width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        dims = [scaled(d, width_mult) for d in dims]
        self.stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], 4, 4), create_norm(norm, dims[0]))
        stages, cin = [], dims[0]
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            down = [] if i == 0 else [create_norm(norm, cin), nn.Conv2d(cin, dim, 2, 2)]
            stages.append(nn.Sequential(*down, *(ConvNeXtBlock(dim, norm) for _ in range(depth))))
            cin = dim
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_norm = create_norm(norm, cin)     # on the pooled (N, C, 1, 1) map: LayerNorm over C
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.head_norm(self.avgpool(self.stages(self.stem(x))))
        return self.head(x.flatten(1))


def convnext(norm: str = "ln", width_mult: float = 1.0, **kw) -> ConvNeXt:
    return ConvNeXt(norm=norm, width_mult=width_mult, **kw)
