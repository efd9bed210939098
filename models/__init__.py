"""The model zoo: named, deterministic models with populated norm statistics.

Installed as ``normfold.zoo``. ``build(name)`` returns a model in eval mode whose
running statistics came from training-mode passes, never from initialization.
A name is ``<architecture>-<norm>``, the norm being a ``create_norm`` name.
``build(name, small=True)`` gives the same architecture at a quarter of the
width, populated at 32x32, for tests that need realistic graphs, not FLOPs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from .convnext import convnext
from .mobilenetv2 import mobilenetv2
from .populate import populate
from .preact_resnet import preact_resnet18
from .resnet import resnet18, resnet50
from .vgg import vgg11


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[..., nn.Module]   # factory(width_mult=1.0) -> model
    input_shape: tuple[int, ...]        # the shape `normfold run` uses by default
    populate_shape: tuple[int, ...]     # training-mode passes that fill the statistics
    description: str
    norm: str = ""                      # the create_norm name used for every norm layer
    small_shape: tuple[int, ...] = (4, 3, 32, 32)   # populate/input shape of build(small=True)


SMALL_WIDTH = 0.25

ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "resnet18": (resnet18, "ResNet-18, basic blocks"),
    "resnet50": (resnet50, "ResNet-50, bottleneck blocks"),
    "mobilenetv2": (mobilenetv2, "MobileNetV2, inverted residuals with depthwise convs"),
    "vgg11": (vgg11, "VGG-11, plain Conv-Norm-ReLU stacks"),
    "preact_resnet18": (preact_resnet18, "pre-activation ResNet-18 (Norm->ReLU->Conv)"),
    "convnext": (convnext, "ConvNeXt-Atto-style, depthwise 7x7 + inverted MLP"),
}

NORM_NOTES = {
    "bn": "BatchNorm2d",
    "center": "mean-only Centering",
    "scale": "variance-only Scaling",
    "brn": "Batch Renormalization",
    "iternorm": "IterNorm whitening (group 64, T=5)",
    "zca": "ZCA whitening (group 16)",
    "pca": "PCA whitening (group 16)",
    "cholesky": "Cholesky whitening (group 16)",
    "decorr": "PCA decorrelation without rescaling (group 16)",
    "gn": "GroupNorm (not foldable)",
    "ln": "LayerNorm over channels (not foldable)",
}

NAMES = (
    *(f"resnet18-{n}" for n in ("iternorm", "bn", "center", "scale", "brn", "zca", "pca", "cholesky", "decorr", "gn")),
    "resnet50-bn",
    "mobilenetv2-bn",
    "vgg11-bn",
    "preact_resnet18-bn",
    "convnext-ln",
)


def _entry(name: str) -> ZooEntry:
    arch, norm = name.rsplit("-", 1)
    factory, arch_text = ARCHITECTURES[arch]
    return ZooEntry(
        name=name,
        factory=partial(factory, norm),
        input_shape=(1, 3, 224, 224),
        populate_shape=(8, 3, 64, 64),
        description=f"{arch_text}; {NORM_NOTES.get(norm, norm)}",
        norm=norm,
    )


ZOO: dict[str, ZooEntry] = {name: _entry(name) for name in NAMES}

DEFAULT = "resnet18-iternorm"


def build(name: str, *, seed: int = 0, small: bool = False) -> nn.Module:
    """The named model, deterministic for a seed, statistics populated, in eval mode.

    ``small=True``: width x0.25 and statistics from ``entry.small_shape`` inputs.
    """
    try:
        entry = ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}") from None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = entry.factory(width_mult=SMALL_WIDTH) if small else entry.factory()
    shape = entry.small_shape if small else entry.populate_shape
    return populate(model, shape, seed=seed).eval()
