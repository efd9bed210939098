"""Arithmetic inside an activation or on a statistic: no norm site of its own.

Exporters write activations as arithmetic: GELU as ``x * 0.5 * (1 + erf(x / sqrt 2))``,
SiLU as ``x * sigmoid(1 * x)``, Hardswish as ``x * relu6(x + 3) / 6``. Each scalar
Add/Mul/Div there has one constant operand, so it looks like a per-tensor affine,
but it is a step of a nonlinear function: it can fold only where an affine
before or after the whole activation could, and when it does not fold it is not
a norm the user left behind. The pass still tries to fold every site (and
reports every fold); the report leaves out, among the sites that did not fold,
the scalar ones (a one-element constant) that this module finds by structure:

* **Pointwise expressions.** A tensor is a pointwise expression of ``x`` when
  it is computed from ``x`` alone by elementwise ops: Add/Sub/Mul/Div/Pow/Max/Min
  whose other operands are constants or expressions of the same ``x``, and unary
  ops (Erf, Tanh, Sigmoid, Clip with constant bounds, Relu, ...). It is
  nonlinear in ``x`` when a nonlinear unary op, or a product, quotient, power,
  max or min of two expressions of ``x``, is on its way.
* **A gate** is a Mul of two expressions of the same ``x``, at least one of them
  nonlinear: ``x * g(x)``, the form of GELU, SiLU/Swish, Hardswish and Mish.
* **Inside a gate:** a scalar site whose output reaches a gate through
  pointwise ops of the same ``x`` only (GELU's ``/ sqrt 2`` and ``+ 1``,
  Hardswish's ``+ 3``, Swish's ``* 1``).
* **The gate's constant factor:** a scalar Mul/Div whose data input is a gate's
  output (GELU's ``* 0.5`` after the product, Hardswish's ``/ 6``). A learned
  scale or shift after it (PP-LCNetV3's learnable affine block) is a site again.
* **On a statistic:** a scalar site whose data input is a reduction (ReduceMean,
  ReduceSum, ...) or a DynamicQuantizeLinear's scale (the range of the tensor, per
  inference): LayerNorm's ``var + eps`` and a dynamically quantized layer's
  ``x_scale * w_scale`` work on each input's statistics, not on the features.
* **Fixed by the shapes:** a scalar site whose data input is computed from
  stored tensors and shapes alone (Shape, Range, ConstantOfShape, ...), not from
  the input's values: YOLOv8's anchor grid ``Range + 0.5``. No data flows through it.

A per-channel constant (more than one element) is never left out: that is the
shape of a norm's scale and shift (LayerNorm's gamma and beta).
"""
from __future__ import annotations

import onnx_ir as ir

from .graph import constant, is_constant, is_onnx

LINEAR_UNARY = ("Identity", "Neg", "Cast")
NONLINEAR_UNARY = ("Erf", "Tanh", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Relu", "LeakyRelu", "PRelu", "Elu",
                   "Selu", "Celu", "Gelu", "Mish", "Softplus", "Softsign", "Exp", "Log", "Sqrt", "Reciprocal", "Abs",
                   "ThresholdedRelu", "Sin", "Cos")
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")
LINEAR_BINARY = ("Add", "Sub")   # of two expressions: linear when both are
STATISTICS = ("DynamicQuantizeLinear",)  # besides the Reduce* ops
DEPTH = 8                        # pointwise steps followed from a site to its gate


class Activations:
    """The questions above, for one graph: the root and nonlinearity of every tensor, in one pass
    over the nodes in graph (topological) order."""

    def __init__(self, graph: ir.Graph):
        self.roots: dict[ir.Value, ir.Value] = {}
        self.curved: set[ir.Value] = set()   # the tensors nonlinear in their root
        self.fixed: set[ir.Value] = set()    # the tensors computed from stored tensors and shapes alone
        for node in graph:
            ins = [v for v in node.inputs if v is not None]
            if is_onnx(node, "Shape", "Size") or (ins and all(v in self.fixed or is_constant(v) for v in ins)):
                self.fixed.update(node.outputs)
            if not _pointwise(node):
                continue
            data = _data(node)
            roots = {self.root(v) for v in data}
            if len(roots) != 1:
                continue
            out = node.outputs[0]
            self.roots[out] = roots.pop()
            if (node.op_type in NONLINEAR_UNARY or node.op_type == "Pow"
                    or (len(data) > 1 and node.op_type not in LINEAR_BINARY) or any(v in self.curved for v in data)):
                self.curved.add(out)

    def root(self, value: ir.Value) -> ir.Value:
        """The tensor ``x`` that ``value`` is a pointwise expression of (itself when it is none)."""
        return self.roots.get(value, value)

    def left_out(self, node: ir.Node, data: int) -> bool:
        """Whether the site ``node`` (data input ``data``) is scalar arithmetic of an activation or a statistic."""
        if not is_onnx(node, "Add", "Sub", "Mul", "Div") or len(node.inputs) != 2:
            return False
        k = constant(node.inputs[1 - data])
        if k is None or k.size != 1:
            return False
        if node.inputs[data] in self.fixed:
            return True
        source = node.inputs[data].producer()
        if source is not None and (source.op_type.startswith("Reduce") or source.op_type in STATISTICS):
            return True
        if node.op_type in ("Mul", "Div") and source is not None and self.gate(source):
            return True
        return self._reaches_gate(node.outputs[0], self.root(node.inputs[data]), DEPTH)

    def _reaches_gate(self, value: ir.Value, root: ir.Value, depth: int) -> bool:
        readers = [u.node for u in value.uses()]
        if depth == 0 or not readers or value.is_graph_output():
            return False
        for reader in readers:
            if not _pointwise(reader) or self.root(reader.outputs[0]) is not root:
                return False
            if not (self.gate(reader) or self._reaches_gate(reader.outputs[0], root, depth - 1)):
                return False
        return True

    def gate(self, node: ir.Node) -> bool:
        """A Mul of two expressions of one tensor, at least one nonlinear in it."""
        if not is_onnx(node, "Mul") or len(node.inputs) != 2 or any(v is None or is_constant(v) for v in node.inputs):
            return False
        a, b = node.inputs
        return self.root(a) is self.root(b) and (a in self.curved or b in self.curved)


def _data(node: ir.Node) -> list[ir.Value]:
    """The inputs that are computed (not stored constants); a unary op's first input only."""
    if node.op_type in BINARY:
        return [v for v in node.inputs if v is not None and not is_constant(v)]
    return [node.inputs[0]] if node.inputs and node.inputs[0] is not None else []


def _pointwise(node: ir.Node) -> bool:
    if not is_onnx(node, *LINEAR_UNARY, *NONLINEAR_UNARY, *BINARY) or len(node.outputs) != 1:
        return False
    if node.op_type in BINARY:
        return bool(_data(node))
    return all(v is None or is_constant(v) for v in node.inputs[1:])  # Clip's bounds, PRelu's slope: constants
