"""MobileNetV2 (Sandler et al. 2018): inverted residuals with depthwise 3x3 convs.

Each block: 1x1 expand -> Norm -> ReLU6 -> 3x3 depthwise -> Norm -> ReLU6 ->
1x1 project -> Norm (+ identity when shapes match). A diagonal map (BN) folds
into a depthwise conv exactly; a full whitening map would densify it.
"""
from __future__ import annotations

from torch import nn

from normfold.nn import create_norm

from ._common import scaled

# (expansion t, channels c, repeats n, first stride s), from the paper's Table 2.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_norm_act(cin: int, cout: int, kernel: int, stride: int, norm: str, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        create_norm(norm, cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, norm: str):
        super().__init__()
        hidden = cin * expand
        layers = [conv_norm_act(cin, hidden, 1, 1, norm)] if expand != 1 else []
        layers += [
            conv_norm_act(hidden, hidden, 3, stride, norm, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            create_norm(norm, cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, norm: str = "bn", num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3):
        super().__init__()
        cin = scaled(32, width_mult)
        last = scaled(1280, max(1.0, width_mult))
        layers = [conv_norm_act(in_channels, cin, 3, 2, norm)]
        for t, c, n, s in SETTINGS:
            cout = scaled(c, width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, norm))
                cin = cout
        layers.append(conv_norm_act(cin, last, 1, 1, norm))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def mobilenetv2(norm: str = "bn", width_mult: float = 1.0, **kw) -> MobileNetV2:
    return MobileNetV2(norm=norm, width_mult=width_mult, **kw)
