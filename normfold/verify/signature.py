"""What an ONNX file expects: input names, declared shapes (int or symbolic), dtype; read with one-line errors.

``read_onnx`` refuses, naming the file, what normfold cannot take: a path that
is not a file, a file over protobuf's 2 GB limit, a file that is not ONNX or
fails ``onnx.checker``, weights in external data files, inputs that are not
float32/float16 tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._messages import error_line
from .session import SessionError

MAX_BYTES = 2**31 - 1          # protobuf's limit for one serialized message
_DTYPES = {1: torch.float32, 10: torch.float16}   # onnx.TensorProto.FLOAT, FLOAT16


@dataclass(frozen=True)
class OnnxSignature:
    names: list[str]
    shapes: list[list]         # per input: ints, or the symbolic name ("?" when unnamed)
    dtype: torch.dtype
    proto: Any

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shapes and self.shapes[0]) and not (isinstance(self.shapes[0][0], int) and self.shapes[0][0] > 0)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(np.float16 if self.dtype == torch.float16 else np.float32)

    def symbolic(self) -> list[tuple[str, int, Any]]:
        """(input, axis, symbol) of every non-batch axis without a fixed size."""
        return [(n, axis, d) for n, shape in zip(self.names, self.shapes)
                for axis, d in enumerate(shape) if axis > 0 and not (isinstance(d, int) and d > 0)]


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
                           "(normfold takes self-contained files under 2 GB)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise SessionError(f"{path} is not a valid ONNX model: {error_line(exc)}") from exc
    external = external_tensors(proto)
    if external:
        raise SessionError(f"{path} keeps {len(external)} tensors in external data files (e.g. {external[0]}); "
                           "normfold takes self-contained .onnx files under 2 GB")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise SessionError(f"{path} is not a valid ONNX model: {error_line(exc)}") from exc
    return signature_of(proto, str(path))


def signature_of(proto, where: str = "the ONNX model") -> OnnxSignature:
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    shapes, dtypes = [], set()
    for i in graph_inputs:
        t = i.type.tensor_type
        shapes.append([d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim])
        dtypes.add(t.elem_type)
    if not graph_inputs or dtypes - set(_DTYPES):
        raise SessionError(f"{where}: inputs must be float32 or float16 tensors")
    return OnnxSignature([i.name for i in graph_inputs], shapes, _DTYPES[min(dtypes)], proto)


def external_tensors(proto) -> list[str]:
    """Names of the tensors stored outside the file (initializers and Constant values, subgraphs too)."""
    from onnx import TensorProto

    return [t.name or "(unnamed)" for t in _all_tensors(proto.graph) if t.data_location == TensorProto.EXTERNAL]


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _all_tensors(g)
