"""Read the input of the ONNX pass: refuse what it cannot fold, then make the working IR copy.

A file or ModelProto is refused (``FoldError``, one line naming it) when it is
not an ONNX model, keeps tensors in external data files, or is larger than
protobuf's 2 GB limit. Everything else is read into an onnx-ir model that is a
copy: the caller's proto and file are never written.

The copy is prepared so that constants look like constants: every
``Constant`` node of the main graph becomes an initializer of the same name,
a reshape, cast or transpose of stored tensors is evaluated (numpy, exact),
and, when anything else is left to fold (a node reading only constants, a
Shape of static dims), onnxscript's constant folder runs. None of it changes
the value of any tensor the model computes from its inputs.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from ..._messages import error_line
from ..errors import FoldError
from . import layout
from .shapes import Shapes

MAX_BYTES = 2**31 - 1  # protobuf cannot read or write a message beyond 2 GB
SMALL = 64             # initializers up to this many elements keep their values in the skeleton


@dataclass(frozen=True)
class Source:
    proto: onnx.ModelProto     # the caller's model (never modified)
    label: str                 # names it in messages: the path, or the graph
    working: onnx.ModelProto   # a copy: Constant nodes lifted, value_info dropped (see working_copy)
    skeleton: onnx.ModelProto  # the copy without the bytes of large constants (see skeleton())

    @property
    def data_inputs(self) -> tuple[str, ...]:
        """The graph inputs that are not initializers (IR < 4 lists weights as inputs too)."""
        weights = {t.name for t in self.proto.graph.initializer}
        return tuple(i.name for i in self.proto.graph.input if i.name not in weights)


def read(model: onnx.ModelProto | str | os.PathLike) -> Source:
    """The file or proto, checked: a FoldError naming it when the pass cannot take it."""
    if isinstance(model, onnx.ModelProto):
        label = f"the ONNX model (graph {model.graph.name!r})"
        size = _size(model)
        if size > MAX_BYTES:
            raise FoldError(f"{label} is {size / 2**30:.2f} GB, beyond protobuf's 2 GB limit")
        proto = model
    else:
        path = Path(model)
        label = str(path)
        if not path.exists():
            raise FoldError(f"{label} does not exist")
        if not path.is_file():
            raise FoldError(f"{label} is not a file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise FoldError(f"{label} is {size / 2**30:.2f} GB, beyond protobuf's 2 GB limit")
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as exc:
            raise FoldError(f"{label} is not an ONNX file ({type(exc).__name__}: {error_line(exc)})") from None
    _check_external(proto, label)
    working = onnx.ModelProto()
    working.CopyFrom(proto)  # onnx-ir wraps the copy's tensors; the caller's proto stays untouched
    working.graph.ClearField("value_info")  # the pass has its own shapes; see keep_value_info
    _lift_constant_protos(working)
    _fold_simple_protos(working)
    return Source(proto, label, working, _validated(working, label))


def _size(proto: onnx.ModelProto) -> int:
    """The serialized size, or a bound far below 2 GB when the weights are clearly small.

    upb computes ``ByteSize`` by encoding the whole message (milliseconds per
    MB); an element count times 10 bytes (the widest encoding of a number, a
    varint int64) bounds every numeric tensor without touching its data.
    """
    g = proto.graph
    tensors = list(g.initializer)
    tensors += [a.t for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    if any(t.data_type == onnx.TensorProto.STRING for t in tensors) or proto.functions or len(g.node) > 100_000:
        return proto.ByteSize()
    lists = sum(len(a.ints) + len(a.floats) for n in g.node for a in n.attribute)
    records = len(g.node) + len(g.input) + len(g.output) + len(g.value_info) + len(tensors)
    bound = 10 * (sum(math.prod(t.dims) for t in tensors) + lists) + 4096 * records
    return proto.ByteSize() if bound > MAX_BYTES // 2 else bound


def _check_external(proto: onnx.ModelProto, label: str) -> None:
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version <= 0:
        raise FoldError(f"{label} is not an ONNX model (no graph, opset or IR version)")
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    external += [
        a.t.name or n.name for n in proto.graph.node for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise FoldError(
            f"{label} keeps {len(external)} tensor(s) in external data files (first: {external[0]!r}); "
            "the fold takes a self-contained model (onnx.load it with its data and pass the proto, or re-save it)"
        )


def _validated(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """The skeleton of a model that passes onnx.checker (run on the skeleton: the weights' bytes are not
    what it checks, and copying them costs more than the check)."""
    bones = skeleton(proto)
    try:
        onnx.checker.check_model(bones)
    except Exception as exc:
        raise FoldError(f"{label} is not a valid ONNX model: {error_line(exc)}") from None
    return bones


def skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the bytes of its large initializers: each becomes a graph input of its
    type and shape (what the checker and shape inference need; they read the values of small,
    shape-like constants only)."""
    out = onnx.ModelProto(ir_version=max(proto.ir_version, 4))
    out.opset_import.extend(proto.opset_import)
    out.functions.extend(proto.functions)
    g = out.graph
    g.name = proto.graph.name
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


def working_copy(source: Source, declared: Callable[[], Shapes]) -> ir.Model:
    """An onnx-ir model of ``source.working`` with constants folded and lifted to initializers.

    ``declared()``: the shapes inferred from the inputs as the model declares
    them (never the caller's ``input_shapes``: a Shape folded into a constant
    must hold for every input the model takes), given to the values first so
    that the constant folder can evaluate Shape/Slice chains over static dims.
    """
    try:
        model = ir.serde.deserialize_model(source.working)
    except Exception as exc:
        raise FoldError(f"{source.label} is not a valid ONNX model: {type(exc).__name__}: {error_line(exc)}") from None
    if _foldable(source.working.graph, declared):
        _annotate(model.graph, declared())
        _fold_constants(model)
        _lift_constants(model.graph)
    return model


def _annotate(graph: ir.Graph, shapes: Shapes) -> None:
    for node in graph:
        for value in node.outputs:
            dims = shapes.of(value.name)
            if dims is not None and value.shape is None:
                value.shape = ir.Shape([d for d in dims])
            elem = shapes.types.get(value.name)
            if elem and value.type is None:
                value.type = ir.TensorType(ir.DataType(elem))


def _lift_constant_protos(model: onnx.ModelProto) -> None:
    """Each main-graph ``Constant`` node holding a tensor -> an initializer named as its output.

    Done on the proto before onnx-ir reads it: exporters such as paddle2onnx
    write every weight as a Constant node (half the nodes of PaddleOCR's
    files), and each node costs onnx-ir far more to read, fold and write than
    an initializer. IR < 4 lists initializers as graph inputs: left as they are.
    """
    g = model.graph
    if model.ir_version < 4:
        return
    outputs = {o.name for o in g.output}
    keep = []
    for node in g.node:
        if (node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1
                and node.attribute[0].name == "value" and node.output[0] not in outputs):
            tensor = g.initializer.add()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
        else:
            keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def _lift_constants(graph: ir.Graph) -> None:
    """Each Constant node the constant folder left (its value known) -> an initializer of its output's name."""
    lifted = []
    for node in graph:
        out = node.outputs[0] if node.outputs else None
        if (node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or out is None
                or out.const_value is None or out.is_graph_output()):
            continue
        value = ir.Value(name=out.name, type=out.type, shape=out.shape, const_value=out.const_value)
        out.replace_all_uses_with(value)
        out.name = None
        graph.initializers[value.name] = value
        lifted.append(node)
    graph.remove(lifted)


def _foldable(graph: onnx.GraphProto, declared: Callable[[], Shapes]) -> bool:
    """Whether onnxscript's constant folder has anything to do: a node reading only constants, or a
    Shape/Size of static dims."""
    consts = {t.name for t in graph.initializer}
    consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    if any(n.op_type not in ("Constant", "Shape", "Size") and all(i in consts for i in n.input if i)
           for n in graph.node):
        return True
    for n in graph.node:
        if n.op_type in ("Shape", "Size"):
            dims = declared().of(n.input[0])
            if dims is not None:
                a = {x.name: x.i for x in n.attribute}
                picked = dims if n.op_type == "Size" else dims[a.get("start", 0):a.get("end", len(dims))]
                if all(isinstance(d, int) for d in picked):
                    return True
    return False


# ops on stored tensors that are exact in numpy and common in exported graphs (a bias reshaped
# for broadcasting, a cast): folded on the proto, which spares the general folder most files
_SIMPLE = ("Cast", *layout.OPS)


def _fold_simple_protos(model: onnx.ModelProto) -> None:
    """Each main-graph node of ``_SIMPLE`` reading only initializers -> an initializer of its output."""
    g = model.graph
    if model.ir_version < 4:
        return
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    outputs = {o.name for o in g.output}
    consts = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        ins = [i for i in node.input if i]
        if (node.op_type in _SIMPLE and node.domain in ("", "ai.onnx") and ins and all(i in consts for i in ins)
                and len(node.output) == 1 and node.output[0] not in outputs):
            value = _evaluate(node, [numpy_helper.to_array(consts[i]) for i in node.input if i], opset)
            if value is not None:
                t = numpy_helper.from_array(value, node.output[0])
                g.initializer.append(t)
                consts[t.name] = t
                continue
        keep.append(node)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(keep)


def _evaluate(node: onnx.NodeProto, args: list[np.ndarray], opset: int) -> np.ndarray | None:
    attrs = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    if node.op_type == "Cast":
        x, to = args[0], attrs.get("to")
        if to not in _NUMERIC or x.dtype.kind not in "biuf":
            return None
        return x.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
    if node.op_type == "Unsqueeze" and opset < 13 and "axes" not in attrs:
        return None
    version = 13 if opset >= 13 else 1  # Squeeze/Unsqueeze: axes an input from 13 (the others ignore it)
    return layout.apply(node.op_type, args[0], args[1:], attrs, version)


_NUMERIC = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
            onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
            onnx.TensorProto.BOOL}


def _fold_constants(model: ir.Model) -> None:
    from onnxscript.optimizer import fold_constants

    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it logs every op it cannot evaluate
    try:
        fold_constants(model)
    finally:
        quiet.setLevel(level)



def keep_value_info(original: onnx.ModelProto, folded: onnx.ModelProto) -> None:
    """Give the folded graph the original's value_info for every tensor it still computes.

    A tensor name means the same values in both graphs (the pass renames every
    tensor whose values change), so its declared type and shape still hold.
    """
    computed = {o for n in folded.graph.node for o in n.output}
    computed -= {o.name for o in folded.graph.output} | {vi.name for vi in folded.graph.value_info}
    folded.graph.value_info.extend(vi for vi in original.graph.value_info if vi.name in computed)
