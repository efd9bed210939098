"""The frozen channel map of a normalization layer, and the registry of adapters.

Every foldable norm, in eval mode, is one affine map over the channel axis:

    y[n, :, *] = A @ x[n, :, *] + c        A: (C, C), or (C,) when diagonal; c: (C,)

``inference_affine(module)`` returns (A, c) in float64. A layer provides it by a
``inference_affine()`` method (normfold's layers do) or through an adapter
registered with :func:`register_norm` (torch's batch norms are registered
below). An adapter is keyed by a class, or by a dotted class name for packages
normfold does not import (torchvision's and detectron2's FrozenBatchNorm2d);
either way it is an explicit entry, matched along the module's class
hierarchy. The fold pass knows only this map, never the layer type.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

AffineMap = tuple[torch.Tensor, torch.Tensor]


class NotFoldableError(TypeError):
    """The module is a normalization layer, but it has no frozen channel map."""


_ADAPTERS: dict[type | str, Callable[[nn.Module], AffineMap]] = {}

# Norms recognised as such but never foldable, with the reason.
_PER_SAMPLE = {
    nn.LayerNorm: "LayerNorm normalizes with statistics of each sample",
    nn.GroupNorm: "GroupNorm normalizes with statistics of each sample",
}


def register_norm(module_type: type | str, fn: Callable[[nn.Module], AffineMap]) -> None:
    """Make ``module_type`` foldable: ``fn(module)`` returns its float64 (A, c).

    ``module_type`` is an nn.Module subclass, or its dotted name
    ("package.module.ClassName") when importing the package is not wanted.
    Subclasses are covered too (the nearest registered base class wins).
    """
    if isinstance(module_type, str):
        if "." not in module_type:
            raise TypeError(f"register_norm: {module_type!r} is not a dotted class name (package.module.Class)")
        label = module_type
    elif isinstance(module_type, type) and issubclass(module_type, nn.Module):
        label = module_type.__name__
    else:
        raise TypeError(f"register_norm: expected an nn.Module subclass or its dotted name, got {module_type!r}")
    if not callable(fn):
        raise TypeError(f"register_norm: adapter for {label} is not callable")
    _ADAPTERS[module_type] = fn


def _adapter_for(module: nn.Module) -> Callable[[nn.Module], AffineMap] | None:
    for cls in type(module).__mro__:
        for key in (cls, f"{cls.__module__}.{cls.__qualname__}"):
            if key in _ADAPTERS:
                return _ADAPTERS[key]
    return None


def not_foldable_reason(module: nn.Module) -> str | None:
    """Why a recognised norm layer has no frozen map, or None."""
    for cls, reason in _PER_SAMPLE.items():
        if isinstance(module, cls):
            return reason
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
        return f"{type(module).__name__} without running statistics normalizes each sample"
    if isinstance(module, nn.modules.batchnorm._NormBase) and not module.track_running_stats:
        return (
            f"{type(module).__name__}(track_running_stats=False) has no running statistics: "
            "it always normalizes with batch statistics, so nothing is frozen"
        )
    return None


def is_norm(module: nn.Module) -> bool:
    """True for every layer the fold pass should account for (folded or not)."""
    return (
        callable(getattr(module, "inference_affine", None))
        or _adapter_for(module) is not None
        or not_foldable_reason(module) is not None
    )


def inference_affine(module: nn.Module) -> AffineMap:
    """(A, c) in float64 such that ``module.eval()(x) == A x + c`` over the channel axis.

    Raises NotFoldableError (a TypeError) for a norm whose map depends on each
    sample, and TypeError naming the type for anything that is not a norm.
    """
    reason = not_foldable_reason(module)
    if reason is not None:
        raise NotFoldableError(f"{type(module).__name__} is not foldable: {reason}")
    method = getattr(module, "inference_affine", None)
    if callable(method):
        return method()
    adapter = _adapter_for(module)
    if adapter is None:
        raise TypeError(
            f"{type(module).__name__} has no frozen channel map: give it an "
            "inference_affine() method or register an adapter with normfold.register_norm"
        )
    return adapter(module)


@torch.no_grad()
def diagonal_affine(
    running_var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    running_mean: torch.Tensor | None = None,
) -> AffineMap:
    """A = gamma / sqrt(var + eps) (diagonal), c = beta - A mu (mu = 0 when not centering)."""
    a = (running_var.double() + eps).rsqrt()
    if weight is not None:
        a = a * weight.double()
    c = torch.zeros_like(a) if running_mean is None else -a * running_mean.double()
    if bias is not None:
        c = c + bias.double()
    return a, c


def _batchnorm_affine(bn: nn.Module) -> AffineMap:
    """A = gamma / sqrt(var + eps) (diagonal), c = beta - A mu.

    Any module with BN's attributes: running_mean, running_var, eps, weight, bias.
    """
    return diagonal_affine(bn.running_var, bn.eps, bn.weight, bn.bias, bn.running_mean)


# torch's BatchNorm1d/2d/3d, SyncBatchNorm, LazyBatchNorm* and InstanceNorm with
# running statistics all derive from _NormBase and share the eval formula.
register_norm(nn.modules.batchnorm._NormBase, _batchnorm_affine)


# Frozen batch norms of detection backbones keep BN's statistics as plain buffers;
# registered by name: normfold imports neither package.
for _name in ("torchvision.ops.misc.FrozenBatchNorm2d", "detectron2.layers.batch_norm.FrozenBatchNorm2d"):
    register_norm(_name, _batchnorm_affine)
