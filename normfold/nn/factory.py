"""``create_norm(name, num_features, **kw)``: one string per normalization layer.

The model zoo and user code pick a norm by name, as timm's ``get_norm_layer``
does. Unknown names raise a ValueError listing the valid ones.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .centering import Centering
from .iternorm import IterNorm


def _batchnorm(num_features: int, **kw) -> nn.Module:
    return nn.BatchNorm2d(num_features, **kw)


NORMS: dict[str, Callable[..., nn.Module]] = {
    "bn": _batchnorm,
    "center": Centering,
    "iternorm": IterNorm,
}


def create_norm(name: str, num_features: int, **kw) -> nn.Module:
    try:
        factory = NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(sorted(NORMS))}") from None
    return factory(num_features, **kw)
