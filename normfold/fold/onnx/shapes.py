"""Static shapes of every tensor, as the pass needs them to prove a site.

ONNX shape inference runs on a skeleton of the model (its nodes, small
constants, and the types of large ones: shape inference needs the values of
shape-like constants only) with the graph inputs' symbolic dims fixed:

* by ``input_shapes`` where the caller gave them;
* a symbolic leading dim (the batch) of an input not given is analysed twice,
  at batch 1 and batch 2. A site must hold at both: a map that reads across
  the batch, or a reshape that only works at one batch size, shows up as a
  difference between the two.

Any other symbolic dim stays unknown; a site that needs it is a FoldError
naming the input (see :meth:`Shapes.require`). The model itself keeps its
declared inputs: these shapes are only the pass's evidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import onnx
import torch

from ..errors import FoldError

FLOAT_TYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.FLOAT16: torch.float16,
               onnx.TensorProto.DOUBLE: torch.float64}

Dims = tuple  # of int | None (None: unknown)
SMALL = 64    # constants up to this many elements are kept as values (shape inference reads them)


@dataclass(frozen=True)
class Shapes:
    """Tensor name -> shape, once per analysed batch size (``batches``; ``(None,)`` when static)."""

    runs: tuple[dict[str, Dims], ...]
    batches: tuple[int | None, ...]
    symbolic: dict[str, tuple[str, ...]] = field(default_factory=dict)  # input -> its unknown non-batch dims
    label: str = "the model"
    types: dict[str, int] = field(default_factory=dict)  # tensor name -> onnx.TensorProto element type

    def float_dtype(self, name: str) -> torch.dtype | None:
        """The torch dtype of a float16/32/64 tensor; None for any other or an unknown type."""
        return FLOAT_TYPES.get(self.types.get(name))

    def of(self, name: str) -> Dims | None:
        """The shape at the first analysed batch (None when even the rank is unknown)."""
        return self.runs[0].get(name)

    def every(self, name: str) -> list[Dims | None]:
        return [run.get(name) for run in self.runs]

    def rank(self, name: str) -> int | None:
        shape = self.of(name)
        return None if shape is None else len(shape)

    def static(self, name: str) -> bool:
        return all(s is not None and None not in s for s in self.every(name))

    def require(self, name: str, where: str) -> str | None:
        """None when ``name`` is static at every analysed batch; else raise or say why not.

        A dim left unknown because a graph input has symbolic dims is the
        caller's to fix (FoldError naming the input and ``input_shapes``);
        one unknown for another reason (an op shape inference cannot follow)
        only refuses the site, with this reason.
        """
        if self.static(name):
            return None
        if self.symbolic:
            inputs = "; ".join(f"input {k!r} has symbolic dims {', '.join(v)}" for k, v in self.symbolic.items())
            raise FoldError(
                f"{self.label}: {inputs}; the fold needs static shapes at {where} "
                "(pass input_shapes, e.g. --input-shape)"
            )
        return f"the shape of {name!r} is unknown after shape inference, so the fold cannot be proven"


def infer(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None, label: str) -> Shapes:
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    given = _checked(inputs, dict(input_shapes or {}), label)
    batched, symbolic = [], {}
    for inp in inputs:
        dims = _dims(inp.type)
        if dims is None or inp.name in given:
            continue
        if dims and dims[0] is None:
            batched.append(inp.name)
        rest = [_dim_name(inp.type, i) for i, d in enumerate(dims) if d is None and i > 0]
        if rest:
            symbolic[inp.name] = tuple(rest)
    batches: tuple[int | None, ...] = (1, 2) if batched else (None,)
    skeleton = _skeleton(proto)
    runs, types = [], {}
    for batch in batches:
        fixed = {**given, **{name: [batch, *(_dims(i.type)[1:])] for i in inputs if (name := i.name) in batched}}
        shapes, types = _run(skeleton, fixed)
        runs.append(shapes)
    return Shapes(tuple(runs), batches, symbolic, label, types)


def _checked(inputs, given: dict, label: str) -> dict[str, list[int]]:
    names = [i.name for i in inputs]
    out = {}
    for name, shape in given.items():
        if name not in names:
            raise FoldError(f"{label}: input_shapes names {name!r}, but the graph inputs are {', '.join(map(repr, names))}")
        dims = _dims(next(i for i in inputs if i.name == name).type)
        shape = list(shape)
        if any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in shape):
            raise FoldError(f"{label}: input_shapes[{name!r}] = {shape} must be positive integers")
        if dims is not None and (len(dims) != len(shape) or any(d is not None and d != s for d, s in zip(dims, shape))):
            declared = [d if d is not None else "?" for d in dims]
            raise FoldError(f"{label}: input_shapes[{name!r}] = {shape} does not fit the declared shape {declared}")
        out[name] = shape
    return out


def _dims(tp: onnx.TypeProto) -> list[int | None] | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]


def _dim_name(tp: onnx.TypeProto, i: int) -> str:
    d = tp.tensor_type.shape.dim[i]
    return d.dim_param or f"dim {i}"


def _skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the bytes of its large constants (their type and shape stay)."""
    out = onnx.ModelProto(ir_version=proto.ir_version)
    out.opset_import.extend(proto.opset_import)
    out.functions.extend(proto.functions)
    g = out.graph
    g.node.extend(proto.graph.node)
    g.input.extend(proto.graph.input)
    g.output.extend(proto.graph.output)
    declared = {i.name for i in g.input}
    for t in proto.graph.initializer:
        if math.prod(t.dims) <= SMALL:
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return out


def _run(skeleton: onnx.ModelProto, fixed: dict[str, list[int]]) -> tuple[dict[str, Dims], dict[str, int]]:
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    for inp in model.graph.input:
        if inp.name in fixed:
            shape = inp.type.tensor_type.shape
            del shape.dim[:]
            for i, d in enumerate(fixed[inp.name]):
                if d is None:
                    shape.dim.add().dim_param = f"unknown_{inp.name}_{i}"
                else:
                    shape.dim.add().dim_value = d
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # an op whose inference fails: keep what the graph declares
        pass
    shapes, types = {}, {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = _dims(vi.type)
        if dims is not None:
            shapes[vi.name] = tuple(dims)
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in model.graph.initializer:
        shapes[t.name], types[t.name] = tuple(t.dims), t.data_type
    return shapes, types
