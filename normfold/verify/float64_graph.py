"""An ONNX graph evaluated in float64: the oracle when all one has is the .onnx file.

onnxruntime's CPU provider has no float64 Conv, so the graph is evaluated with
``onnx.reference.ReferenceEvaluator`` (numpy) on a float64 copy of it. The copy
widens every floating-point tensor the graph declares or creates to float64:
initializers, Constant/ConstantOfShape values, the graph's inputs, outputs and
value_info, the target of Cast, the dtype attribute of EyeLike and the Random*
ops; nested graphs (If/Loop/Scan bodies) and model-local functions likewise.
Integer tensors are left as they are. ConvTranspose runs on
``conv_transpose.ConvTranspose`` (onnx.reference's own fails for group > 1),
BatchNormalization on ``batch_norm.BatchNormalization`` (onnx.reference's own
normalizes with the batch's statistics when the node has a momentum attribute).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._messages import typed_line
from .batch_norm import BatchNormalization
from .conv_transpose import ConvTranspose

FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_DTYPE_ATTRIBUTES = {"Cast": "to", "EyeLike": "dtype", "RandomNormal": "dtype", "RandomUniform": "dtype",
                     "RandomNormalLike": "dtype", "RandomUniformLike": "dtype"}


class OracleError(RuntimeError):
    """The float64 oracle cannot evaluate this graph (an op onnx.reference does not implement, ...);
    ``reason`` says why without naming the file."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def float64_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` whose floating-point tensors are all float64 (``proto`` is not modified)."""
    wide = onnx.ModelProto()
    wide.CopyFrom(proto)
    _widen_graph(wide.graph)
    for function in wide.functions:
        _widen_nodes(function.node)
    return wide


class Float64Graph:
    """``run(feeds)`` evaluates the graph in float64; ``run(feeds, names)`` returns any intermediate tensors too."""

    def __init__(self, proto: onnx.ModelProto, where: str = "the ONNX model"):
        from onnx.reference import ReferenceEvaluator

        self.where = where
        self.input_names = [i.name for i in proto.graph.input
                            if i.name not in {t.name for t in proto.graph.initializer}]
        self.output_names = [o.name for o in proto.graph.output]
        try:
            self._evaluator = ReferenceEvaluator(float64_copy(proto), new_ops=[BatchNormalization, ConvTranspose])
        except Exception as exc:
            custom = custom_ops(proto)
            why = f"onnx.reference has no {', '.join(custom)}" if custom else f"onnx.reference: {typed_line(exc)}"
            raise OracleError(f"cannot evaluate {where} in float64: {why}", why) from exc

    def run(self, inputs: Iterable[np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
        """The graph's outputs (or the tensors ``names``) for positional ``inputs``, as float64 arrays."""
        feeds = {}
        for name, value in zip(self.input_names, inputs):
            value = np.asarray(value)
            feeds[name] = value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value
        try:
            with np.errstate(all="ignore"):
                values = self._evaluator.run(names or self.output_names, feeds)
        except Exception as exc:
            why = f"onnx.reference failed: {typed_line(exc)}"
            raise OracleError(f"cannot evaluate {self.where} in float64: {why}", why) from exc
        return [np.asarray(v, dtype=np.float64) if np.issubdtype(np.asarray(v).dtype, np.floating) else np.asarray(v)
                for v in values]


def custom_ops(proto: onnx.ModelProto) -> list[str]:
    """'op (domain)' for each op of the graph (not its subgraphs) in a domain outside the ONNX standard
    and the model's own functions, in graph order: ops onnx.reference does not implement."""
    local = {(f.domain, f.name) for f in proto.functions}
    ops = [f"{n.op_type} ({n.domain})" for n in proto.graph.node
           if n.domain not in ("", "ai.onnx", "ai.onnx.ml") and (n.domain, n.op_type) not in local]
    return list(dict.fromkeys(ops))


def _widen_graph(graph: onnx.GraphProto) -> None:
    for i, init in enumerate(graph.initializer):
        if init.data_type in FLOATS - {TensorProto.DOUBLE}:
            graph.initializer[i].CopyFrom(_widen_tensor(init))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        _widen_type(value.type)
    _widen_nodes(graph.node)


def _widen_nodes(nodes) -> None:
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in FLOATS:
                attr.t.CopyFrom(_widen_tensor(attr.t))
            elif attr.type == onnx.AttributeProto.GRAPH:
                _widen_graph(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _widen_graph(g)
        if node.op_type == "Constant":
            _widen_constant(node)
        name = _DTYPE_ATTRIBUTES.get(node.op_type)
        for attr in node.attribute:
            if attr.name == name and attr.i in FLOATS:
                attr.i = TensorProto.DOUBLE


def _widen_constant(node: onnx.NodeProto) -> None:
    """Constant(value_float=...) / (value_floats=...) become a float64 ``value`` tensor."""
    for k, attr in enumerate(node.attribute):
        if attr.name in ("value_float", "value_floats"):
            values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), dtype=np.float64)
            del node.attribute[k]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(values)))
            return


def _widen_tensor(tensor: TensorProto) -> TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name)


def _widen_type(t: onnx.TypeProto) -> None:
    kind = t.WhichOneof("value")
    if kind == "tensor_type" and t.tensor_type.elem_type in FLOATS:
        t.tensor_type.elem_type = TensorProto.DOUBLE
    elif kind == "sequence_type":
        _widen_type(t.sequence_type.elem_type)
    elif kind == "optional_type":
        _widen_type(t.optional_type.elem_type)

