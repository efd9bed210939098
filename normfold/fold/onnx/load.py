"""Read the input of the ONNX pass: refuse what it cannot fold, then make the working IR copy.

A file or ModelProto is refused (``FoldError``, one line naming it) when it is
not an ONNX model. A file's external data references are checked first
(``normfold.onnx_file``: a location outside the model's folder, a missing or
truncated data file is refused); its small tensors are read into the model,
its large ones stay in their files, read each time the pass needs them
(``_Unmapped``). A ModelProto that still refers to external data is refused
(nothing says where its files are). A model over 2 GB is fine: it is never
serialized whole. Everything else is read into an onnx-ir model: the caller's
proto and files are never written (a file's proto, which only the pass holds,
is worked on without a copy). The working proto is let go before the folded
model is serialized (serialize.py).

The copy is prepared so that constants look like constants: every
``Constant`` node of the main graph becomes an initializer of the same name,
a reshape, cast or transpose of stored tensors is evaluated (numpy, exact),
and, when anything else is left to fold (a node reading only constants, a
Shape of static dims), onnxscript's constant folder runs. None of it changes
the value of any tensor the model computes from its inputs.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
from onnx import numpy_helper

from ..._messages import error_line
from ...onnx_file import (
    MAX_BYTES,
    SMALL,
    OnnxFileError,
    copy_fields,
    external_tensors,
    load_external_data,
    skeleton,
)
from ..errors import FoldError
from . import layout
from .shapes import Shapes


@dataclass(frozen=True)
class Source:
    proto: onnx.ModelProto     # the caller's model (never modified), or, read from a file, ``working`` itself
    label: str                 # names it in messages: the path, or the graph
    working: onnx.ModelProto   # Constant nodes lifted, value_info dropped (see working_copy)
    skeleton: onnx.ModelProto  # the working model without the bytes of large constants (see skeleton())
    value_info: list = field(default_factory=list)   # the model's value_info (see keep_value_info)
    folder: str = ""           # where the working model's external data files are ("": it has none)

    @property
    def data_inputs(self) -> tuple[str, ...]:
        """The graph inputs that are not initializers (IR < 4 lists weights as inputs too)."""
        weights = {t.name for t in self.proto.graph.initializer}
        return tuple(i.name for i in self.proto.graph.input if i.name not in weights)


def read(model: onnx.ModelProto | str | os.PathLike) -> Source:
    """The file or proto, checked: a FoldError naming it when the pass cannot take it."""
    if isinstance(model, onnx.ModelProto):
        label = f"the ONNX model (graph {model.graph.name!r})"
        proto, owned = model, False
        _check_model(proto, label)
        external = [t.name or "(unnamed)" for t in external_tensors(proto)]
        if external:
            raise FoldError(
                f"{label} keeps {len(external)} tensor(s) in external data files (first: {external[0]!r}), which "
                "a model in memory cannot locate: pass the .onnx file's path, or onnx.load it with its data"
            )
    else:
        proto, label, owned = _load(Path(model)), str(model), True
    folder = str(Path(model).parent) if external_tensors(proto) else ""
    value_info = _detached(proto.graph.value_info) if owned else list(proto.graph.value_info)
    working = _working(proto, owned, folder)
    return Source(working if owned else proto, label, working, _validated(working, label), value_info, folder)


def _load(path: Path) -> onnx.ModelProto:
    """The file's model, its external data checked and its small tensors read, or FoldError naming it."""
    label = str(path)
    if not path.exists():
        raise FoldError(f"{label} does not exist")
    if not path.is_file():
        raise FoldError(f"{label} is not a file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise FoldError(f"{label} is {size / 2**30:.2f} GB, beyond protobuf's 2 GB limit for one file "
                        "(a larger model keeps its weights in external data files)")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise FoldError(f"{label} is not an ONNX file ({type(exc).__name__}: {error_line(exc)})") from None
    _check_model(proto, label)
    try:
        load_external_data(proto, path, max_elements=SMALL)
    except OnnxFileError as exc:
        raise FoldError(str(exc)) from None
    return proto


def _check_model(proto: onnx.ModelProto, label: str) -> None:
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version <= 0:
        raise FoldError(f"{label} is not an ONNX model (no graph, opset or IR version)")


def _detached(value_info) -> list[onnx.ValueInfoProto]:
    """Copies of ``value_info``'s entries (the field of the file's proto is cleared for the working model)."""
    holder = onnx.GraphProto()
    holder.value_info.extend(value_info)
    return list(holder.value_info)


def _working(proto: onnx.ModelProto, owned: bool, folder: str) -> onnx.ModelProto:
    """The model onnx-ir reads: every main-graph ``Constant`` node holding a tensor becomes an
    initializer named as its output, every node of ``_SIMPLE`` reading only stored tensors becomes
    the initializer it computes, and ``value_info`` is left out (the pass has its own shapes; see
    keep_value_info). A copy, unless ``owned`` (a file's proto, which no caller holds) and nothing is
    lifted: then the proto itself, its value_info cleared (a model over 2 GB is held once).

    Exporters such as paddle2onnx write every weight as a Constant node (half the nodes of
    PaddleOCR's files), and each node costs onnx-ir far more to read, fold and write than an
    initializer. IR < 4 lists initializers as graph inputs: its nodes are copied as they are.
    """
    source = proto.graph
    keep, made = _lifted(source, proto, folder) if proto.ir_version >= 4 else (None, [])
    out = onnx.ModelProto()
    if not made:  # nothing to lift: one copy in C, or none
        if owned:
            out = proto
        else:
            out.CopyFrom(proto)
        out.graph.ClearField("value_info")
        return out
    copy_fields(proto, out, skip=("graph",))
    copy_fields(source, out.graph, skip=("node", "value_info"))
    start = len(out.graph.initializer)
    out.graph.initializer.extend(t for t, _ in made)  # copied once, in C
    for tensor, (_, name) in zip(out.graph.initializer[start:], made):
        tensor.name = name
    out.graph.node.extend(keep)
    return out


def _lifted(source: onnx.GraphProto, proto: onnx.ModelProto, folder: str) -> tuple[list[onnx.NodeProto], list]:
    """(the nodes that stay, the initializers made of the others as (tensor, name): a Constant
    node's tensor, to be copied into place, or the tensor a node computes), in one pass over the nodes."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    outputs = {o.name for o in source.output}
    overridable = {i.name for i in source.input}  # an initializer that is also a graph input is a default
    stored = {t.name: t for t in source.initializer if t.name not in overridable}
    keep, made = [], []
    for node in source.node:
        op, tensor = node.op_type, None
        if op == "Constant" or op in _SIMPLE:
            out = node.output
            if node.domain not in ("", "ai.onnx") or len(out) != 1 or (name := out[0]) in outputs:
                pass
            elif op == "Constant" and len(attrs := node.attribute) == 1 and (a := attrs[0]).name == "value":
                stored[name] = tensor = a.t
                made.append((tensor, name))
                continue
            elif op != "Constant" and (ins := [i for i in node.input if i]) and all(i in stored for i in ins):
                value = _evaluate(node, [numpy_helper.to_array(stored[i], folder) for i in node.input if i], opset)
                tensor = None if value is None else numpy_helper.from_array(value, node.output[0])
        if tensor is None:
            keep.append(node)
        else:
            stored[tensor.name] = tensor
            made.append((tensor, tensor.name))
    return keep, made


def _validated(proto: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """The skeleton of a model that passes onnx.checker (run on the skeleton: the weights' bytes are not
    what it checks, and copying them costs more than the check)."""
    bones = skeleton(proto)
    try:
        onnx.checker.check_model(bones)
    except Exception as exc:
        raise FoldError(f"{label} is not a valid ONNX model: {error_line(exc)}") from None
    return bones


class _Unmapped(ir.ExternalTensor):
    """onnx-ir's ExternalTensor, read into a new array at each use and unmapped at once.

    A mapped tensor's pages count in the process's memory for as long as the
    tensor object lives, and a weight the pass replaced goes only with Python's
    cyclic collector (the IR's nodes and values refer to each other), which
    the fold pauses: mapped, every folded weight of a model over 2 GB would
    stay resident beside its folded copy.
    """

    def numpy(self) -> np.ndarray:
        array = super().numpy().copy()
        self.release()
        return array

    def __array__(self, dtype=None) -> np.ndarray:
        return self.numpy().__array__(dtype)

    def tobytes(self) -> bytes:
        data = super().tobytes()
        self.release()
        return data


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
    if source.folder:
        ir.external_data.set_base_dir(model.graph, source.folder)
        for value in model.graph.initializers.values():
            if type(t := value.const_value) is ir.ExternalTensor:
                value.const_value = _Unmapped(t.location, offset=t.offset, length=t.length, dtype=t.dtype,
                                              shape=t.shape, name=t.name, base_dir=source.folder)
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
            elem = shapes.elem_type(value.name)
            if elem and value.type is None:
                value.type = ir.TensorType(ir.DataType(elem))


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
# for broadcasting, a cast): folded on the proto (_working), which spares the general folder most files
_SIMPLE = ("Cast", *layout.OPS)


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
    try:
        return layout.apply(node.op_type, args[0], args[1:], attrs, version)
    except Exception:  # a shape that does not fit, a missing input or attribute (the checker has not run
        return None     # yet): not lifted, left to the checker and shape inference to name


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



def keep_value_info(value_info: list[onnx.ValueInfoProto], folded: onnx.ModelProto) -> None:
    """Give the folded graph the original's ``value_info`` for every tensor it still computes.

    A tensor name means the same values in both graphs (the pass renames every
    tensor whose values change), so its declared type and shape still hold.
    """
    computed = {o for n in folded.graph.node for o in n.output}
    computed -= {o.name for o in folded.graph.output} | {vi.name for vi in folded.graph.value_info}
    folded.graph.value_info.extend(vi for vi in value_info if vi.name in computed)
