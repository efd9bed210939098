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

    types_: dict[str, onnx.TypeProto | tuple[Dims, int]]           # as inferred (a stored tensor: dims, type)
    batch: frozenset[str] = frozenset()                            # the batch symbols
    symbolic: dict[str, tuple[str, ...]] = field(default_factory=dict)  # input -> its other symbolic dims
    label: str = "the model"
    _dims: dict[str, Dims | None] = field(default_factory=dict, repr=False, compare=False)  # read so far

    def elem_type(self, name: str) -> int | None:
        """The onnx.TensorProto element type (None or 0 when unknown)."""
        tp = self.types_.get(name)
        if tp is None:
            return None
        return tp[1] if isinstance(tp, tuple) else tp.tensor_type.elem_type

    def float_dtype(self, name: str) -> torch.dtype | None:
        """The torch dtype of a float16/32/64 tensor; None for any other or an unknown type."""
        return FLOAT_DTYPES.get(self.elem_type(name))

    def of(self, name: str) -> Dims | None:
        """The shape (None when even the rank is unknown)."""
        if name not in self._dims:
            tp = self.types_.get(name)
            self._dims[name] = tp[0] if isinstance(tp, tuple) else (_dims(tp) if tp is not None else None)
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
    return Shapes(_run(model), frozenset(batch), {k: tuple(v) for k, v in symbolic.items()}, label)


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


def _run(model: onnx.ModelProto) -> dict[str, onnx.TypeProto | tuple[Dims, int]]:
    model = _inferred(model)
    g = model.graph
    infos = {vi.name: vi for vi in [*g.input, *g.value_info, *g.output]}
    first, ranked = _reshape_ranks(g, infos)  # a Reshape to a computed shape of known length: its rank, then all after it
    if ranked:
        _inferred_after(model, infos, first, ranked)
    protos: dict = {name: vi.type for name, vi in infos.items()}
    for t in g.initializer:
        protos[t.name] = (tuple(t.dims), t.data_type)
    return protos


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # an op whose inference fails: keep what the graph declares
        return model


def _reshape_ranks(g: onnx.GraphProto, infos: dict[str, onnx.ValueInfoProto]) -> tuple[int, list[str]]:
    """Give rank-only shapes to Reshapes whose target is computed (Shape -> Slice -> Concat, as
    paddle2onnx writes a flatten) but has a static length k: their output has rank k. ONNX's
    inference leaves such an output without a shape (it propagates shape values only through
    recent op versions), and with it every op after it. Returns (the index of the first such
    node, the outputs given a rank: added to ``g.value_info`` and ``infos``)."""
    reshapes = [(i, n) for i, n in enumerate(g.node) if n.op_type == "Reshape"]
    if all(n.output[0] in infos and _dims(infos[n.output[0]].type) is not None for _, n in reshapes):
        return 0, []
    first, ranked = None, []
    for index, node in reshapes:
        if len(node.input) < 2 or node.input[1] not in infos:
            continue
        target = _dims(infos[node.input[1]].type)
        out = infos.get(node.output[0])
        if out is None:
            source = infos.get(node.input[0])
            if source is None or not source.type.HasField("tensor_type"):
                continue
            out = infos[node.output[0]] = g.value_info.add(name=node.output[0])
            out.type.tensor_type.elem_type = source.type.tensor_type.elem_type
        if _dims(out.type) is None and target and len(target) == 1 and isinstance(target[0], int):
            shape = out.type.tensor_type.shape
            for i in range(target[0]):
                shape.dim.add().dim_param = f"{node.output[0]}:{i}"
            ranked.append(node.output[0])
            first = index if first is None else first
    return first or 0, ranked


def _inferred_after(model: onnx.ModelProto, infos: dict[str, onnx.ValueInfoProto], first: int, ranked: list[str]) -> None:
    """Shape inference again for the nodes downstream of ``ranked`` only, merged into ``infos``.

    Those nodes, with the integer (shape) computations that feed them, whose values ONNX
    propagates as data, and every other tensor they read declared as an input of its inferred
    type, are a model of their own: inferring it gives what a second run over the whole graph
    would (up to the names of fresh symbols), at the cost of the nodes after the first flatten
    (node ``first``). A node with a subgraph, which may read any outer tensor, falls back to the
    whole model.
    """
    g = model.graph
    nodes = list(g.node)
    tainted, picked = set(ranked), set()
    for i in range(first + 1, len(nodes)):  # nodes are in topological order
        if not tainted.isdisjoint(nodes[i].input):
            picked.add(i)
            tainted.update(nodes[i].output)
    wanted = [name for i in picked for name in nodes[i].input if name not in tainted and _integer(infos.get(name))]
    producer = {o: i for i, n in enumerate(nodes) for o in n.output} if wanted else {}
    while wanted:  # the integer computations (of shapes) feeding them: ONNX propagates their values
        name = wanted.pop()
        i = producer.get(name)
        if i is None or i in picked or not _integer(infos.get(name)):
            continue
        picked.add(i)
        wanted.extend(nodes[i].input)
    part_nodes = [nodes[i] for i in sorted(picked)]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in part_nodes for a in n.attribute):
        again = _inferred(model)
        infos.clear()
        infos.update((vi.name, vi) for vi in [*again.graph.input, *again.graph.value_info, *again.graph.output])
        return
    part = onnx.ModelProto(ir_version=model.ir_version)
    part.opset_import.extend(model.opset_import)
    part.functions.extend(model.functions)
    part.graph.node.extend(part_nodes)
    produced = {o for n in part_nodes for o in n.output}
    part.graph.value_info.extend(infos[name] for name in ranked if name in produced)  # a flatten after a flatten
    stored = {t.name: t for t in g.initializer}
    declared = set()
    for name in (i for n in part_nodes for i in n.input):
        if not name or name in produced or name in declared:
            continue
        declared.add(name)
        if name in stored:
            part.graph.initializer.append(stored[name])
        elif name in infos:
            part.graph.input.append(infos[name])
    outputs = {vi.name for vi in g.output}
    for vi in _inferred(part).graph.value_info:
        if vi.name not in tainted or vi.name in ranked:
            continue
        if vi.name in outputs:
            _merge(infos[vi.name].type, vi.type)
        else:
            infos[vi.name] = vi


def _merge(declared: onnx.TypeProto, inferred: onnx.TypeProto) -> None:
    """A graph output's declared type with what inference found, as ONNX merges them: the inferred
    shape where none is declared, else each inferred number over a declared symbol."""
    if _dims(declared) is None:
        declared.CopyFrom(inferred)
        return
    dims, found = declared.tensor_type.shape.dim, inferred.tensor_type.shape.dim
    if len(dims) == len(found):
        for d, f in zip(dims, found):
            if f.HasField("dim_value"):
                d.dim_value = f.dim_value


def _integer(info: onnx.ValueInfoProto | None) -> bool:
    return info is not None and info.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
