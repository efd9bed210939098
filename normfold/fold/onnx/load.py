"""Read the input of the ONNX pass: refuse what it cannot fold, then make the working IR copy.

A file or ModelProto is refused (``FoldError``, one line naming it) when it is
not an ONNX model, keeps tensors in external data files, or is larger than
protobuf's 2 GB limit. Everything else is read into an onnx-ir model that is a
copy: the caller's proto and file are never written.

The copy is prepared so that constants look like constants: onnxscript's
constant folder evaluates every node whose inputs are all constant (a Reshape
or Cast of a stored tensor, a Shape of a static dim), and onnx-ir's pass lifts
every ``Constant`` node into an initializer of the same name. Neither changes
the value of any tensor the model computes from its inputs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass

from ..errors import FoldError

MAX_BYTES = 2**31 - 1  # protobuf cannot read or write a message beyond 2 GB


def read(model: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, str]:
    """(the model, a label naming it in messages): the file or proto, checked."""
    if isinstance(model, onnx.ModelProto):
        label = f"the ONNX model (graph {model.graph.name!r})"
        size = model.ByteSize()
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
            raise FoldError(f"{label} is not an ONNX file ({type(exc).__name__}: {_first_line(exc)})") from None
    _validate(proto, label)
    return proto, label


def _validate(proto: onnx.ModelProto, label: str) -> None:
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
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise FoldError(f"{label} is not a valid ONNX model: {_first_line(exc)}") from None


def working_copy(proto: onnx.ModelProto) -> ir.Model:
    """An onnx-ir copy of ``proto`` with constants folded and lifted to initializers."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # onnx-ir wraps the proto's tensors; the caller's proto stays untouched
    model = ir.serde.deserialize_model(copy)
    _fold_constants(model)
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    RemoveUnusedNodesPass()(model)
    return model


def _fold_constants(model: ir.Model) -> None:
    from onnxscript.optimizer import fold_constants

    quiet = logging.getLogger("onnxscript")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it logs every op it cannot evaluate
    try:
        fold_constants(model)
    finally:
        quiet.setLevel(level)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
