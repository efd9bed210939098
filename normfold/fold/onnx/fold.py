"""The ONNX-graph pass: chain the norm-like sites, hand them to the fold rules, do the surgery.

The pass knows no algebra: sites and their maps come from ``sites.py``, the
new weights from the rules; here chains are composed and the graph edited.

1. Chains: consecutive sites of one run whose maps compose (the same axis, or
   scalars), each feeding only the next. A site without a map (its reason is
   reported) ends a chain.
2. Backward: fold the longest prefix of each chain into the layer that
   produces its input (always exact), directly or across layout ops that
   carry the channel axis whole (``through.py``). Safety: that output (and
   each layout op's) feeds only the chain and is no graph output; the layer's
   weight is a stored float constant, not a graph input nor quantized; one
   that other nodes read too is folded into the layer's own copy (``copies.py``).
3. Forward: fold the longest suffix of what is left into the one layer that
   reads its output, directly or across layout ops (Shape/Size readers, which
   see only the shape, are moved to the chain's input).
   Before both, a chain whose map is exactly the identity (a Mul by 1) is
   removed outright (listed in ``report.tidied``, ``rule="identity"``).
4. Every site not folded is reported with the reason each direction failed,
   but scalar arithmetic inside an activation or on a statistic, which is no
   norm (``activation.py``).

Names: a layer that absorbs a backward chain writes the chain's output tensor
(same name, same values); every tensor whose values change gets a new name,
and every node that is not rewritten keeps its name and outputs, so the
folded graph can be compared with the original tensor by tensor.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import torch

from ..algebra import cast
from ..report import FoldReport, Folded, Skipped
from . import quantized, through
from .activation import Activations
from .copies import Copies
from .graph import (
    FLOAT_DTYPES, constant, describe_users, float64, is_constant, is_onnx, label, named, op_version, sole_user,
    unknown_version, users,
)
from .maps import AxisMap
from .region import ELEMENTWISE_OPS, LAYOUT_OPS
from .rules import BACKWARD, FORWARD, Layer, Rewrite, Rule, Site, rule_for
from .shapes import Shapes
from .sites import Finder, NormSite

SHAPE_READERS = ("Shape", "Size")


class OnnxPass:
    def __init__(self, model: ir.Model, shapes: Shapes, report: FoldReport, *, densify: bool = False):
        self.model, self.graph, self.shapes, self.report = model, model.graph, shapes, report
        self.densify = densify
        self.opsets = dict(self.graph.opset_imports)
        self.opset = self.opsets.get("", self.opsets.get("ai.onnx"))
        self.names = _all_names(self.graph)
        self.why_back: dict[int, str] = {}
        self.why_fwd: dict[int, str] = {}
        self.done: set[int] = set()
        self.composed: dict[tuple[int, ...], AxisMap | None] = {}
        self.regions_folded = 0
        self.copies = Copies.of(self.graph)

    # ---- chains ------------------------------------------------------------------------------
    def run(self) -> None:
        runs = Finder(self.graph, self.shapes, self.opsets).runs()
        chains, refused, order = [], [], []
        for segments in runs:
            current: list[NormSite] = []
            shape_of: AxisMap | None = None  # the chain's axis and channels so far (a non-scalar member)
            for seg in segments:
                if seg is not None and seg.norm_like:
                    order.append(seg)
                if seg is None or seg.map is None:
                    if seg is not None and seg.norm_like:
                        refused.append(seg)
                    chains.append(current)
                    current, shape_of = [], None
                    continue
                if shape_of is not None and not shape_of.joins(seg.map):  # another axis: a new chain
                    chains.append(current)
                    current, shape_of = [], None
                current.append(seg)
                if shape_of is None or shape_of.scalar:
                    shape_of = seg.map
            chains.append(current)
        activations = Activations(self.graph)  # read before any fold changes the graph
        unlisted = {id(s) for s in order if s.kind == "elementwise" and activations.left_out(s.nodes[0], s.data_index)}
        chains = [c for c in (_trimmed(c) for c in chains) if c]
        chains = [c for c in chains if not self._identity(c)]
        for chain in chains:
            self._backward(chain)
        for chain in chains:
            rest = [s for s in chain if id(s) not in self.done]
            if any(s.norm_like for s in rest):
                self._forward(_trimmed(rest))
        refused_ids = {id(s) for s in refused}
        for site in order:
            if id(site) in unlisted and id(site) not in self.done:
                continue  # arithmetic inside an activation or on a statistic: no norm (activation.py)
            if id(site) in refused_ids:
                self.report.skipped.append(Skipped(site.name, site.reason))
            elif id(site) not in self.done:
                back = self.why_back.get(id(site), "?")
                fwd = self.why_fwd.get(id(site), "?")
                self.report.skipped.append(Skipped(site.name, f"backward: {back}; forward: {fwd}"))
        self._subgraph_sites(self.graph, "")
        self.report.added_bytes = self.copies.total
        warning = quantized.summary(self.graph)
        if warning is not None:
            self.report.warnings.append(warning)

    def _subgraph_sites(self, graph: ir.Graph, where: str) -> None:
        """Report the norm-like nodes inside If/Loop/Scan bodies, which the pass does not enter: a
        body runs under a condition or once per iteration, and reads tensors of the graph around it."""
        for node in graph:
            for attribute in node.attributes.values():
                if attribute.type == ir.AttributeType.GRAPH:
                    bodies = [attribute.value]
                elif attribute.type == ir.AttributeType.GRAPHS:
                    bodies = list(attribute.value)
                else:
                    continue
                for body in bodies:
                    inside = f"{where}the {attribute.name} of {label(node)} ({node.op_type})"
                    for inner in body:
                        if _norm_like(inner):
                            self.report.skipped.append(Skipped(
                                named([inner]), f"it is inside {inside}: the pass folds the main graph only"))
                    self._subgraph_sites(body, f"{inside}, in ")

    def _backward(self, chain: list[NormSite]) -> None:
        target = self._producer(chain)  # the same layer for every prefix: read once
        reasons = {}
        for j in range(len(chain), 0, -1):
            if not chain[j - 1].norm_like:
                continue
            reasons[j] = target if isinstance(target, str) else self._try_backward(chain[:j], *target)
            if reasons[j] is None:
                return self._note_reasons(chain[j:], reasons, self.why_back, offset=j)
        self._note_reasons(chain, reasons, self.why_back, offset=0)

    def _note_reasons(self, sites, reasons, into, offset):
        for i, site in enumerate(sites, start=offset):
            shortest = min((k for k in reasons if k > i), default=None)
            if shortest is not None:
                into[id(site)] = reasons[shortest]

    def _forward(self, chain: list[NormSite]) -> None:
        target = self._consumer(chain)  # the same layer for every suffix: read once
        for i in range(len(chain)):
            if not chain[i].norm_like:
                continue
            why = target if isinstance(target, str) else self._try_forward(chain[i:], *target)
            if why is None:
                return
            self.why_fwd[id(chain[i])] = why
            for later in chain[i + 1:]:
                self.why_fwd.setdefault(id(later), why)

    # ---- identity ----------------------------------------------------------------------------
    def _identity(self, sites: list[NormSite]) -> bool:
        """Remove a chain whose map is exactly ``y = x`` (a Mul by 1, an Add of 0, a scale and its
        inverse): exact without any layer, whatever else reads the tensors around it."""
        if not all(s.map.map.diagonal for s in sites):  # a matrix and its inverse: not worth the search
            return False
        m = self._compose(sites)
        if m is None or bool(m.map.c.any()) or not m.map.shift_only:  # c first: a norm's is rarely 0
            return False
        tail, source = sites[-1].output, sites[0].input
        if tail.is_graph_output():
            return False
        tail.replace_all_uses_with(source)
        self.graph.remove([n for s in sites for n in s.nodes], safe=True)
        self._record(sites, None, "identity", "none", "its map is the identity: removed")
        return True

    # ---- backward ----------------------------------------------------------------------------
    def _producer(self, chain: list[NormSite]) -> tuple[Rule, Layer, list[ir.Node]] | str:
        """The rule and the layer that produces the chain's input, directly or through layout ops
        that only it reads (``through.py``), and those ops; or why no prefix folds back."""
        value, reader, layouts = chain[0].input, chain[0].nodes[0], []
        while ((producer := value.producer()) is not None and _layout_op(producer) and not value.is_graph_output()
               and users(value) == [reader]):
            layouts.insert(0, producer)
            value, reader = producer.inputs[0], producer
        if producer is None:
            return f"its input is {_source(value)}, not the output of a Conv/ConvTranspose/Gemm/MatMul"
        rule = rule_for(BACKWARD, producer)
        if rule is None:
            return (f"its input comes from {label(producer)} ({producer.op_type}){_through(layouts)}, "
                    "not a Conv/ConvTranspose/Gemm/MatMul")
        if value.is_graph_output() or users(value) != [reader]:
            return f"the output of {label(producer)} also feeds {describe_users(value)}"
        layer = self._layer(producer, backward=True)
        return layer if isinstance(layer, str) else (rule, layer, layouts)

    def _try_backward(self, sites: list[NormSite], rule: Rule, layer: Layer, layouts: list[ir.Node]) -> str | None:
        got = self._folded(rule, layer, sites, layouts, forward=False)
        if isinstance(got, str):
            return got
        rewrite, tensors = got
        tail = sites[-1].output
        note = self.copies.note(layer.node, tensors["copies"])
        node = self._install(layer, rewrite, tensors)
        out = node.outputs[0]
        if tensors.get("bias_after") is not None or layouts:
            out.name = self.fresh(f"{label(node)}_out")
        if tensors.get("bias_after") is not None:
            out = self._add_after(node, tensors["bias_after"])
        if layouts:  # the layout ops now carry the folded values: new names, the last takes the chain's
            out.name = out.name or self.fresh(f"{label(node)}_biased")
            layouts[0].replace_input_with(0, out)
            for op in layouts:
                op.outputs[0].name = self.fresh(f"{label(op)}_out")
            out = layouts[-1].outputs[0]
        tail.replace_all_uses_with(out, replace_graph_outputs=True)
        self.graph.remove([n for s in sites for n in s.nodes], safe=True)
        _take_name(out, tail)
        self._record(sites, node, rule.name, "backward", rewrite.note, note)
        return None

    # ---- forward -----------------------------------------------------------------------------
    def _consumer(self, chain: list[NormSite]) -> tuple[Rule, Layer, list[ir.Node], list[ir.Node]] | str:
        """The rule and the layer that reads the chain's output, directly or through layout ops that
        only the chain feeds (``through.py``), the Shape/Size readers beside it, and those layout ops;
        or why no suffix folds forward."""
        tail = chain[-1].output
        if tail.is_graph_output():
            return "its output is a graph output"
        readers = users(tail)
        shape_only = [n for n in readers if is_onnx(n, *SHAPE_READERS)]
        others = [n for n in readers if n not in shape_only]
        if len(others) != 1:
            return f"its output feeds {len(others)} nodes ({describe_users(tail)})"
        consumer, value, layouts = others[0], tail, []
        while _layout_op(consumer) and (after := sole_user(consumer.outputs[0])) is not None:
            layouts.append(consumer)
            value, consumer = consumer.outputs[0], after
        rule = rule_for(FORWARD, consumer)
        if rule is None:
            return f"its output feeds {label(consumer)} ({consumer.op_type}){_through(layouts)}, not a Conv/Gemm/MatMul"
        if consumer.inputs[0] is not value:
            return f"its output is not the data input of {label(consumer)}"
        layer = self._layer(consumer, backward=False)
        return layer if isinstance(layer, str) else (rule, layer, shape_only, layouts)

    def _try_forward(self, sites: list[NormSite], rule: Rule, layer: Layer, shape_only: list[ir.Node],
                     layouts: list[ir.Node]) -> str | None:
        got = self._folded(rule, layer, sites, layouts, forward=True)
        if isinstance(got, str):
            return got
        rewrite, tensors = got
        consumer, tail, source = layer.node, sites[-1].output, sites[0].input
        if rewrite.shift is not None:
            rank = layer.weight.dim()  # a Conv's input has the rank of its weight
            nu, why = cast(rewrite.shift.reshape(1, -1, *[1] * (rank - 2)), tensors["dtype"], "the input shift nu")
            if why is not None:
                return why
        if layouts:  # the layout ops now carry the chain's input: new names
            layouts[0].replace_input_with(0, source)
            for op in layouts:
                op.outputs[0].name = self.fresh(f"{label(op)}_out")
            source = layouts[-1].outputs[0]
        if rewrite.shift is not None:
            sub = ir.node("Sub", [source, self._initializer(f"{label(consumer)}_shift", nu)],
                          name=self.fresh(f"{label(consumer)}_shift"))
            sub.outputs[0].name = self.fresh(f"{label(consumer)}_shifted")
            self.graph.insert_before(consumer, sub)
            data = sub.outputs[0]
        else:
            data = source
        for reader in shape_only:
            for i, v in enumerate(reader.inputs):
                if v is tail:
                    reader.replace_input_with(i, sites[0].input)
        consumer.replace_input_with(0, data)
        note = self.copies.note(consumer, tensors["copies"])
        node = self._install(layer, rewrite, tensors)
        if tensors.get("bias_after") is not None:
            self._bias_after_forward(node, tensors["bias_after"])
        self.graph.remove([n for s in sites for n in s.nodes], safe=True)
        self._record(sites, node, rule.name, "forward", rewrite.note, note)
        return None

    def _bias_after_forward(self, node: ir.Node, bias: torch.Tensor) -> None:
        """Add the bias a forward MatMul fold leaves: into the Add that follows, else as a new Add."""
        out = node.outputs[0]
        add = users(out)[0] if len(users(out)) == 1 and not out.is_graph_output() else None
        if add is not None and is_onnx(add, "Add"):
            k_index = 1 if add.inputs[0] is out else 0
            k = constant(add.inputs[k_index])
            rank = self.shapes.rank(out.name) if self.shapes.rank(out.name) is not None else 0
            if k is not None and k.ndim <= rank and all(d == 1 for d in k.shape[:-1]):
                merged = torch.from_numpy(np.asarray(k, dtype=np.float64)) + bias
                value, why = cast(merged, FLOAT_DTYPES[add.inputs[k_index].dtype], "the merged bias")
                if why is None:
                    add.replace_input_with(k_index, self._initializer(f"{add.inputs[k_index].name}_folded", value))
                    out.name = self.fresh(f"{label(node)}_out")
                    return
        name = out.name
        readers = [(u.node, u.idx) for u in out.uses()]
        outputs = [i for i, v in enumerate(self.graph.outputs) if v is out]
        out.name = self.fresh(f"{label(node)}_out")
        added = self._add_after(node, bias)
        for reader, index in readers:
            reader.replace_input_with(index, added)
        for i in outputs:
            self.graph.outputs[i] = added
        _take_name(added, out)
        added.name = name

    # ---- layers and tensors ------------------------------------------------------------------
    def _folded(self, rule: Rule, layer: Layer, sites: list[NormSite], layouts: list[ir.Node],
                forward: bool) -> tuple[Rewrite, dict] | str:
        """The rule's rewrite of ``layer`` for the chain ``sites`` (across the layout ops ``layouts``
        between them) and its tensors cast to the layer's dtype; or the first reason not."""
        m = self._compose(sites)
        if m is None:
            return "the chain's maps act on different axes"
        if layouts and not m.scalar:
            m = self._across(m, layouts, forward)
            if isinstance(m, str):
                return m
        rewrite = rule.rewrite(Site(layer, m, self.densify))
        if isinstance(rewrite, str):
            return rewrite
        tensors = self._tensors(layer, rewrite)
        if isinstance(tensors, str):
            return tensors
        copies = self.copies.needed(layer.node, tensors)
        if isinstance(copies, str):
            return copies
        tensors["copies"] = copies
        return rewrite, tensors

    def _layer(self, node: ir.Node, backward: bool) -> Layer | str:
        """``node`` as the rules see it, the chain after it (``backward``) or before it; or why it
        cannot take a fold."""
        why = unknown_version(node, op_version(node, self.opsets), self.opset)
        if why is not None:
            return why
        index_w = 1
        if node.op_type == "MatMul" and not is_constant(node.inputs[1]):
            return (quantized.dequantized("weight", node.inputs[1], node)
                    or f"{label(node)} (MatMul) has no stored constant right operand (x @ W) to fold into")
        w_value = node.inputs[index_w] if len(node.inputs) > index_w else None
        why = _stored(node, w_value, "weight")
        if why is not None:
            return why
        bias_value = node.inputs[2] if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2 else None
        if bias_value is not None:
            why = _stored(node, bias_value, "bias")
            if why is not None:
                return why
        weight = float64(w_value)
        if node.op_type == "MatMul" and weight.dim() != 2:
            return f"the weight of {label(node)} (MatMul) has shape {list(weight.shape)}, not a (K, M) matrix"
        bias = float64(bias_value) if bias_value is not None else None
        return Layer(node, label(node), weight, bias, self.shapes, backward)

    def _across(self, m: AxisMap, layouts: list[ir.Node], forward: bool) -> AxisMap | str:
        """``m`` moved across the layout ops to the layer's side, proven on static shapes (``through.py``)."""
        start = layouts[0].inputs[0].name
        if not self.shapes.static(start):
            return (f"the shape of {start!r} before {label(layouts[0])} ({layouts[0].op_type}) is not static, so "
                    "the norm's channel axis cannot be followed across it")
        versions = [op_version(op, self.opsets) for op in layouts]
        for op, version in zip(layouts, versions):
            why = unknown_version(op, version, self.opset)
            if why is not None:
                return why
        axis = through.translate(layouts, versions, self.shapes.every(start), m.axis, forward)
        return axis if isinstance(axis, str) else AxisMap(m.map, axis)

    def _compose(self, sites: list[NormSite]) -> AxisMap | None:
        """The chain's map, composed once (the identity test and each rule ask for it)."""
        key = tuple(map(id, sites))
        if key not in self.composed:
            self.composed[key] = _compose(sites)
        return self.composed[key]

    def _tensors(self, layer: Layer, rewrite: Rewrite) -> dict | str:
        """The rewrite's tensors cast once to the layer's dtype, or why they do not fit."""
        dtype = FLOAT_DTYPES[layer.node.inputs[1].const_value.dtype]
        out: dict = {"dtype": dtype}
        for key, t, what in (("weight", rewrite.weight, "the folded weight"), ("bias", rewrite.bias, "the folded bias"),
                             ("bias_after", rewrite.bias_after, "the folded bias")):
            if t is None:
                continue
            value, why = cast(t, dtype, f"{what} of {layer.name}")
            if why is not None:
                return why
            out[key] = value
        return out

    def _install(self, layer: Layer, rewrite: Rewrite, tensors: dict) -> ir.Node:
        """Put the new weight, bias and attributes on the layer (a MatMul with a bias and a
        rank-2 input becomes a Gemm); returns the node that now computes the layer."""
        node = layer.node
        weight = self._initializer(f"{node.inputs[1].name}_folded", tensors["weight"])
        if node.op_type == "MatMul" and tensors.get("bias_after") is not None and self.shapes.rank(node.inputs[0].name) == 2:
            bias = self._initializer(f"{node.inputs[1].name}_bias", tensors.pop("bias_after"))
            gemm = ir.node("Gemm", [node.inputs[0], weight, bias], name=node.name or None)
            self.graph.insert_before(node, gemm)
            old = node.outputs[0]
            old.replace_all_uses_with(gemm.outputs[0], replace_graph_outputs=True)
            self.graph.remove(node, safe=True)
            _take_name(gemm.outputs[0], old)
            return gemm
        bias_name = f"{node.inputs[1].name}_bias" if len(node.inputs) < 3 or node.inputs[2] is None else f"{node.inputs[2].name}_folded"
        node.replace_input_with(1, weight)
        if "bias" in tensors:
            bias = self._initializer(bias_name, tensors["bias"])
            if len(node.inputs) < 3:
                node.resize_inputs(3)
            node.replace_input_with(2, bias)
        for name, value in rewrite.attributes.items():
            node.attributes[name] = ir.convenience.convert_attribute(name, value)
        return node

    def _add_after(self, node: ir.Node, bias: torch.Tensor) -> ir.Value:
        add = ir.node("Add", [node.outputs[0], self._initializer(f"{label(node)}_bias", bias)],
                      name=self.fresh(f"{label(node)}_bias_add"))
        self.graph.insert_after(node, add)
        return add.outputs[0]

    def _initializer(self, base: str, t: torch.Tensor) -> ir.Value:
        name = self.fresh(base)
        # the cast tensor's own memory (nothing writes it after the cast), copied once when serialized
        tensor = ir.Tensor(t.numpy(), name=name)
        value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(tensor.shape), const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def fresh(self, base: str) -> str:
        """A tensor or node name the graph does not use yet, from ``base``."""
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def _record(self, sites: list[NormSite], node: ir.Node | None, rule: str, direction: str, *notes: str) -> None:
        norms = tuple(s.name for s in sites if s.norm_like)
        layout = [s.name for s in sites if not s.norm_like]
        notes = [*notes] + ([f"with the layout no-op {', '.join(layout)}"] if layout else [])
        for site in sites:
            self.done.add(id(site))
            if site.kind == "region":
                self.regions_folded += 1
        into = label(node) if node is not None else ""
        where = self.report.tidied if rule == "identity" else self.report.folded
        for name in norms:
            where.append(Folded(name, into, direction, rule, norms, "; ".join(n for n in notes if n)))


def _norm_like(node: ir.Node) -> bool:
    """A BatchNormalization, or a float Add/Sub/Mul/Div of a tensor and a constant (stored or a
    Constant node of the body), as a site of the main graph would be (``Finder.data_input``)."""
    if not is_onnx(node, "BatchNormalization", *ELEMENTWISE_OPS):
        return False
    if node.op_type == "BatchNormalization":
        return True
    if len(node.inputs) != 2 or None in node.inputs:
        return False
    fixed = [_fixed_dtype(v) for v in node.inputs]
    data = [i for i, f in enumerate(fixed) if f is None]
    return len(data) == 1 and FLOAT_DTYPES.get(fixed[1 - data[0]]) is not None and (node.op_type != "Div" or data == [0])


def _fixed_dtype(value: ir.Value) -> int | None:
    """The element type of a constant operand (a stored tensor or a Constant node's); None for a computed one."""
    if is_constant(value):
        return value.dtype
    producer = value.producer()
    if producer is not None and is_onnx(producer, "Constant") and "value" in producer.attributes:
        return producer.attributes["value"].value.dtype
    return None


def _compose(sites: list[NormSite]) -> AxisMap | None:
    out = sites[0].map
    for s in sites[1:]:
        out = out.then(s.map)
        if out is None:
            return None
    return out


def _trimmed(chain: list[NormSite]) -> list[NormSite]:
    """The chain without layout no-ops at its ends (they are folded only between norms)."""
    i, j = 0, len(chain)
    while i < j and not chain[i].norm_like:
        i += 1
    while j > i and not chain[j - 1].norm_like:
        j -= 1
    return chain[i:j]


def _stored(node: ir.Node, value: ir.Value | None, what: str) -> str | None:
    """Why the ``what`` (weight or bias) of ``node`` cannot take a fold, or None: it must be a stored
    float tensor (one other nodes read too gets a copy: ``copies.py``)."""
    if value is None:
        return f"{label(node)} has no {what}"
    if value.is_graph_input():
        return f"the {what} {value.name!r} of {label(node)} is a graph input: it can be replaced at run time"
    if not is_constant(value):
        why = quantized.dequantized(what, value, node)
        if why is not None:
            return why
        producer = value.producer()
        by = f" by {label(producer)} ({producer.op_type})" if producer is not None else ""
        return f"the {what} {value.name!r} of {label(node)} is computed in the graph{by}, not a stored constant"
    dtype = value.const_value.dtype
    if FLOAT_DTYPES.get(dtype) is None:
        return (f"the {what} {value.name!r} of {label(node)} is stored as {dtype.name}; the pass folds "
                "float16/32/64 only")
    return None


def _layout_op(node: ir.Node) -> bool:
    """A layout op with stored arguments: a fold may look across it (``through.py``) when only the
    chain reads what lies between."""
    return (is_onnx(node, *LAYOUT_OPS) and len(node.outputs) == 1 and bool(node.inputs) and node.inputs[0] is not None
            and all(v is None or is_constant(v) for v in node.inputs[1:]))


def _through(layouts: list[ir.Node]) -> str:
    return f" through {', '.join(f'{label(n)} ({n.op_type})' for n in layouts)}" if layouts else ""


def _source(value: ir.Value) -> str:
    if value.is_graph_input():
        return f"the graph input {value.name!r}"
    if value.const_value is not None:
        return f"the constant {value.name!r}"
    return repr(value.name)


def _take_name(value: ir.Value, old: ir.Value) -> None:
    """``value`` replaces ``old`` (removed): its name, type and shape."""
    value.name = old.name
    if old.type is not None:
        value.type = old.type
    if old.shape is not None:
        value.shape = old.shape


def _all_names(graph: ir.Graph) -> set[str]:
    names = {v.name for v in graph.inputs} | set(graph.initializers)
    for node in graph.all_nodes():
        names.add(node.name or "")
        names.update(o.name for o in node.outputs if o.name)
    return names
