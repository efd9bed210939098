"""The model zoo: named, deterministic models with populated norm statistics.

Installed as ``normfold.zoo``. ``build(name)`` returns a model in eval mode whose
running statistics came from training-mode passes, never from initialization.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .populate import populate
from .resnet import resnet18


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]        # the shape `normfold run` uses by default
    populate_shape: tuple[int, ...]     # training-mode passes that fill the statistics
    description: str


def _entry(name, factory, description, input_shape=(1, 3, 224, 224), populate_shape=(8, 3, 64, 64)):
    return ZooEntry(name, factory, input_shape, populate_shape, description)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        _entry("resnet18-iternorm", lambda: resnet18("iternorm"), "ResNet-18, IterNorm (group 64, T=5) everywhere"),
        _entry("resnet18-bn", lambda: resnet18("bn"), "ResNet-18, BatchNorm2d"),
        _entry("resnet18-center", lambda: resnet18("center"), "ResNet-18, mean-only Centering"),
    )
}

DEFAULT = "resnet18-iternorm"


def build(name: str, *, seed: int = 0) -> nn.Module:
    """The named model, deterministic for a seed, statistics populated, in eval mode."""
    try:
        entry = ZOO[name]
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}") from None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = entry.factory()
    return populate(model, entry.populate_shape, seed=seed).eval()
