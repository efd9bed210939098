"""What an ONNX file expects: input names, declared shapes (int or symbolic), dtype; read with one-line errors.

``read_onnx`` refuses, naming the file, what normfold cannot take: a path that
is not a file, an .onnx file over protobuf's 2 GB limit (a larger model keeps
its weights in external data files: read, each reference checked by
``normfold.onnx_file``), a file that is not ONNX or fails ``onnx.checker``, an input that is not a
float32/float16, integer or bool tensor.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._messages import error_line
from ..onnx_file import MAX_BYTES, OnnxFileError, external_tensors, load_external_data
from .session import SessionError

_DTYPES = {1: torch.float32, 10: torch.float16}   # onnx.TensorProto.FLOAT, FLOAT16
# the other input types normfold feeds: INT8/16/32/64, UINT8/16/32/64, BOOL
_OTHER_INPUTS = {3, 5, 6, 7, 2, 4, 12, 13, 9}


@dataclass(frozen=True)
class OnnxSignature:
    names: list[str]
    shapes: list[list]         # per input: ints, or the symbolic name ("?" when unnamed)
    dtype: torch.dtype         # the model's float dtype: its float inputs' (else its float outputs', else float32)
    proto: Any
    input_dtypes: list = field(default_factory=list)   # per input: its numpy dtype (float, integer or bool)

    @property
    def dynamic_batch(self) -> bool:
        """The first input's leading axis is symbolic, and no input carries that symbol on another axis (an RNN
        state ``[layers, batch, hidden]``: its batch cannot be sliced as the others' is, so such a file is
        checked at the example's batch only)."""
        if not (self.shapes and self.shapes[0]) or (isinstance(self.shapes[0][0], int) and self.shapes[0][0] > 0):
            return False
        symbol = self.shapes[0][0]
        return not (isinstance(symbol, str) and symbol and any(
            symbol in shape[1:] for shape in self.shapes if shape))

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(np.float16 if self.dtype == torch.float16 else np.float32)

    def batched(self, k: int) -> bool:
        """Whether input ``k``'s leading axis is the batch axis (``batched``)."""
        return batched(self.shapes[k], self.shapes[0])

    def symbolic(self) -> list[tuple[str, int, Any]]:
        """(input, axis, symbol) of every non-batch axis without a fixed size."""
        return [(n, axis, d) for n, shape in zip(self.names, self.shapes)
                for axis, d in enumerate(shape) if axis > 0 and not (isinstance(d, int) and d > 0)]


def batched(declared, first) -> bool:
    """Whether an input declared ``declared`` has the batch axis first: its leading dim is declared as the first
    input's is (the same symbol or size). A weight fed as an input, of another leading size, is fed as it is at
    every batch size."""
    return bool(declared) and bool(first) and declared[0] == first[0]


def read_onnx(path: str | os.PathLike) -> OnnxSignature:
    """Load ``path`` and describe its inputs, or SessionError naming the file."""
    import onnx

    path = Path(path)
    if path.is_dir():
        raise SessionError(f"{path} is a directory, not an ONNX file")
    if not path.is_file():
        raise SessionError(f"ONNX file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SessionError(f"{path} is {size / 2**30:.1f} GiB: over protobuf's 2 GB limit for one ONNX file "
                           "(a larger model keeps its weights in external data files)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SessionError(f"{path} is not a valid ONNX model: {error_line(exc)}") from exc
    external = bool(external_tensors(proto))
    try:
        load_external_data(proto, path)
    except OnnxFileError as exc:
        raise SessionError(str(exc)) from None
    try:   # by path where the data is external: a model over 2 GB cannot be handed to the checker whole
        onnx.checker.check_model(str(path) if external else proto)
    except Exception as exc:
        raise SessionError(f"{path} is not a valid ONNX model: {error_line(exc)}") from exc
    return signature_of(proto, str(path))


def signature_of(proto, where: str = "the ONNX model") -> OnnxSignature:
    from onnx import TensorProto, helper

    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    if not graph_inputs:
        raise SessionError(f"{where} has no inputs")
    shapes, types = [], []
    for i in graph_inputs:
        t, kind = i.type.tensor_type, i.type.WhichOneof("value")
        if kind != "tensor_type" or t.elem_type not in set(_DTYPES) | _OTHER_INPUTS:
            kind = TensorProto.DataType.Name(t.elem_type) if kind == "tensor_type" else kind   # a sequence, a map
            raise SessionError(f"{where}: input {i.name!r} is a {kind}; normfold feeds float32/float16, integer "
                               "and bool tensors")
        shapes.append([d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim])
        types.append(t.elem_type)
    floats = [e for e in types if e in _DTYPES] or [o.type.tensor_type.elem_type for o in proto.graph.output
                                                     if o.type.tensor_type.elem_type in _DTYPES] or [1]
    return OnnxSignature([i.name for i in graph_inputs], shapes, _DTYPES[min(floats)], proto,
                         [np.dtype(helper.tensor_dtype_to_np_dtype(e)) for e in types])

