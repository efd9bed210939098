"""Two rewrites that fold no norm but that every peer makes: without them the fold would leave
more nodes than onnxsim, onnxslim or onnxruntime do. Both hold for every input the model accepts:
they read the shapes the model declares, never the caller's ``input_shapes``.

* ``Identity`` goes: its readers read its input. One that writes a graph output hands that name
  to its input, when the input is the output of a node (not a graph input, a stored tensor or
  another graph output).
* A ``Reshape`` whose target is computed from shapes, as exporters write a flatten (paddle2onnx:
  ``Shape -> Cast -> Slice -> Cast -> Concat``), gets a stored target when every element of the
  computed one is a number for every input, or the reshaped tensor's own dim at the same index,
  which a target writes as 0 ("copy the input's dim"). ``[N, 200]`` computed from an
  ``(N, 200, 1, 1)`` tensor becomes ``[0, 200]``: right at every batch size, because it names the
  dim, not its value at one batch. The computation, now unread, is swept with the fold's leftovers.

A computed target is followed through ``Shape``, ``Cast`` to an integer type, ``Slice`` (step 1
on the one axis), ``Gather`` (axis 0), ``Squeeze``/``Unsqueeze`` of one element, ``Concat`` and
``Identity``, and stored integers; any other op leaves the Reshape as it is.

Names keep their meaning (the contract of ``api``): a removed Identity's output name goes, or
passes to the tensor with the same values; the new target is a fresh name.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir

from .graph import attr, constant, is_constant, is_onnx, label
from .shapes import Shapes

Element = int | tuple  # a number, or ("dim", tensor, index): that dim of that tensor, whatever it is
INTEGER_CASTS = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)


def drop_identities(graph: ir.Graph) -> None:
    for node in list(graph):
        if not is_onnx(node, "Identity") or len(node.inputs) != 1 or node.inputs[0] is None:
            continue
        source, out = node.inputs[0], node.outputs[0]
        if out.is_graph_output():
            if (source.producer() is None or source.is_graph_output() or source.is_graph_input()
                    or source.is_initializer()):
                continue
            name, kind, shape = out.name, out.type, out.shape
            out.replace_all_uses_with(source, replace_graph_outputs=True)
            graph.remove(node, safe=True)
            source.name = name
            source.type, source.shape = source.type or kind, source.shape or shape
        else:
            out.replace_all_uses_with(source)
            graph.remove(node, safe=True)


def constant_reshapes(graph: ir.Graph, declared: Callable[[], Shapes], fresh: Callable[[str], str]) -> None:
    """Give each Reshape whose computed target is the same at every input that target, stored."""
    computed = [n for n in graph if is_onnx(n, "Reshape") and len(n.inputs) == 2 and n.inputs[1] is not None
                and not is_constant(n.inputs[1])]
    if not computed:
        return
    shapes, memo = declared(), {}
    for node in computed:
        got = _elements(node.inputs[1], shapes, memo)
        if got is None or got[1]:
            continue
        target = _stored_target(got[0], node.inputs[0], attr(node, "allowzero", 0))
        if target is None:
            continue
        name = fresh(f"{label(node)}_shape")
        value = ir.Value(name=name, const_value=ir.Tensor(np.array(target, dtype=np.int64), name=name))
        graph.register_initializer(value)
        node.replace_input_with(1, value)


def _stored_target(elements: list[Element], data: ir.Value, allowzero: int) -> list[int] | None:
    target = []
    for i, e in enumerate(elements):
        if isinstance(e, int):
            target.append(e)  # a number for every input (a 0 keeps its meaning: allowzero is unchanged)
        elif e[1] is data and e[2] == i and not allowzero:
            target.append(0)
        else:
            return None
    return target


def _elements(value: ir.Value, shapes: Shapes, memo: dict) -> tuple[list[Element], bool] | None:
    """(the elements, whether it is a scalar) of an integer tensor of rank <= 1; None when unknown."""
    if value in memo:
        return memo[value]
    memo[value] = None
    k = constant(value)
    if k is not None:
        got = ([int(v) for v in k.reshape(-1)], k.ndim == 0) if k.dtype.kind in "iu" and k.ndim <= 1 else None
    else:
        node = value.producer()
        got = _through(node, shapes, memo) if node is not None and node.domain in ("", "ai.onnx") else None
    memo[value] = got
    return got


def _through(node: ir.Node, shapes: Shapes, memo: dict) -> tuple[list[Element], bool] | None:
    op = node.op_type
    if op == "Shape":
        dims = shapes.of(node.inputs[0].name)
        if dims is None:
            return None
        every = [d if isinstance(d, int) else ("dim", node.inputs[0], i) for i, d in enumerate(dims)]
        return every[attr(node, "start", 0):attr(node, "end", None)], False  # ONNX clamps as Python slices do
    args = [None if v is None else _elements(v, shapes, memo) for v in node.inputs]
    if not args or args[0] is None:
        return None
    first, scalar = args[0]
    if op == "Identity" or (op == "Cast" and attr(node, "to", None) in INTEGER_CASTS):
        return first, scalar
    if op == "Unsqueeze" and scalar:
        return first, False
    if op == "Squeeze" and not scalar and len(first) == 1:
        return first, True
    if op == "Concat" and attr(node, "axis", 0) in (0, -1) and all(a is not None and not a[1] for a in args):
        return [e for a in args for e in a[0]], False
    if op == "Gather" and attr(node, "axis", 0) == 0 and not scalar and len(args) == 2 and args[1] is not None:
        picked, one = args[1]
        if all(isinstance(i, int) and -len(first) <= i < len(first) for i in picked):
            return [first[i] for i in picked], one
    if op == "Slice" and not scalar:
        bounds = _slice(node, args)
        if bounds is not None:
            return first[bounds[0]:bounds[1]], False
    return None


def _slice(node: ir.Node, args) -> tuple[int, int] | None:
    """(start, end) of a Slice along the only axis with step 1 (ONNX clamps as Python does for step 1)."""
    if len(node.inputs) == 1:  # Slice-1: attributes
        starts, ends, axes, steps = attr(node, "starts", None), attr(node, "ends", None), attr(node, "axes", None), None
    else:
        given = []
        for i in range(1, 5):
            if i >= len(node.inputs) or node.inputs[i] is None:
                given.append(None)  # absent: the default
            elif args[i] is None or not all(isinstance(e, int) for e in args[i][0]):
                return None  # computed, or not numbers
            else:
                given.append(args[i][0])
        starts, ends, axes, steps = given
    if starts is None or ends is None or len(starts) != 1 or len(ends) != 1:
        return None
    if (axes is not None and list(axes) not in ([0], [-1])) or (steps is not None and list(steps) != [1]):
        return None
    return int(starts[0]), int(ends[0])
