"""The frozen channel map of a normalization layer, and the registry of adapters.

Every foldable norm, in eval mode, is one affine map over the channel axis:

    y[n, :, *] = A @ x[n, :, *] + c        A: (C, C), or (C,) when diagonal; c: (C,)

``inference_affine(module)`` returns (A, c) in float64. A layer provides it by a
``inference_affine()`` method (normfold's layers do) or through an adapter
registered with :func:`register_norm` (torch's batch norms are registered
below). An adapter is keyed by a class, or by a dotted class name for packages
normfold does not import (torchvision's and detectron2's FrozenBatchNorm2d);
either way it is an explicit entry, matched along the module's class
hierarchy. The fold pass knows only this map, never the layer type, and it
trusts no map on the word of a class: before folding, it checks the map
against the module's own eval forward in float64 (``fold/torch/probe.py``).

A norm followed by parts of its own (timm's ``BatchNormAct2d``: batch norm,
then dropout, then an activation) is a *composite* (see ``composite.py``): it
has no map of its own, and the fold pass splits it first.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._registry import key_label, lookup
from .composite import is_composite

AffineMap = tuple[torch.Tensor, torch.Tensor]


class NotFoldableError(TypeError):
    """The module is a normalization layer, but it has no frozen channel map."""


_ADAPTERS: dict[type | str, Callable[[nn.Module], AffineMap]] = {}

# Norms recognised as such but never foldable, with the reason; a class or its
# dotted name (packages normfold does not import), matched along the MRO.
_PER_SAMPLE: dict[type | str, str] = {
    nn.LayerNorm: "LayerNorm normalizes with statistics of each sample",
    nn.GroupNorm: "GroupNorm normalizes with statistics of each sample",
    nn.RMSNorm: "RMSNorm normalizes with statistics of each sample",
    nn.LocalResponseNorm: "LocalResponseNorm normalizes with statistics of each sample (its channel neighbours)",
}
for _name in ("RmsNorm", "RmsNorm2d", "SimpleNorm", "SimpleNorm2d"):
    _PER_SAMPLE[f"timm.layers.norm.{_name}"] = f"{_name} normalizes with statistics of each sample"
for _name in ("RmsNormAct", "RmsNormActFp32", "RmsNormAct2d", "RmsNormAct2dFp32"):
    _PER_SAMPLE[f"timm.layers.norm_act.{_name}"] = f"{_name} normalizes with statistics of each sample"
for _name in ("EvoNorm2dB0", "EvoNorm2dB1", "EvoNorm2dB2", "EvoNorm2dS0", "EvoNorm2dS0a", "EvoNorm2dS1",
              "EvoNorm2dS1a", "EvoNorm2dS2", "EvoNorm2dS2a"):
    _PER_SAMPLE[f"timm.layers.evo_norm.{_name}"] = (
        f"{_name} divides by a statistic of each sample (or of the input itself): not an affine map")
for _name in ("FilterResponseNormAct2d", "FilterResponseNormTlu2d"):
    _PER_SAMPLE[f"timm.layers.filter_response_norm.{_name}"] = (
        f"{_name} normalizes with statistics of each sample")


def register_norm(module_type: type | str, fn: Callable[[nn.Module], AffineMap]) -> None:
    """Make ``module_type`` foldable: ``fn(module)`` returns its float64 (A, c).

    ``module_type`` is an nn.Module subclass, or its dotted name
    ("package.module.ClassName") when importing the package is not wanted.
    Subclasses are covered too (the nearest registered base class wins).
    """
    label = key_label(module_type, "register_norm")
    if not callable(fn):
        raise TypeError(f"register_norm: adapter for {label} is not callable")
    _ADAPTERS[module_type] = fn


def _adapter_for(module: nn.Module) -> Callable[[nn.Module], AffineMap] | None:
    found = lookup(_ADAPTERS, module)
    return None if found is None else found[1]


def map_source(module: nn.Module) -> str:
    """Where ``inference_affine(module)`` takes its map from, for messages."""
    if callable(getattr(module, "inference_affine", None)):
        return "its inference_affine()"
    found = lookup(_ADAPTERS, module)
    if found is None:
        return "no map"
    key, fn = found
    label = key if isinstance(key, str) else key.__name__
    return f"its {_MAP_NAMES[fn]} map" if fn in _MAP_NAMES else f"the map of the adapter registered for {label}"


def not_foldable_reason(module: nn.Module) -> str | None:
    """Why a recognised norm layer has no frozen map, or None."""
    found = lookup(_PER_SAMPLE, module)
    if found is not None:
        own = type(module).__name__
        base = (found[0] if isinstance(found[0], str) else found[0].__name__).rpartition(".")[2]
        return found[1] if base == own else f"{found[1]} ({own} is a {base})"
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
        or is_composite(module)
    )


def inference_affine(module: nn.Module) -> AffineMap:
    """(A, c) in float64 such that ``module.eval()(x) == A x + c`` over the channel axis.

    Raises NotFoldableError (a TypeError) for a norm whose map depends on each
    sample or that is a composite (a norm followed by parts of its own: its
    forward is no channel map; ``normfold.fold`` splits it), and TypeError
    naming the type for anything that is not a norm. The map is what the class
    claims; ``normfold.fold`` checks it against the module's forward.
    """
    reason = not_foldable_reason(module)
    if reason is not None:
        raise NotFoldableError(f"{type(module).__name__} is not foldable: {reason}")
    if is_composite(module):
        raise NotFoldableError(
            f"{type(module).__name__} is a norm followed by parts of its own (a composite): its forward is "
            "not a channel map; normfold.fold splits it and folds the norm")
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

# What the built-in adapters' maps are called in messages.
_MAP_NAMES = {_batchnorm_affine: "batch-norm"}


# Frozen batch norms of detection backbones keep BN's statistics as plain buffers;
# registered by name: normfold imports neither package.
for _name in ("torchvision.ops.misc.FrozenBatchNorm2d", "detectron2.layers.batch_norm.FrozenBatchNorm2d"):
    register_norm(_name, _batchnorm_affine)
