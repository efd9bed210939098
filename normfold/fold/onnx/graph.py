"""What every part of the ONNX pass asks of an onnx-ir graph: constants, names, uses, op versions."""
from __future__ import annotations

import ast
import functools

import numpy as np
import onnx
import onnx_ir as ir
import torch

ONNX_DOMAINS = ("", "ai.onnx")
# the float element types the pass folds, as torch dtypes (ir.DataType equals onnx.TensorProto's numbers)
FLOAT_DTYPES: dict[int, torch.dtype] = {ir.DataType.FLOAT: torch.float32, ir.DataType.FLOAT16: torch.float16,
                                        ir.DataType.DOUBLE: torch.float64}
NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def label(node: ir.Node) -> str:
    """The node's name; an unnamed node by its op and first output tensor."""
    return node.name or f"{node.op_type}({node.outputs[0].name if node.outputs else ''})"


def module_path(node: ir.Node) -> str | None:
    """The PyTorch module a node was exported from, as the dynamo exporter records it (metadata
    ``pkg.torch.onnx.name_scopes``: the module path's prefixes, then the op); None without it or
    for an op of the model's own forward."""
    scopes = node.metadata_props.get(NAME_SCOPES)
    if not scopes:
        return None
    try:
        names = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return None
    return names[-2] if isinstance(names, list) and len(names) >= 2 and isinstance(names[-2], str) and names[-2] else None


def named(nodes) -> str:
    """Nodes as the report names them: their names joined by ",", after the modules they were
    exported from where the file records those ("features.0.1 (node_batch_norm_3)")."""
    labels = ",".join(label(n) for n in nodes)
    paths = list(dict.fromkeys(p for p in map(module_path, nodes) if p))
    return f"{','.join(paths)} ({labels})" if paths else labels


def is_constant(value: ir.Value | None) -> bool:
    """Whether the value is a stored tensor (not computed, not overridable as a graph input)."""
    return value is not None and value.const_value is not None and not value.is_graph_input()


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's stored tensor, not to be written (it may be the file's own buffer); None for anything
    computed or overridable (a graph input)."""
    if not is_constant(value):
        return None
    tensor = value.const_value
    if type(tensor) is ir.TensorProtoTensor:  # as read from the file: its bytes as they are stored
        proto = tensor.raw
        dtype = _RAW_DTYPES.get(proto.data_type)
        if dtype is not None and proto.HasField("raw_data"):
            return np.frombuffer(proto.raw_data, dtype).reshape(proto.dims)
        numbers = proto.float_data
        if proto.data_type == ir.DataType.FLOAT and numbers:  # as paddle2onnx stores them
            n = len(numbers)  # numpy's generic conversion costs 2 us whatever the size; a short one is read in a loop
            array = np.fromiter(numbers, np.float32, n) if n <= 64 else np.asarray(numbers, dtype=np.float32)
            return array.reshape(tuple(proto.dims))
    return tensor.numpy()


# the stored (little-endian) layout of the numeric types the pass reads; other types go through onnx-ir
_RAW_DTYPES = {ir.DataType.FLOAT: np.dtype("<f4"), ir.DataType.DOUBLE: np.dtype("<f8"),
               ir.DataType.FLOAT16: np.dtype("<f2"), ir.DataType.INT64: np.dtype("<i8"),
               ir.DataType.INT32: np.dtype("<i4")}


def float64(value: ir.Value) -> torch.Tensor:
    """A constant as a float64 tensor (the caller checked it is one)."""
    return torch.from_numpy(constant(value).astype(np.float64))  # a new, writable array


def users(value: ir.Value) -> list[ir.Node]:
    """Every node reading ``value``, once per read, subgraphs included."""
    return [use.node for use in value.uses()]


def sole_user(value: ir.Value) -> ir.Node | None:
    """The one node reading ``value`` (once), when nothing else does and it is not a graph output."""
    readers = users(value)
    if len(readers) != 1 or value.is_graph_output():
        return None
    return readers[0]


def describe_users(value: ir.Value) -> str:
    names = [f"{label(n)} ({n.op_type})" for n in users(value)]
    if value.is_graph_output():
        names.append("the graph output")
    return ", ".join(names) or "nothing"


def attr(node: ir.Node, name: str, default):
    a = node.attributes.get(name)
    return default if a is None else a.value


def op_version(node: ir.Node, opsets: dict[str, int]) -> int | None:
    """The version of the op's definition in force (its ``since_version``); None when ONNX has none."""
    if node.domain not in ONNX_DOMAINS:
        return None
    opset = opsets.get("", opsets.get("ai.onnx"))
    return None if opset is None else _since_version(node.op_type, opset)


@functools.lru_cache(maxsize=1024)
def _since_version(op_type: str, opset: int) -> int | None:
    try:
        return onnx.defs.get_schema(op_type, opset, "").since_version
    except Exception:  # onnx.defs.SchemaError: no such op at this opset
        return None


def is_onnx(node: ir.Node, *op_types: str) -> bool:
    return node.domain in ONNX_DOMAINS and node.op_type in op_types


# The op versions (since_version) whose definition the pass was written against. A node of
# another version (an older broadcast rule, a future redefinition) is not guessed at: its site is
# skipped with the reason.
_ELEMENTWISE = frozenset({7, 13, 14})
_LATER = frozenset({13, 21, 23, 24, 25})
KNOWN_VERSIONS: dict[str, frozenset[int]] = {
    "Add": _ELEMENTWISE, "Sub": _ELEMENTWISE, "Mul": _ELEMENTWISE, "Div": _ELEMENTWISE,
    "BatchNormalization": frozenset({7, 9, 14, 15}),
    "Reshape": frozenset({5, 14, 19} | _LATER),
    "Transpose": frozenset({1} | _LATER),
    "Squeeze": frozenset({1, 11} | _LATER), "Unsqueeze": frozenset({1, 11} | _LATER),
    "Flatten": frozenset({1, 9, 11} | _LATER),
    "Identity": frozenset({1, 14, 16, 19} | _LATER),
    "MatMul": frozenset({1, 9, 13}),
    "Conv": frozenset({1, 11, 22}), "ConvTranspose": frozenset({1, 11, 22}),
    "Gemm": frozenset({7, 9, 11, 13}),
}


def unknown_version(node: ir.Node, version: int | None, opset: int | None) -> str | None:
    """Why the pass will not interpret this node's op version, or None when it knows it."""
    if version in KNOWN_VERSIONS.get(node.op_type, ()):
        return None
    known = ", ".join(map(str, sorted(KNOWN_VERSIONS.get(node.op_type, ()))))
    return (f"{label(node)} is {node.op_type}-{version} (opset {opset}), a version of the op this pass does not know "
            f"(it knows {node.op_type}-{{{known}}})")


def sweep(graph: ir.Graph) -> None:
    """Drop what nothing reads: nodes whose outputs feed no node and no graph output (last
    first, so a dead chain goes in one sweep), then such initializers. What the fold leaves
    behind: a folded norm's parameters, a layer's old weight, a shape computation made constant.

    onnx-ir's RemoveUnusedNodesPass does this too, and more (it also trims optional outputs,
    looking up every node's schema): a tenth of the fold's time on a 150-node model.
    """
    outputs = frozenset(graph.outputs)
    for node in reversed(graph):
        if not any(o in outputs or o.uses() for o in node.outputs):
            graph.remove(node, safe=True)
    for name, value in list(graph.initializers.items()):
        if not value.uses() and value not in outputs and not value.is_graph_input():
            del graph.initializers[name]
