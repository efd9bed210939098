"""What an ONNX fold rule sees and returns.

A rule has the op types it matches and a ``rewrite`` that returns the layer's
new float64 weights or *why not* (a string): its checks come first in it, so
what they compute (the map on the layer's channels, the groups to use, the
shift nu) is computed once. Rules never touch the graph: the pass
(``fold.py``) finds sites, calls the rule, casts the result once to the
layer's dtype and does the surgery.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import onnx_ir as ir
import torch

from ...algebra import ChannelMap, from_groups, to_groups
from ...grouping import conv_macs, groups_for
from ..graph import attr, is_onnx
from ..maps import AxisMap
from ..shapes import Shapes


@dataclass(frozen=True)
class Layer:
    """A Conv/ConvTranspose/Gemm/MatMul node and what the rules read of it."""

    node: ir.Node
    name: str
    weight: torch.Tensor              # float64, in the node's layout
    bias: torch.Tensor | None         # float64: Conv/ConvTranspose B, Gemm C; None when absent
    shapes: Shapes
    backward: bool                    # the map acts on the output (else on the data input)

    def attr(self, name: str, default):
        return attr(self.node, name, default)

    @property
    def in_shape(self) -> tuple | None:
        """The data input's shape (read when asked: most folds need only one side)."""
        return self.shapes.of(self.node.inputs[0].name)

    @property
    def out_shape(self) -> tuple | None:
        return self.shapes.of(self.node.outputs[0].name)

    @property
    def shape(self) -> tuple | None:
        """The tensor the map acts on: the layer's output (backward) or data input (forward)."""
        return self.out_shape if self.backward else self.in_shape

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


@dataclass(frozen=True)
class Site:
    """A layer next to a chain of norm-like sites whose composed map is ``map``."""

    layer: Layer
    map: AxisMap
    densify: bool = False


@dataclass(frozen=True)
class Rewrite:
    weight: torch.Tensor                                   # float64, the node's layout
    bias: torch.Tensor | None                              # float64, the node's bias input; None: none
    attributes: dict[str, int | float] = field(default_factory=dict)   # to set on the node
    bias_after: torch.Tensor | None = None                 # MatMul: added after the layer (M,)
    shift: torch.Tensor | None = None                      # forward, zero padding: x - nu first (per channel)
    note: str = ""


@dataclass(frozen=True)
class Rule:
    name: str
    direction: str                     # "backward" (layer -> norm) or "forward" (norm -> layer)
    op_types: tuple[str, ...]
    rewrite: Callable[[Site], "Rewrite | str"]

    def matches(self, node: ir.Node) -> bool:
        return is_onnx(node, *self.op_types)


def axis_reason(site: Site, axis: int, features: str) -> str | None:
    """Why the map's axis is not the layer's feature ``axis`` (negative: from the end), or None."""
    if site.map.scalar or (axis >= 0 and site.map.axis == axis):
        return None
    rank = site.layer.rank
    if rank is None:
        return f"the rank of the tensor between the norm and {site.layer.name} is unknown, so the norm's axis cannot be checked"
    if site.map.axis == axis % rank:
        return None
    shape = list(site.layer.shape)
    return (f"the norm acts on {site.map.describe_axis(shape)} of the {shape} tensor, but the {features} of "
            f"{site.layer.name} ({site.layer.node.op_type}) are axis {axis % rank}")


def channel_map(site: Site, channels: int, what: str) -> ChannelMap | str:
    m = site.map.on(channels)
    if m is None:
        return f"the norm has {site.map.map.channels} channels but {site.layer.name} has {channels} {what}"
    return m


def feature_map(site: Site, axis: int, channels: int, what: str) -> ChannelMap | str:
    """The map on the layer's feature ``axis`` (``channels`` of them), or why the norm does not act there."""
    return axis_reason(site, axis, what) or channel_map(site, channels, what)


def fold_matrix(fold: Callable, w: torch.Tensor, bias: torch.Tensor | None, m: ChannelMap) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') for a plain (M, K) weight matrix, one group: ``fold`` is ``algebra.fold_backward``
    (the map acts on W's rows, the outputs) or ``algebra.fold_forward`` (its columns, the inputs)."""
    k, b = fold(to_groups(w, 1, transposed=False), bias, m)
    return from_groups(k, transposed=False, linear=True), b


def grouping(site: Site, m: ChannelMap, side: str) -> tuple[int, str | None]:
    """(groups to use, why not) for a Conv/ConvTranspose: a map that mixes channels across the
    layer's groups needs fewer (``grouping.groups_for``, whose refusal names the MACs per sample)."""
    layer = site.layer
    w, groups = layer.weight, layer.attr("group", 1)
    transposed = layer.node.op_type == "ConvTranspose"   # weight (I, O/G, *k), else (O, I/G, *k)
    in_channels, out_channels = (w.shape[0], w.shape[1] * groups) if transposed else (w.shape[1] * groups, w.shape[0])
    return groups_for(m, groups, layer.name, side, site.densify,
                      lambda g: conv_macs(g, transposed, layer.in_shape, layer.out_shape, in_channels, out_channels,
                                          math.prod(w.shape[2:])))
