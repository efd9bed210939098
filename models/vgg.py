"""A plain VGG-style net (Simonyan & Zisserman 2015, configuration A = VGG-11).

No shortcuts: (3x3 Conv -> Norm -> ReLU) stacks and max pools, then global
average pooling and one Linear (the CIFAR-style head: the original three
4096-wide FC layers would be 90% of the parameters and hold no norm).
"""
from __future__ import annotations

from torch import nn

from normfold.nn import create_norm

from ._common import scaled

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, cfg=VGG11, norm: str = "bn", num_classes: int = 1000, width_mult: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        layers, cin = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = scaled(v, width_mult)
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), create_norm(norm, cout), nn.ReLU(inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def vgg11(norm: str = "bn", width_mult: float = 1.0, **kw) -> VGG:
    return VGG(VGG11, norm=norm, width_mult=width_mult, **kw)
