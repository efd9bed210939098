"""Small ONNX graphs built by hand, one per site or refusal the tests name."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ELEM = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


class Graph:
    """A builder: ``g.conv(g.x, 3, 8)``, ``g.op("Relu", [y])``, ``g.build(out)``."""

    def __init__(self, shape, dtype=np.float32, opset: int = 17, seed: int = 0, name: str = "x"):
        self.rng = np.random.default_rng(seed)
        self.dtype, self.opset = dtype, opset
        self.nodes, self.inits, self.extra_inputs = [], [], []
        self.input = helper.make_tensor_value_info(name, ELEM[dtype], list(shape) if shape is not None else None)
        self.x = name
        self.count = 0

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, array, name: str | None = None, cast: bool = True) -> str:
        array = np.asarray(array)
        if cast and array.dtype.kind == "f":
            array = array.astype(self.dtype)
        name = name or self._name("c")
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def randn(self, *shape, scale: float = 1.0) -> np.ndarray:
        return self.rng.standard_normal(shape) * scale

    def op(self, op_type: str, inputs, name: str | None = None, outputs: int = 1, domain: str = "", **attrs):
        name = name or self._name(op_type.lower())
        outs = [f"{name}_out"] if outputs == 1 else [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, domain=domain, **attrs))
        return outs[0] if outputs == 1 else outs

    def conv(self, x, cin, cout, k=3, groups=1, pads=1, bias=True, name=None, **attrs):
        w = self.const(self.randn(cout, cin // groups, k, k, scale=1 / np.sqrt(cin * k * k / groups)))
        ins = [x, w] + ([self.const(self.randn(cout, scale=0.1))] if bias else [])
        return self.op("Conv", ins, name=name or self._name("conv"), group=groups, pads=[pads] * 4,
                       kernel_shape=[k, k], **attrs)

    def bn(self, x, c, name=None, outputs=1, **attrs):
        params = [self.randn(c, scale=0.5) + 1, self.randn(c, scale=0.2), self.randn(c, scale=0.3),
                  self.rng.uniform(0.5, 2.0, c)]
        out = self.op("BatchNormalization", [x] + [self.const(p) for p in params],
                      name=name or self._name("bn"), outputs=outputs, epsilon=1e-5, **attrs)
        return out if outputs == 1 else out[0]

    def build(self, *outputs) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", [self.input, *self.extra_inputs], [], self.inits)
        domains = sorted({n.domain for n in self.nodes} - {""})
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)]
                                  + [helper.make_opsetid(d, 1) for d in domains])
        model.ir_version = 8
        inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
        for o in outputs:  # declared with the shape ONNX infers (the checker wants one)
            model.graph.output.append(inferred.get(o) or helper.make_tensor_value_info(o, ELEM[self.dtype], []))
        onnx.checker.check_model(model)
        return model
