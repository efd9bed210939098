"""Shapes of every node of a traced graph, from example arguments.

Fake tensors first (no compute), with every norm layer the identity on shapes
(its fake batch_norm decomposition would dominate the cost of the whole pass);
a real run when fake propagation fails. Either run leaves the modules'
attributes as it found them (a forward that caches would keep fake tensors).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

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
        with _attributes_kept(gm):
            _shape_only_class()(gm, mode).propagate(*tree_map_only(torch.Tensor, mode.from_tensor, args))
        return
    except Exception:
        for node in gm.graph.nodes:
            node.meta.pop("val", None)
    try:
        with torch.no_grad(), _attributes_kept(gm):
            ShapeProp(gm).propagate(*args)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in tree_leaves(args) if isinstance(t, torch.Tensor))
        raise FoldError(f"{type(gm).__name__} rejects example inputs of shape {shapes}: {describe(root_cause(exc))}") from exc


@contextlib.contextmanager
def _attributes_kept(gm: fx.GraphModule) -> Iterator[None]:
    """Every submodule's plain attributes as they were before the block.

    A forward may cache what it computes (Ultralytics' heads keep ``self.anchors``
    and ``self.shapes``); run on fake tensors, it would leave fake tensors in the
    folded model, which then returns them instead of computing (or fails). Parameters,
    buffers and submodules are not plain attributes and are not touched.
    """
    saved = [(m, dict(vars(m))) for m in gm.modules()]
    try:
        yield
    finally:
        for m, before in saved:
            for key in [k for k in vars(m) if k not in before]:
                delattr(m, key)
            for key, value in before.items():
                if vars(m).get(key, _MISSING) is not value:
                    object.__setattr__(m, key, value)


_MISSING = object()


def _shape_only_class():
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    class ShapeOnly(FakeTensorProp):
        def call_module(self, target, args, kwargs):
            if is_norm(self.fetch_attr(target)) and len(args) == 1 and not kwargs:
                return args[0]
            return super().call_module(target, args, kwargs)

    return ShapeOnly
