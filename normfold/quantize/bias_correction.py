"""Bias correction (Nagel et al. 2019, DFQ sec. 4.2): undo the mean shift that weight quantization adds.

A layer y = W x + b quantized to W~ = W + eps outputs W~ x + b; its expected
output moves by eps E[x]. With E[x] per input channel (the mean of the layer's
input over every sample and position of the calibration data, run in fp32),
the shift of output channel o is

    Conv (G groups, C/G inputs per group, o in group g):
        d[o] = sum_{j, k} eps[o, j, k] E[x][g C/G + j]      (k: the kernel positions)
    Gemm (y = x B or x B^T):  d = E[x] eps  or  eps E[x]

and the corrected float bias b' = b - d makes the quantized layer's expected
output the float one's. Weight quantization depends only on W, so eps read
from one quantized copy (``qdq.dequantized_weights``) is eps of the next, and
the model is quantized again with b'. Zero padding makes border positions see
fewer inputs; E[x] treats every position alike, as the paper does.

The paper's data-free variant takes E[x] from the batch norm that fed the
layer (x = ReLU(z), z ~ N(beta, gamma^2) per channel); normfold measures E[x]
on the calibration data instead, which also holds where no norm or ReLU
precedes the layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from .qdq import dequantized_weights


@dataclass
class BiasChange:
    node: str
    op: str
    channels: int
    max_shift: float          # max_o |d[o]|
    relative: float           # max_o |d[o]| / max_o |b[o]| (b before correction; inf where b == 0)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def correct_biases(model: onnx.ModelProto, qdq: onnx.ModelProto, reader=None,
                   means: dict[str, np.ndarray] | None = None) -> tuple[onnx.ModelProto, list[BiasChange]]:
    """``model`` (fp32) with the bias of every weight-quantized Conv/Gemm of ``qdq`` corrected; a copy.

    E[x] is measured on ``reader``'s batches, or given as ``means`` (tensor -> per-channel mean, e.g. from
    the frozen statistics: statistics.propagate); a layer whose input has no mean is left as it is."""
    weights = dequantized_weights(qdq)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.name in weights and n.op_type in ("Conv", "Gemm")
             and n.input[1] in inits and _plain_gemm(n)]
    if means is None:
        means = input_means(model, [n.input[0] for n in nodes], reader)
    nodes = [n for n in nodes if n.input[0] in means]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out_inits = {t.name: t for t in out.graph.initializer}
    out_nodes = {n.name: n for n in out.graph.node}
    changes = []
    for n in nodes:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        eps = weights[n.name] - w
        d = _shift(n, eps, means[n.input[0]])
        if d is None:
            continue
        target = out_nodes[n.name]
        dtype = numpy_helper.to_array(inits[n.input[1]]).dtype
        if len(n.input) > 2 and n.input[2]:
            if n.input[2] not in out_inits or sum(n.input[2] in m.input for m in out.graph.node) > 1:
                continue                                 # a bias computed, or shared with another node
            b = numpy_helper.to_array(out_inits[n.input[2]]).astype(np.float64)
            if b.shape != d.shape:
                continue                                 # a broadcast Gemm bias: left as it is
            out_inits[n.input[2]].CopyFrom(numpy_helper.from_array((b - d).astype(dtype), n.input[2]))
        else:
            b = np.zeros_like(d)
            name = _fresh(out, f"{n.name}.bias_corrected")
            out.graph.initializer.append(numpy_helper.from_array((-d).astype(dtype), name))
            while len(target.input) < 3:
                target.input.append("")
            target.input[2] = name
        peak = float(np.abs(b).max()) if b.size else 0.0
        shift = float(np.abs(d).max())
        changes.append(BiasChange(n.name, n.op_type, int(d.size), shift, shift / peak if peak > 0 else float("inf")))
    return out, changes


def _plain_gemm(n: onnx.NodeProto) -> bool:
    return n.op_type != "Gemm" or not any(a.name == "transA" and a.i for a in n.attribute)


def _shift(node: onnx.NodeProto, eps: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """d (see the module docstring), or None where the shapes do not fit the formula."""
    if node.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        e = eps if trans_b else eps.T                           # (M, K)
        return e @ mean if e.shape[1] == mean.size else None
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    out_channels, per_group = eps.shape[0], eps.shape[1]
    if per_group * groups != mean.size or out_channels % groups:
        return None
    summed = eps.reshape(out_channels, per_group, -1).sum(axis=2)      # (O, C/G): sum over kernel positions
    mean_by_out = mean.reshape(groups, per_group)[np.arange(out_channels) // (out_channels // groups)]
    return (summed * mean_by_out).sum(axis=1)


def input_means(model: onnx.ModelProto, tensors: list[str], reader) -> dict[str, np.ndarray]:
    """Per-channel (axis 1) mean of each tensor over every batch of ``reader`` (``channel_statistics``)."""
    return {t: mean for t, (mean, _) in channel_statistics(model, tensors, reader).items()}


def channel_statistics(model: onnx.ModelProto, tensors: list[str], reader) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tensor -> (per-channel mean, per-channel minimum) over every batch of ``reader``, float64, run in
    fp32 on onnxruntime's CPU provider (the tensors exposed as extra outputs of a copy of ``model``)."""
    from normfold.verify.session import open_session

    wanted = list(dict.fromkeys(tensors))
    graph_inputs = {i.name for i in model.graph.input}
    exposed = [t for t in wanted if t not in graph_inputs and t not in {o.name for o in model.graph.output}]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for t in exposed:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    session = open_session(probe.SerializeToString(), "cpu", optimization="disable", where="the model (statistics)")
    names = [o.name for o in session.get_outputs()]
    sums: dict[str, np.ndarray] = {}
    lows: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for batch in reader.batches():
        values = dict(zip(names, session.run(None, batch)))
        values.update(batch)
        for t in wanted:
            x = np.asarray(values[t], dtype=np.float64)
            per_channel = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim > 2 else x[:, :, None]
            sums[t] = sums.get(t, 0) + per_channel.sum(axis=(0, 2))
            low = per_channel.min(axis=(0, 2))
            lows[t] = np.minimum(lows[t], low) if t in lows else low
            counts[t] = counts.get(t, 0) + per_channel.shape[0] * per_channel.shape[2]
    return {t: (sums[t] / counts[t], lows[t]) for t in wanted}


def _fresh(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output} | \
            {i.name for i in model.graph.input}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}.{k}", k + 1
    return name
