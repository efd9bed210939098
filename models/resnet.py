"""ResNet (He et al. 2016) with basic or bottleneck blocks, any norm from ``create_norm``.

Post-activation order, as in the paper: Conv -> Norm -> ReLU. Every norm sits
right after a conv, so every foldable norm folds backward into its conv.
"""
from __future__ import annotations

from torch import nn

from normfold.nn import create_norm

from ._common import scaled


def _shortcut(cin: int, cout: int, stride: int, norm: str) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), create_norm(norm, cout))


class BasicBlock(nn.Module):
    """3x3 conv -> norm -> ReLU -> 3x3 conv -> norm, plus the shortcut, -> ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm: str):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = create_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, cout, 3, 1, 1, bias=False)
        self.bn2 = create_norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand (x4), a norm after each conv."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm: str):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = create_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = create_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = create_norm(norm, cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride, norm)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), norm: str = "bn", num_classes: int = 1000, width: int = 64,
                 in_channels: int = 3, block: type[nn.Module] = BasicBlock):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = create_norm(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], width
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(block(cin, planes, stride if b == 0 else 1, norm))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(norm: str = "bn", width_mult: float = 1.0, **kw) -> ResNet:
    return ResNet((2, 2, 2, 2), norm=norm, width=scaled(64, width_mult), block=BasicBlock, **kw)


def resnet50(norm: str = "bn", width_mult: float = 1.0, **kw) -> ResNet:
    return ResNet((3, 4, 6, 3), norm=norm, width=scaled(64, width_mult), block=Bottleneck, **kw)
