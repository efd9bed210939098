"""The folded onnx-ir model back to a ModelProto, holding the weights about once at every moment.

``ir.serde.serialize_model`` copies every tensor into the new message while
the IR still holds it: the weights twice at the end, plus the input's message
if the IR still reads from it. For a model over 2 GB that is the difference
between a fold in about its size in memory and one in three times it. Here,
every tensor the IR still reads from the input (its message, its mapped data
files) is first copied out (``release``), so the input can go; the model is
then serialized with each large initializer's bytes left out, and the bytes
are moved in one tensor at a time, each dropped from the IR once copied.
The message is the one ``serialize_model`` makes, byte for byte.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir

LARGE = 1 << 20   # bytes: an initializer this large is moved into the message on its own


def serialize(model: ir.Model) -> onnx.ModelProto:
    """``model`` as a ModelProto; its large initializers leave ``model`` (it is not to be used after)."""
    release(model)
    moved = {}
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if tensor is not None and tensor.dtype != ir.DataType.STRING and tensor.nbytes >= LARGE:
            moved[name] = tensor
            value.const_value = ir.Tensor(np.empty(0, tensor.dtype.numpy()), shape=tensor.shape, dtype=tensor.dtype,
                                          name=name)
    out = ir.serde.serialize_model(model)
    for proto in out.graph.initializer:
        if proto.name in moved:
            proto.raw_data = moved.pop(proto.name).tobytes()
            model.graph.initializers[proto.name].const_value = None
    return out


def release(model: ir.Model) -> None:
    """Copy out of the protobuf message and the mapped data files every tensor ``model`` still reads from
    them (initializers, tensor attributes), so that the message can be freed before the model is
    serialized again, and the serialized model holds its data (not references to the input's files).

    upb keeps a message's bytes in one arena, freed only with the whole message, and
    ``ir.serde.deserialize_model`` leaves each tensor a view of its proto: one such tensor left
    keeps every weight of the file alive.
    """
    def owned(tensor):
        if isinstance(tensor, ir.ExternalTensor):   # a view of the mapped file: copied (the file may be the output)
            return ir.Tensor(tensor.numpy().copy(), dtype=tensor.dtype, name=tensor.name)
        if isinstance(tensor, ir.serde.TensorProtoTensor):   # numpy() copies the bytes out of the message
            return ir.Tensor(tensor.numpy(), dtype=tensor.dtype, name=tensor.name)
        return tensor

    for value in model.graph.initializers.values():
        value.const_value = owned(value.const_value)
    graphs = [model.graph, *model.functions.values()]
    for node in (n for g in graphs for n in ir.traversal.RecursiveGraphIterator(g)):
        for name, attr in list(node.attributes.items()):
            if attr.type == ir.AttributeType.TENSOR and isinstance(attr.value, ir.serde.TensorProtoTensor):
                node.attributes[name] = ir.AttrTensor(name, owned(attr.value))
