"""What a fold rule sees and returns.

A rule has three parts, as in onnxscript's rewriter: the layer types it
matches, a ``check`` that returns *why not* (a string) or None, and a
``rewrite`` that returns the new layer (or, if the folded values do not fit the
layer's dtype, the reason). Rules never touch the graph: the pass in
``graph.py`` finds sites, calls the rule and does the surgery.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ...algebra import ChannelMap, cast, from_groups, to_groups
from ...grouping import conv_macs, groups_for


@dataclass(frozen=True)
class Site:
    """A layer next to a (chain of) norm(s) whose composed map is ``map``."""

    name: str                          # module path of the layer
    module: nn.Module
    map: ChannelMap
    in_shape: tuple[int, ...] | None   # the layer's input, as traced
    out_shape: tuple[int, ...] | None  # the layer's output, as traced
    densify: bool = False
    # (C, T): the norm gives element i of the layer's output (backward) / input
    # (forward) channel (i // T) % C of the map, i its flat (row-major) index.
    # A norm on (N, C, *S) seen directly has (C, prod(S)); reshapes between
    # the layer and the norm keep the flat order, so they keep (C, T).
    layout: tuple[int, int] | None = None
    # the layer pads its input with zeros before its conv (a subclass checked to, ``layer_check.py``):
    # a forward fold takes the input shift, as for zero padding of the conv's own
    pads_inside: bool = False


@dataclass(frozen=True)
class Rewrite:
    module: nn.Module
    shift: torch.Tensor | None = None  # forward folds only: subtract from the input first (float64)
    note: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    direction: str                     # "backward" (layer -> norm) or "forward" (norm -> layer)
    types: tuple[type, ...]            # base types; a subclass's fold is checked (``layer_check.py``)
    check: Callable[[Site], str | None]
    rewrite: Callable[[Site], "Rewrite | str"]

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, self.types)


CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LAYERS = (*CONVS, *CONV_TRANSPOSES, nn.Linear)


def is_subclass(module: nn.Module) -> bool:
    """A layer type the rules know only by a base class: its forward may differ (``layer_check.py``)."""
    return isinstance(module, LAYERS) and type(module) not in LAYERS


def grouped_weight(module: nn.Module) -> tuple[torch.Tensor, int, bool]:
    """(K[g, o, i, *k] in float64, groups, transposed) of a Conv, ConvTranspose or Linear."""
    transposed = isinstance(module, CONV_TRANSPOSES)
    groups = getattr(module, "groups", 1)
    return to_groups(module.weight, groups, transposed), groups, transposed


def rebuilt(module: nn.Module, k: torch.Tensor, bias: torch.Tensor, groups: int | None = None) -> nn.Module | str:
    """A copy of ``module`` with weight from ``k``, this bias, and ``groups``; cast once.

    Returns the reason instead when the values do not fit the layer's dtype.
    """
    dtype = module.weight.dtype
    weight, why = cast(from_groups(k, isinstance(module, CONV_TRANSPOSES), linear=isinstance(module, nn.Linear)), dtype)
    if why is None:
        bias, why = cast(bias, dtype)
    if why is not None:
        return why
    new = copy.copy(module)  # shallow: the weight and bias are replaced, nothing else is mutable state
    new._parameters, new._buffers, new._modules = dict(module._parameters), dict(module._buffers), dict(module._modules)
    grad = module.weight.requires_grad
    new.weight = nn.Parameter(weight.to(module.weight.device), requires_grad=grad)
    new.bias = nn.Parameter(bias.to(module.weight.device), requires_grad=grad)
    if groups is not None:
        new.groups = groups
    return new


def macs_per_sample(module: nn.Module, groups: int, in_shape, out_shape) -> int | None:
    """Multiply-accumulates of one sample through a conv with ``groups`` groups."""
    return conv_macs(groups, isinstance(module, CONV_TRANSPOSES), in_shape, out_shape, module.in_channels,
                     module.out_channels, math.prod(module.kernel_size))


def densify_reason(site: Site, side: str) -> tuple[int, str | None]:
    """(groups to use, why not) when the map must stay within the layer's groups (``grouping.groups_for``).

    ``side`` names the channels the map acts on ("output"/"input").
    """
    return groups_for(site.map, getattr(site.module, "groups", 1), site.name, side, site.densify,
                      lambda g: macs_per_sample(site.module, g, site.in_shape, site.out_shape))


def channel_mismatch(site: Site, channels: int, what: str) -> str | None:
    if site.map.channels != channels:
        return f"the norm has {site.map.channels} channels but {site.name} has {channels} {what}"
    return None


def layout_reason(site: Site, shape, axis: int, side: str) -> str | None:
    """Whether the layer's channel axis is the norm's: the same size C and the same T after it.

    Element i of a tensor of ``shape`` is in channel ``(i // T) % C`` of ``axis``
    with T the product of the dims after it: the norm's channel for every
    element exactly when (C, T) equals ``site.layout``. A Linear acts on the
    last axis (T = 1), a norm on axis 1: seen directly, the same axis only at rank 2.
    """
    if shape is None or site.layout is None:
        return f"the {side} shape of {site.name} is unknown, so the norm's axis cannot be checked"
    axis = axis % len(shape)
    if (shape[axis], math.prod(shape[axis + 1:])) == site.layout:
        return None
    if isinstance(site.module, nn.Linear):
        return (f"{site.name} (Linear) has {side} shape {tuple(shape)}: its features are the last axis, "
                "but the norm normalizes another axis")
    channels, after = site.layout
    return (f"{site.name} has {side} shape {tuple(shape)} with its channels on axis {axis}, but the norm sees "
            f"{channels} channels with {after} values after each: the reshape between them moves the channel axis")
