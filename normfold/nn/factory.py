"""``create_norm(name, num_features, **kw)``: one string per normalization layer.

The model zoo and user code pick a norm by name, as timm's ``get_norm_layer``
does; ``**kw`` goes to the layer's constructor. Unknown names raise a
ValueError listing the valid ones.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .batchrenorm import BatchRenorm
from .centering import Centering
from .iternorm import IterNorm
from .layernorm import LayerNorm2d
from .scaling import Scaling
from .whitening import CholeskyWhitening, Decorrelating, PCAWhitening, ZCAWhitening


def _batchnorm(num_features: int, **kw) -> nn.Module:
    return nn.BatchNorm2d(num_features, **kw)


def group_count(num_features: int, max_groups: int = 32) -> int:
    """The largest divisor of C that is at most ``max_groups``."""
    return max(g for g in range(1, min(max_groups, num_features) + 1) if num_features % g == 0)


def _groupnorm(num_features: int, num_groups: int | None = None, **kw) -> nn.Module:
    return nn.GroupNorm(num_groups or group_count(num_features), num_features, **kw)


def _instancenorm(num_features: int, **kw) -> nn.Module:
    kw.setdefault("affine", True)
    return nn.InstanceNorm2d(num_features, **kw)


NORMS: dict[str, Callable[..., nn.Module]] = {
    "bn": _batchnorm,
    "center": Centering,
    "scale": Scaling,
    "brn": BatchRenorm,
    "decorr": Decorrelating,
    "pca": PCAWhitening,
    "zca": ZCAWhitening,
    "cholesky": CholeskyWhitening,
    "iternorm": IterNorm,
    "gn": _groupnorm,
    "ln": LayerNorm2d,
    "in": _instancenorm,
}


def create_norm(name: str, num_features: int, **kw) -> nn.Module:
    try:
        factory = NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; valid names: {', '.join(sorted(NORMS))}") from None
    return factory(num_features, **kw)
