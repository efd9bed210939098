"""An .onnx file and its external data: read with every reference checked, written in one file when it fits.

A protobuf message cannot exceed 2 GB, so larger models (torch.onnx writes
them so) keep their tensors in *external data* files beside the .onnx: each
tensor records a ``location`` relative to the model's folder, an ``offset``
and a ``length``.

``load_external_data(proto, path)`` reads them into a model loaded from
``path`` without its data (all of them, or those of small tensors only), after
checking every reference: a location that is absolute or leaves the model's
folder (``../x``, or a symlink out of it), a missing data file, and a file too
short for the tensor it holds (truncated) are an ``OnnxFileError`` naming the
file and the tensor, before a byte is read.

``save(proto, path)`` writes one file when the model surely fits in 2 GB;
otherwise every initializer of ``EXTERNAL_MIN`` bytes or more goes to
``<name>.data`` beside it (recorded by that relative name, each tensor at a
4 KiB-aligned offset). Each tensor's bytes are written straight from the
model, one tensor at a time: the model is never copied nor serialized whole.
Both files are written atomically (``normfold.atomic``), the data file moved
into place before the model that refers to it. ``check`` runs on the
``skeleton()`` of what is written: the model with its large initializers
declared as inputs of their type and shape (what onnx.checker and shape
inference read), which neither copies the weights nor looks for a data file.
"""
from __future__ import annotations

import math
import os
from pathlib import Path, PurePath
from typing import Callable, Iterator

import onnx
from onnx import TensorProto, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model, load_external_data_for_tensor

from .atomic import atomic_path, write_bytes

MAX_BYTES = 2**31 - 1   # protobuf cannot read or write a message beyond 2 GB
EXTERNAL_MIN = 1024     # an initializer of this many bytes or more goes to the data file of a model over 2 GB
SMALL = 64              # initializers up to this many elements keep their values in a skeleton()
ALIGNMENT = 4096        # offsets in the data file (a page: onnxruntime can map each tensor in place)
_PACKED = {TensorProto.INT4, TensorProto.UINT4, TensorProto.FLOAT4E2M1}   # two numbers a byte
_FIELD_WIDTH = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.COMPLEX64: 8, TensorProto.COMPLEX128: 16}


class OnnxFileError(ValueError):
    """An .onnx file's external data cannot be read, or a model cannot be written; one line naming the file."""


def all_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor ``graph`` stores: initializers, tensor attributes, those of nested graphs."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from all_tensors(g)


def external_tensors(proto: onnx.ModelProto) -> list[TensorProto]:
    """The tensors of ``proto`` whose data lies in external files."""
    return [t for t in all_tensors(proto.graph) if t.data_location == TensorProto.EXTERNAL]


def load_external_data(proto: onnx.ModelProto, path: str | os.PathLike, max_elements: int | None = None) -> None:
    """Read the external data of ``proto`` (loaded from ``path`` without it) into it, every reference
    checked; with ``max_elements``, only that of tensors this small (the others stay in their files)."""
    external = external_tensors(proto)
    if not external:
        return
    check_external_data(proto, path)
    if max_elements is None:
        load_external_data_for_model(proto, str(Path(path).parent))
        return
    for t in external:
        if math.prod(t.dims) <= max_elements:
            load_external_data_for_tensor(t, str(Path(path).parent))
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]


def check_external_data(proto: onnx.ModelProto, path: str | os.PathLike) -> list[Path]:
    """The data files ``proto`` (loaded from ``path``) refers to, or OnnxFileError: see the module docstring."""
    path = Path(path)
    folder = Path(os.path.realpath(path.parent))
    sizes: dict[Path, int] = {}
    for t in external_tensors(proto):
        where = f"{path}: tensor {t.name or '(unnamed)'!r}"
        try:
            info = ExternalDataInfo(t)
        except ValueError as exc:   # an offset or length that is not a non-negative integer
            raise OnnxFileError(f"{where} has a bad external data reference: {exc}") from None
        location = info.location or ""
        if not location:
            raise OnnxFileError(f"{where} is stored externally but names no data file")
        file = folder / location
        if PurePath(location).is_absolute() or ".." in PurePath(location).parts or \
                folder not in Path(os.path.realpath(file)).parents:
            raise OnnxFileError(f"{where} keeps its data at {location!r}, outside the model's folder {path.parent}")
        if file not in sizes:
            if not file.is_file():
                raise OnnxFileError(f"{where} keeps its data in {path.parent / location}, which "
                                    f"{'is not a file' if file.exists() else 'does not exist'}")
            sizes[file] = file.stat().st_size
        need, offset = _nbytes(t), info.offset or 0
        if info.length is not None and need is not None and info.length != need:
            raise OnnxFileError(f"{where} of type {TensorProto.DataType.Name(t.data_type)} and shape {list(t.dims)} "
                                f"needs {need} bytes, its external data records {info.length}")
        end = offset + (info.length if info.length is not None else need or 0)
        if end > sizes[file]:
            raise OnnxFileError(f"{where} needs bytes {offset} to {end} of {path.parent / location}, which has "
                                f"{sizes[file]}: the data file is truncated")
    return list(sizes)


def data_files(path: str | os.PathLike) -> list[Path]:
    """The external data files the .onnx file ``path`` refers to, for a check that no output overwrites
    one ([] when it has none, or cannot be read: reading it later says why)."""
    try:
        return check_external_data(onnx.load(str(path), load_external_data=False), path)
    except Exception:
        return []


def _nbytes(t: TensorProto) -> int | None:
    """The bytes of ``t``'s data in raw form (None for strings and unknown types)."""
    n = math.prod(t.dims)
    if t.data_type in _PACKED:
        return (n + 1) // 2
    try:
        return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type != TensorProto.STRING \
            else None
    except (KeyError, ValueError, TypeError):
        return None


# ---- writing ------------------------------------------------------------------------------------

def size_bound(proto: onnx.ModelProto) -> int:
    """An upper bound of ``proto``'s serialized size, computed without serializing it: each tensor's
    numbers at their widest encoding (a varint integer: 10 bytes), every other record at 4 KiB."""
    g = proto.graph
    total = 4096 * (len(g.node) + len(g.input) + len(g.output) + len(g.value_info) + len(proto.functions) + 1)
    for node in g.node:
        for a in node.attribute:
            total += 10 * (len(a.ints) + len(a.floats)) + sum(len(s) for s in a.strings)
    for t in all_tensors(g):
        total += 256 + len(t.name) + _bytes_bound(t)
    return total


def _bytes_bound(t: TensorProto) -> int:
    if t.data_location == TensorProto.EXTERNAL:
        return 0
    if t.data_type == TensorProto.STRING:
        return t.ByteSize()
    n = math.prod(t.dims)
    if t.HasField("raw_data"):
        return _nbytes(t) or t.ByteSize()
    return n * _FIELD_WIDTH.get(t.data_type, 10)


def fits(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` surely serializes under protobuf's 2 GB limit."""
    return size_bound(proto) <= MAX_BYTES


def data_path(path: str | os.PathLike) -> Path:
    """Where ``save`` puts the external data of ``path``: ``<name>.data`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def save(proto: onnx.ModelProto, path: str | os.PathLike,
         check: Callable[[onnx.ModelProto], None] | None = None) -> list[Path]:
    """Write ``proto`` (not modified) to ``path``, with its data beside it when it does not fit in one
    file; the files written. ``check(model)`` runs on the skeleton() of what will be written, before any
    file is."""
    path = Path(path)
    if fits(proto):
        if check:
            check(skeleton(proto))   # the checker copies what it is given, twice (bytes, then C++)
        write_bytes(path, proto.SerializeToString())
        return [path]
    data = data_path(path)
    model, placed = _externalized(proto, data.name)
    if model.ByteSize() > MAX_BYTES:   # exact: what is left is small, but for node attributes
        raise OnnxFileError(f"{path}: the model is over 2 GB even with its initializers in {data.name} "
                            "(its node attributes hold too much)")
    if check:
        check(skeleton(model))   # in memory, the checker would look for the data file in the working directory
    with atomic_path(path) as tmp_model, atomic_path(data) as tmp_data:   # data moved first (inner block)
        with open(tmp_data, "wb") as f:
            for tensor, offset in placed:
                f.seek(offset)
                f.write(tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes())
        tmp_model.write_bytes(model.SerializeToString())
    return [path, data]


def _externalized(proto: onnx.ModelProto, location: str) -> tuple[onnx.ModelProto, list[tuple[TensorProto, int]]]:
    """``proto`` with each large initializer replaced by a reference into ``location``, and (tensor, offset)
    of each: what the data file holds. Small tensors are copied; large ones are not."""
    out = onnx.ModelProto()
    copy_fields(proto, out, skip=("graph",))
    copy_fields(proto.graph, out.graph, skip=("initializer",))
    placed, offset = [], 0
    for t in proto.graph.initializer:
        size = _nbytes(t) if t.data_location != TensorProto.EXTERNAL else None
        if size is None or size < EXTERNAL_MIN:
            out.graph.initializer.append(t)
            continue
        ref = out.graph.initializer.add(name=t.name, data_type=t.data_type, doc_string=t.doc_string)
        ref.dims.extend(t.dims)
        ref.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(size))):
            ref.external_data.add(key=key, value=value)
        placed.append((t, offset))
        offset += -(-size // ALIGNMENT) * ALIGNMENT
    return out, placed


def skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the bytes of its large initializers (and of those kept in external data): each
    becomes a graph input of its type and shape (what the checker and shape inference need; they read
    the values of small, shape-like constants only)."""
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
        if math.prod(t.dims) <= SMALL and t.data_location != TensorProto.EXTERNAL:
            g.initializer.append(t)
        elif t.name not in declared:
            tensor_type = g.input.add(name=t.name).type.tensor_type
            tensor_type.elem_type = t.data_type
            dims = tensor_type.shape.dim
            for d in t.dims:
                dims.add().dim_value = d
    return out


def copy_fields(source, target, skip: tuple[str, ...]) -> None:
    """Every field ``source`` sets, but those in ``skip``, copied into ``target``."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.type == field.TYPE_MESSAGE:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
