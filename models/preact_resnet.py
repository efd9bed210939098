"""Pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", 2016).

Order inside a block: Norm -> ReLU -> Conv. ``bn1`` of each block normalizes
the residual sum, so no conv precedes it directly: it can only fold *forward*
into the following conv (exact for the 1x1 shortcut, border-sensitive for the
zero-padded 3x3). ``bn2`` follows ``conv1`` and folds backward as usual.
"""
from __future__ import annotations

from torch import nn

from normfold.nn import create_norm

from ._common import scaled


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.bn1 = create_norm(norm, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = create_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = self.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the paper.
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), norm: str = "bn", num_classes: int = 1000, width: int = 64,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], width
        for i, blocks in enumerate(layers):
            cout = width * 2**i
            stage = [PreActBlock(cin, cout, 1 if i == 0 else 2, norm)]
            stage += [PreActBlock(cout, cout, 1, norm) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = create_norm(norm, cin)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu(self.bn(x))
        return self.fc(self.avgpool(x).flatten(1))


def preact_resnet18(norm: str = "bn", width_mult: float = 1.0, **kw) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), norm=norm, width=scaled(64, width_mult), **kw)
