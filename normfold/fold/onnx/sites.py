"""Find the norm-like sites of a graph and the channel map of each.

Sites come from *runs*: paths of nodes that are affine in one data input (every
other input a stored constant), each the only reader of the previous one's
output. Such nodes are BatchNormalization, Add/Sub/Mul/Div with one constant
operand (Div: the data divided by it), MatMul with one constant operand, and
the layout ops Reshape/Transpose/Squeeze/Unsqueeze/Flatten/Identity. A run is
cut into sites by shapes:

* a BatchNormalization or elementwise node is a site of its own, its map read
  off the op (norms.py);
* from any other node (a reshape, a transpose, a MatMul), the shortest stretch
  that comes back to the shape it started from is a *region*, its map
  extracted numerically (region.py). A stretch without arithmetic is a layout
  no-op, not a norm; a lone shape-keeping MatMul is a Linear layer, not a norm;
* a node from which the run never comes back to its shape ends the stretch.

Every BatchNormalization, every elementwise node with one constant operand and
every region holding arithmetic is a norm-like site: the report names each
one, folded or with the reason it was not.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from . import norms, region
from .graph import FLOAT_DTYPES, ONNX_DOMAINS, is_constant, label, named, op_version, sole_user, unknown_version
from .maps import AxisMap
from .region import ELEMENTWISE_OPS, LAYOUT_OPS
from .shapes import Shapes


@dataclass
class NormSite:
    nodes: tuple[ir.Node, ...]
    kind: str                       # "batchnorm", "elementwise", "region" or "layout"
    data_index: int                 # which input of nodes[0] is the data tensor
    output: ir.Value                # the tensor leaving it
    map: AxisMap | None = None
    reason: str | None = None       # why it has no channel map (then map is None)

    @property
    def input(self) -> ir.Value:
        """The data tensor entering it, as the graph has it now (a fold before it replaces that tensor)."""
        return self.nodes[0].inputs[self.data_index]

    @property
    def name(self) -> str:
        return named(self.nodes)

    @property
    def norm_like(self) -> bool:
        return self.kind != "layout"


class Finder:
    """Runs, their sites and the maps, for one graph (the main graph of the model)."""

    def __init__(self, graph: ir.Graph, shapes: Shapes, opsets: dict[str, int]):
        self.graph, self.shapes, self.opsets = graph, shapes, opsets
        self.opset = opsets.get("", opsets.get("ai.onnx"))
        self.versions: dict[ir.Node, int | None] = {}  # of the nodes in runs (sites are made of nothing else)

    def runs(self) -> list[list[NormSite | None]]:
        """Each run as its sites in order, ``None`` where a node breaks the sequence."""
        data = {n: i for n in self.graph if (i := self.data_input(n)) is not None}
        self.versions = {n: op_version(n, self.opsets) for n in data}
        after = {n: self._next(n, data) for n in data}
        has_prev = {m for m in after.values() if m is not None}
        out = []
        for node in self.graph:
            if node not in data or node in has_prev:
                continue
            run = [node]
            while after[run[-1]] is not None:
                run.append(after[run[-1]])
            out.append(self._segments(run, data))
        return out

    def data_input(self, node: ir.Node) -> int | None:
        """The index of the node's one data input when it is affine in it; else None."""
        if node.domain not in ONNX_DOMAINS or not node.outputs:
            return None
        op, ins = node.op_type, list(node.inputs)
        if op in (*ELEMENTWISE_OPS, "MatMul"):
            if len(ins) != 2 or None in ins:
                return None
            live = [i for i, v in enumerate(ins) if not is_constant(v)]
            if len(live) != 1 or (op == "Div" and live[0] != 0):
                return None
            index = live[0]
        elif op == "BatchNormalization" or op in LAYOUT_OPS:
            if not ins or ins[0] is None or (
                    op != "BatchNormalization" and any(v is not None and not is_constant(v) for v in ins[1:])):
                return None
            index = 0
        else:
            return None
        if op == "BatchNormalization" or self.shapes.float_dtype(ins[index].name) is not None:
            return index  # BatchNormalization is float by definition
        # an untyped tensor (after an op shape inference does not know) has its constant operand's type
        other = ins[1 - index] if op in (*ELEMENTWISE_OPS, "MatMul") else None
        return index if other is not None and other.dtype in FLOAT_DTYPES else None

    def _next(self, node: ir.Node, data: dict) -> ir.Node | None:
        if any(o.uses() or o.is_graph_output() for o in node.outputs[1:]):
            return None
        out = node.outputs[0]
        user = sole_user(out)
        if user is None or user not in data or user.inputs[data[user]] is not out:
            return None
        return user

    def _segments(self, run: list[ir.Node], data: dict) -> list[NormSite | None]:
        out: list[NormSite | None] = []
        i = 0
        while i < len(run):
            node = run[i]
            x = node.inputs[data[node]]
            if node.op_type == "BatchNormalization" or node.op_type in ELEMENTWISE_OPS:
                out.append(self._single(node, data[node], x))
                i += 1
                continue
            end = self._return(run, i, data)
            if end is None:
                out.append(None)
                i += 1
                continue
            nodes = tuple(run[i:end])
            if len(nodes) == 1 and node.op_type == "MatMul":
                out.append(None)  # a Linear layer, not a norm
            else:
                out.append(self._region(nodes, data[node], x))
            i = end
        return out

    def _single(self, node: ir.Node, data: int, x: ir.Value) -> NormSite:
        kind = "batchnorm" if node.op_type == "BatchNormalization" else "elementwise"
        site = NormSite((node,), kind, data, node.outputs[0])
        why = unknown_version(node, self.versions[node], self.opset)
        if why is None:
            got = (norms.batchnorm(node, self.versions[node], self.shapes) if kind == "batchnorm"
                   else norms.elementwise(node, data, self.shapes))
            site.map, why = (got, None) if isinstance(got, AxisMap) else (None, got)
        site.reason = why
        return site

    def _return(self, run: list[ir.Node], i: int, data: dict) -> int | None:
        """The end of the shortest stretch run[i:end] that comes back to the shape of run[i]'s input.

        None when there is none, or when that shape is unknown for a reason
        other than the graph's symbolic inputs (which :meth:`Shapes.require`
        raises for, when the stretch holds a layout op: a region could hide there).
        """
        start = run[i].inputs[data[run[i]]].name
        if not self.shapes.static(start):
            if any(n.op_type in LAYOUT_OPS for n in run[i:]):
                self.shapes.require(start, f"{label(run[i])}..{label(run[-1])}")
            return None
        for j in range(i, len(run)):
            if self.shapes.same(start, run[j].outputs[0].name):
                return j + 1
        return None

    def _region(self, nodes: tuple[ir.Node, ...], data: int, x: ir.Value) -> NormSite:
        arithmetic = any(n.op_type not in LAYOUT_OPS for n in nodes)
        site = NormSite(nodes, "region" if arithmetic else "layout", data, nodes[-1].outputs[0])
        for node in nodes:
            why = unknown_version(node, self.versions[node], self.opset)
            if why is not None:
                site.reason = why
                return site
        got = region.extract(nodes, self.shapes.every(x.name), self.versions)
        if isinstance(got, str):
            site.reason = got
        else:
            site.map = AxisMap(got, 1)
        return site

