"""Static shapes of every tensor, as the pass needs them to prove a site.

ONNX shape inference (with data propagation) runs once on the model's
skeleton (``load.skeleton``) with the graph inputs' dims fixed by
``input_shapes`` where the caller gave them. A symbolic leading dim of an
input not given is the *batch*: it keeps its symbol, which shape inference
carries through Conv, elementwise ops and ``Reshape(x, [-1, ...])``. A shape
whose only symbol is a batch at axis 0 counts as static; where a proof needs
numbers (a region's probes) it is evaluated at batch 1 and at batch 2, and the
site must hold at both: a map that reads across the batch, or a reshape that
works at one batch size only, fails there.

Any other symbolic dim stays unknown; a site that needs it is a FoldError
naming the input (see :meth:`Shapes.require`). The model itself keeps its
declared inputs: these shapes are only the pass's evidence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import onnx
import torch

from ..errors import FoldError
from .graph import FLOAT_DTYPES

BATCHES = (1, 2)  # where a symbolic batch is given numbers

Dims = tuple  # of int (static), str (a symbol) or None (unknown)


@dataclass(frozen=True)
class Shapes:
    """Tensor name -> shape and element type, from one run of shape inference."""

    types_: dict[str, onnx.TypeProto]                              # as inferred, read on demand
    types: dict[str, int]                                          # onnx.TensorProto element types
    batch: frozenset[str] = frozenset()                            # the batch symbols
    symbolic: dict[str, tuple[str, ...]] = field(default_factory=dict)  # input -> its other symbolic dims
    label: str = "the model"
    _dims: dict[str, Dims | None] = field(default_factory=dict, repr=False, compare=False)  # read so far

    def float_dtype(self, name: str) -> torch.dtype | None:
        """The torch dtype of a float16/32/64 tensor; None for any other or an unknown type."""
        return FLOAT_DTYPES.get(self.types.get(name))

    def of(self, name: str) -> Dims | None:
        """The shape (None when even the rank is unknown)."""
        if name not in self._dims:
            tp = self.types_.get(name)
            self._dims[name] = tp if isinstance(tp, tuple) else (_dims(tp) if tp is not None else None)
        return self._dims[name]


    def rank(self, name: str) -> int | None:
        shape = self.of(name)
        return None if shape is None else len(shape)

    def batchlike(self, shape: Dims, axis: int) -> bool:
        """Whether dim ``axis`` of ``shape`` follows the batch: a symbol at axis 0 of a graph with a
        symbolic batch (shape inference names the batch of ``Reshape(x, [-1, ...])`` afresh)."""
        return axis == 0 and bool(self.batch) and isinstance(shape[0], str)

    def static(self, name: str) -> bool:
        """Every dim known: a number, or the batch at axis 0."""
        shape = self.of(name)
        return shape is not None and all(isinstance(d, int) or self.batchlike(shape, i) for i, d in enumerate(shape))

    def same(self, a: str, b: str) -> bool:
        """Whether two static tensors have one shape (numbers equal, the batch at axis 0 of both)."""
        sa, sb = self.of(a), self.of(b)
        if sa is None or sb is None or len(sa) != len(sb) or not self.static(a) or not self.static(b):
            return False
        return sa[1:] == sb[1:] and (sa[0] == sb[0] or (self.batchlike(sa, 0) and self.batchlike(sb, 0)))

    def every(self, name: str) -> list[tuple[int, ...]]:
        """The shape in numbers at each analysed batch (the caller checked :meth:`static`)."""
        shape = self.of(name)
        if shape and self.batchlike(shape, 0):
            return [(b, *shape[1:]) for b in BATCHES]
        return [tuple(shape)]

    def require(self, name: str, where: str) -> str | None:
        """None when ``name`` is static; else raise, or say why the site cannot be proven.

        A dim left unknown while a graph input has symbolic (non-batch) dims is
        the caller's to fix: FoldError naming the input and ``input_shapes``.
        One unknown for another reason (an op shape inference cannot follow)
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


def infer(skeleton: onnx.ModelProto, data_inputs: Sequence[str], input_shapes: Mapping[str, Sequence[int]] | None,
          label: str) -> Shapes:
    """Shapes of ``skeleton`` (``load.skeleton``), whose graph inputs that are not weights are ``data_inputs``."""
    wanted = set(data_inputs)
    inputs = [i for i in skeleton.graph.input if i.name in wanted]
    given = _checked(inputs, dict(input_shapes or {}), label)
    model = onnx.ModelProto()
    model.CopyFrom(skeleton)
    batch, symbolic = set(), {}
    for inp in model.graph.input:
        if inp.name not in wanted:
            continue
        dims = inp.type.tensor_type.shape.dim
        if inp.name in given:
            del dims[:]
            for d in given[inp.name]:
                dims.add().dim_value = d
            continue
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value >= 0:
                continue
            name = d.dim_param or f"{inp.name}:{i}"
            d.Clear()
            d.dim_param = name  # an unnamed or negative dim gets a symbol, which inference then carries
            if i == 0:
                batch.add(name)
            else:
                symbolic.setdefault(inp.name, []).append(name)
    protos, types = _run(model)
    return Shapes(protos, types, frozenset(batch), {k: tuple(v) for k, v in symbolic.items()}, label)


def _checked(inputs, given: dict, label: str) -> dict[str, list[int]]:
    names = [i.name for i in inputs]
    out = {}
    for name, shape in given.items():
        if name not in names:
            raise FoldError(f"{label}: input_shapes names {name!r}, but the graph inputs are {', '.join(map(repr, names))}")
        declared = _dims(next(i for i in inputs if i.name == name).type)
        shape = list(shape)
        if any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in shape):
            raise FoldError(f"{label}: input_shapes[{name!r}] = {shape} must be positive integers")
        if declared is not None and (len(declared) != len(shape)
                                     or any(isinstance(d, int) and d != s for d, s in zip(declared, shape))):
            raise FoldError(f"{label}: input_shapes[{name!r}] = {shape} does not fit the declared shape "
                            f"{[d if d is not None else '?' for d in declared]}")
        out[name] = shape
    return out


def _dims(tp: onnx.TypeProto) -> Dims | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    out = []
    for d in tp.tensor_type.shape.dim:
        kind = d.WhichOneof("value")
        out.append(d.dim_value if kind == "dim_value" and d.dim_value >= 0 else (d.dim_param if kind == "dim_param" else None))
    return tuple(out)


def _run(model: onnx.ModelProto) -> tuple[dict[str, onnx.TypeProto | Dims], dict[str, int]]:
    model = _inferred(model)
    if _reshape_ranks(model):  # a Reshape to a computed shape of known length: its rank, then all after it
        model = _inferred(model)
    protos, types = {}, {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tp = vi.type
        protos[vi.name] = tp
        types[vi.name] = tp.tensor_type.elem_type
    for t in model.graph.initializer:
        protos[t.name], types[t.name] = tuple(t.dims), t.data_type
    return protos, types


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # an op whose inference fails: keep what the graph declares
        return model


def _reshape_ranks(model: onnx.ModelProto) -> bool:
    """Give rank-only shapes to Reshapes whose target is computed (Shape -> Slice -> Concat, as
    paddle2onnx writes a flatten) but has a static length k: their output has rank k. ONNX's
    inference leaves such an output without a shape, and with it every op after it."""
    g = model.graph
    reshapes = [n for n in g.node if n.op_type == "Reshape"]
    if not reshapes:
        return False
    infos = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
    if all(n.output[0] in infos and _dims(infos[n.output[0]].type) is not None for n in reshapes):
        return False
    changed = False
    for node in reshapes:
        if len(node.input) < 2 or node.input[1] not in infos:
            continue
        target = _dims(infos[node.input[1]].type)
        out = infos.get(node.output[0])
        if out is None:
            out = g.value_info.add()
            out.name = node.output[0]
            source = infos.get(node.input[0])
            if source is None or not source.type.HasField("tensor_type"):
                continue
            out.type.tensor_type.elem_type = source.type.tensor_type.elem_type
        if _dims(out.type) is None and target and len(target) == 1 and isinstance(target[0], int):
            shape = out.type.tensor_type.shape
            for i in range(target[0]):
                shape.dim.add().dim_param = f"{node.output[0]}:{i}"
            changed = True
    return changed
