"""Population statistics for the BatchNormalization nodes of an ONNX graph.

A BatchNormalization node in inference mode computes

    y = scale (x - input_mean) / sqrt(input_var + epsilon) + B

with ``input_mean``/``input_var`` initializers (what an exporter copies from
running_mean/running_var: the unbiased variance, torch's convention, which is
kept here). Each node's input x is read by exposing it as an extra graph
output of an in-memory copy and running that copy on onnxruntime's CPU
provider (graph optimizations off) over the data; the values, float32 as the
graph computes them, are merged in float64 (``moments.py``).

Layer by layer in order: a node's statistics are taken with every
BatchNormalization upstream of it already recalibrated. Pass 1 reads every
node on the graph as given (the health report); a node whose upstream
BatchNormalizations (its ancestors, found from the graph's edges) are all
final is final. Each further pass rewrites the graph with the new statistics
and reads the nodes that became ready, so the passes number the longest chain
of BatchNormalizations (its BN depth), at most one per node.

Nodes whose mean/var are not initializers, or in training mode (training_mode
= 1 from opset 14, more than one output in opsets 7-13, is_test = 0 in opset
6), are left as they are (listed in the report as skipped, with the reason). An initializer
another node also uses is not edited: the node gets a copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from .conventions import Frozen, Kept
from .data import as_batches
from .errors import RecalibrationError
from .health import layer_health
from .moments import ChannelMoments
from .report import HealthReport, RecalibrationReport

_BN = "BatchNormalization"


@dataclass
class _Node:
    index: int                   # position in graph.node
    name: str
    x: str                       # the input read
    ancestors: frozenset         # indices of the BatchNormalization nodes upstream
    channels: int

    @property
    def label(self) -> str:
        return f"{self.name} (BatchNormalization)"


def recalibrate_onnx(proto: onnx.ModelProto, data, *, batch_size: int | None = None
                     ) -> tuple[onnx.ModelProto, RecalibrationReport]:
    """(a copy of ``proto`` with every BatchNormalization's mean/var replaced by population statistics,
    the report). ``data``: see ``data.as_batches`` (arrays in the graph's input order)."""
    batches = as_batches(data, batch_size)
    graph = onnx.ModelProto()
    graph.CopyFrom(proto)
    nodes, skipped = _nodes(graph)
    first, samples = _pass(graph, nodes, batches)
    health = _health(graph, nodes, first, samples, skipped)
    final, changes, passes, measured = set(), {}, 1, first
    while len(final) < len(nodes):
        ready = [n for n in nodes if n.index not in final and n.ancestors <= final]
        if final:   # a later pass: the graph holds the new statistics of every final node
            measured, _ = _pass(graph, ready, batches)
            passes += 1
        for n in ready:
            changes[n.index] = layer_health(n.name, _BN, _SPEC(n.channels), _frozen(graph, n), measured[n.index])
            _write(graph, n, measured[n.index])
            final.add(n.index)
    return graph, RecalibrationReport([changes[n.index] for n in nodes], health, passes, samples, skipped=skipped)


def onnx_health(proto: onnx.ModelProto, data, *, batch_size: int | None = None) -> HealthReport:
    """Every BatchNormalization's frozen statistics against the population statistics of its input."""
    nodes, skipped = _nodes(proto)
    first, samples = _pass(proto, nodes, as_batches(data, batch_size))
    return _health(proto, nodes, first, samples, skipped)


def _SPEC(channels: int) -> Kept:
    return Kept(channels, mean=True, var=True)


def _nodes(proto: onnx.ModelProto) -> tuple[list[_Node], list[str]]:
    """The BatchNormalization nodes to recalibrate (with their BN ancestors), and why others are not."""
    inits = {i.name for i in proto.graph.initializer}
    upstream: dict[str, frozenset] = {}
    nodes, skipped, bns = [], [], set()
    for k, node in enumerate(proto.graph.node):
        above = frozenset().union(*(upstream.get(i, frozenset()) for i in node.input if i))
        name = node.name or f"node {k} (output {node.output[0]})"
        if node.op_type == _BN and node.domain in ("", "ai.onnx"):
            attrs = {a.name: a.i for a in node.attribute}
            training = (attrs.get("training_mode", 0) or len([o for o in node.output if o]) > 1   # opset 14+; 7-13
                        or attrs.get("is_test", 1) == 0)                                       # opset 6
            if training:
                skipped.append(f"{name}: in training mode (normalizes with batch statistics)")
            elif len(node.input) < 5 or node.input[3] not in inits or node.input[4] not in inits:
                skipped.append(f"{name}: its mean/var are computed in the graph, not initializers")
            else:
                channels = int(np.prod(_init(proto, node.input[3]).dims))
                nodes.append(_Node(k, name, node.input[0], above & bns, channels))
                bns.add(k)
                above = above | {k}
        for out in node.output:
            upstream[out] = above
    if not nodes:
        why = f" ({skipped[0]})" if skipped else ""
        raise RecalibrationError("the ONNX graph has no BatchNormalization node with statistics to recalibrate"
                                 + why)
    return nodes, skipped


def _init(proto, name) -> onnx.TensorProto:
    return next(i for i in proto.graph.initializer if i.name == name)


def _frozen(proto, n: _Node) -> Frozen:
    node = proto.graph.node[n.index]
    mean, var = (torch.from_numpy(numpy_helper.to_array(_init(proto, node.input[i])).astype(np.float64).reshape(-1))
                 for i in (3, 4))
    return Frozen(mean, var, None)


def _pass(proto, nodes: list[_Node], batches) -> tuple[dict[int, ChannelMoments], int]:
    """Moments of each node's input over the data: the inputs exposed as outputs, onnxruntime CPU."""
    from normfold.verify import SessionError
    from normfold.verify.session import open_session, run_session

    exposed = onnx.ModelProto()
    exposed.CopyFrom(proto)
    outputs = {o.name for o in exposed.graph.output}
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*exposed.graph.value_info, *exposed.graph.input, *exposed.graph.output]}
    for n in nodes:
        if n.x not in outputs:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(
                n.x, types.get(n.x) or onnx.TensorProto.FLOAT, None))
            outputs.add(n.x)
    try:
        session = open_session(exposed.SerializeToString(), "cpu", optimization="disable", where="the ONNX model")
    except SessionError as exc:
        raise RecalibrationError(str(exc)) from exc
    names = list(dict.fromkeys(n.x for n in nodes))
    moments = {n.index: ChannelMoments(n.channels) for n in nodes}
    samples = 0
    for b, batch in enumerate(batches()):
        arrays = tuple(t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in batch)
        try:
            values = dict(zip(names, run_session(session, arrays, names)))
        except SessionError as exc:
            raise RecalibrationError(f"DATA batch {b} (inputs of shape "
                                     f"{', '.join(str(list(a.shape)) for a in arrays)}): {exc}") from exc
        for n in nodes:
            x = torch.from_numpy(np.asarray(values[n.x]))
            if x.dim() < 2 or x.shape[1] != n.channels:
                raise RecalibrationError(f"{n.label} keeps statistics of {n.channels} channels but its input has "
                                         f"shape {list(x.shape)} on DATA batch {b}")
            if not bool(torch.isfinite(x).all()):
                raise RecalibrationError(f"{n.label}: its input holds {int((~torch.isfinite(x)).sum())} NaN or "
                                         f"infinite values on DATA batch {b}: no statistics can be computed")
            moments[n.index].update(x)
        samples += len(arrays[0]) if arrays and arrays[0].ndim else 0
    for n in nodes:
        if moments[n.index].count < 2:
            raise RecalibrationError(f"{n.label} saw {moments[n.index].count} values per channel over {samples} "
                                     "samples; an unbiased variance needs at least 2: give more samples")
    return moments, samples


def _health(proto, nodes, first, samples, skipped) -> HealthReport:
    layers = [layer_health(n.name, _BN, _SPEC(n.channels), _frozen(proto, n), first[n.index]) for n in nodes]
    return HealthReport(layers, samples, skipped=skipped)


def _write(proto, n: _Node, moments: ChannelMoments) -> None:
    """The node's mean/var initializers := population mean and unbiased variance (their dtype and shape);
    an initializer some other input also reads is copied under a new name first."""
    node = proto.graph.node[n.index]
    uses = {}
    for other in proto.graph.node:
        for i in other.input:
            uses[i] = uses.get(i, 0) + 1
    for slot, value in ((3, moments.mean), (4, moments.variance(unbiased=True))):
        old = _init(proto, node.input[slot])
        array = value.numpy().astype(numpy_helper.to_array(old).dtype).reshape(numpy_helper.to_array(old).shape)
        if uses.get(old.name, 0) > 1:
            name = f"{old.name}__recalibrated_{n.index}"
            proto.graph.initializer.append(numpy_helper.from_array(array, name))
            node.input[slot] = name
        else:
            old.CopyFrom(numpy_helper.from_array(array, old.name))
