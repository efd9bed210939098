"""A channel map placed on one axis of a tensor: what a site computes, as the ONNX pass sees it.

In a torch module a norm acts on axis 1 by construction. In an ONNX graph the
axis is a fact about shapes: ``Mul(x, k)`` with ``k`` of shape ``(C, 1, 1)``
scales axis 1 of an ``(N, C, H, W)`` tensor, ``k`` of shape ``(C,)`` scales
axis 3 (broadcasting aligns the *last* dims), and a one-element ``k`` scales
every axis alike. The rules compare this axis with the layer's feature axis
(axis 1 for Conv and Gemm, the last axis for MatMul) and fold only when they
are the same.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..algebra import ChannelMap, broadcast


@dataclass(frozen=True)
class AxisMap:
    """``y = A x + c`` along ``axis`` (non-negative); ``axis`` None: a scalar map, the same on every axis."""

    map: ChannelMap
    axis: int | None

    @property
    def scalar(self) -> bool:
        return self.axis is None

    def then(self, after: "AxisMap") -> "AxisMap | None":
        """The map ``after(self(x))``; None when the two act on different axes."""
        if None not in (self.axis, after.axis) and self.axis != after.axis:
            return None
        n = max(self.map.channels, after.map.channels)
        first, second = broadcast(self.map, n), broadcast(after.map, n)
        if first.channels != second.channels:
            return None
        return AxisMap(first.then(second), self.axis if self.axis is not None else after.axis)

    def on(self, channels: int) -> ChannelMap | None:
        """The map on a layer with ``channels`` features; None when the counts differ."""
        m = broadcast(self.map, channels)
        return m if m.channels == channels else None

    def describe_axis(self, shape) -> str:
        if self.axis is None:
            return "every axis (a scalar)"
        size = shape[self.axis] if shape is not None and self.axis < len(shape) else "?"
        last = " (the last)" if shape is not None and self.axis == len(shape) - 1 else ""
        return f"axis {self.axis}{last} of size {size}"
