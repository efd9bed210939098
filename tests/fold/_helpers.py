"""Helpers shared by the fold tests: a quiet fold, its outcome per norm, a user's layer, a scoped registration."""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
from torch import nn

import normfold


def fold_quietly(model, x, **kw):
    """normfold.fold without its warnings (the report holds them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return normfold.fold(model, x, **kw)


def outcome(report) -> dict[str, tuple[str, str]]:
    """norm -> ("folded", into) or ("skipped", reason)."""
    return {f.norm: ("folded", f.into) for f in report.folded} | {s.norm: ("skipped", s.reason) for s in report.skipped}


class ChannelAffine(nn.Module):
    """A user's own per-channel layer, not a normfold layer: foldable only through register_norm."""

    def __init__(self, c):
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.randn(c))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


@contextmanager
def registered(register, registry: dict, key, fn):
    """``register(key, fn)`` for the duration of a block, then the entry is removed from ``registry``."""
    register(key, fn)
    try:
        yield
    finally:
        registry.pop(key)
