"""Shapes of every node of a traced graph, from example arguments.

Fake tensors first (no compute), with every norm layer the identity on shapes
(its fake batch_norm decomposition would dominate the cost of the whole pass);
a real run when fake propagation fails.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils._pytree import tree_leaves, tree_map_only

from ..._messages import root_cause
from ..._quiet import quiet
from ...nn.affine import is_norm
from ..errors import FoldError
from .trace import describe


@quiet()   # torch's ShapeProp prints a traceback of its own; the FoldError carries the message
def propagate_shapes(gm: fx.GraphModule, args: tuple[Any, ...]) -> None:
    """Fill ``node.meta`` with shapes; FoldError naming the inputs when the module rejects them."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    try:
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        _shape_only_class()(gm, mode).propagate(*tree_map_only(torch.Tensor, mode.from_tensor, args))
        return
    except Exception:
        for node in gm.graph.nodes:
            node.meta.pop("val", None)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*args)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in tree_leaves(args) if isinstance(t, torch.Tensor))
        raise FoldError(f"{type(gm).__name__} rejects example inputs of shape {shapes}: {describe(root_cause(exc))}") from exc


def _shape_only_class():
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    class ShapeOnly(FakeTensorProp):
        def call_module(self, target, args, kwargs):
            if is_norm(self.fetch_attr(target)) and len(args) == 1 and not kwargs:
                return args[0]
            return super().call_module(target, args, kwargs)

    return ShapeOnly
