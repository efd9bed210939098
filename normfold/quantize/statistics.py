"""The frozen statistics a fold consumed, found again in the folded graph, and carried forward.

A batch norm says what its output looks like: per channel c,

    y_c ~ N(beta_c, gamma_c^2)         (its running statistics fit the data)

The fold writes that norm into the conv before it, so the folded graph no
longer holds beta and gamma. ``frozen_statistics`` finds them again: it reads
every BatchNormalization of the unfolded graph (the file as shipped, or the
unfolded export), runs both graphs on one probe input and pairs each norm's
output with the folded graph's tensor that equals it up to a positive scale
and an offset per channel (what equalization, high-bias absorption and bias
correction do to it), checked numerically: a tensor's name is no evidence.
Where no tensor matches, the statistic is not used.

``propagate`` carries per-channel (mean, std, low, high) forward from the
graph input and those tensors, node by node, assuming independent channels:

    Conv/Gemm   m_o = sum_{c,k} W[o,c,k] m_c + b_o     s_o^2 = sum_{c,k} W[o,c,k]^2 s_c^2
    Relu        E[max(0,z)] = m Phi(m/s) + s phi(m/s)
                E[max(0,z)^2] = (m^2 + s^2) Phi(m/s) + m s phi(m/s)
    Add         means add, variances add
    Clip        the relu moments (min 0), the range clipped
    pooling, reshapes, Concat: moved along; BN outputs: reset to (beta, |gamma|)

and a tensor's range is [m - k s, m + k s] (k = ``sigmas``) intersected with
what the op allows (>= 0 after Relu, the Clip bounds, the sum of the inputs'
ranges for Add). Ops it does not know end the propagation there: their
outputs have no statistics. Used for bias correction without data (E[x] of a
layer's input) and for data-free activation ranges (DFQ, Nagel et al. 2019).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass
class Moments:
    mean: np.ndarray        # (C,) float64
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @staticmethod
    def gaussian(mean, std, sigmas: float) -> "Moments":
        mean, std = np.asarray(mean, np.float64), np.abs(np.asarray(std, np.float64))
        return Moments(mean, std, mean - sigmas * std, mean + sigmas * std)

    def repeat(self, k: int) -> "Moments":
        return Moments(*(np.repeat(a, k) for a in (self.mean, self.std, self.low, self.high)))


def frozen_statistics(unfolded: onnx.ModelProto, folded: onnx.ModelProto, probe: np.ndarray) -> dict[str, tuple]:
    """folded tensor name -> (mean, std) per channel: the statistics of the BatchNormalization whose
    output it is on ``probe``, up to a positive scale and an offset per channel. Equalization divides
    channel c by s_c, high-bias absorption and bias correction shift it by o_c: a tensor
    b = (a - o) / s of a norm's output a ~ N(beta, gamma^2) has (mean, std) = ((beta - o) / s, |gamma| / s)."""
    norms = {}
    inits = {t.name: t for t in unfolded.graph.initializer}
    for n in unfolded.graph.node:
        if n.op_type == "BatchNormalization" and n.input[1] in inits and n.input[2] in inits:
            gamma = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
            beta = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
            norms[n.output[0]] = (beta, np.abs(gamma))
    if not norms:
        return {}
    before = _all_tensors(unfolded, probe, set(norms))
    after = _all_tensors(folded, probe, None)
    by_shape: dict[tuple, list[str]] = {}
    for name, value in after.items():
        if value.ndim >= 2:
            by_shape.setdefault(value.shape, []).append(name)
    out = {}
    for name, value in before.items():
        beta, gamma = norms[name]
        if value.ndim < 2 or value.shape[1] != beta.size:
            continue
        for candidate in by_shape.get(value.shape, []):
            fit = channel_affine(value, after[candidate])
            if fit is not None:
                scale, offset = fit
                out[candidate] = ((beta - offset) / scale, gamma / scale)
    return out


def channel_affine(a: np.ndarray, b: np.ndarray, tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, o), s > 0, with a[:, c] == s_c b[:, c] + o_c everywhere within ``tol`` of max |a|, or None.
    With one value per channel (a (1, C) tensor) an offset cannot be told from a scale: o = 0 then."""
    c = a.shape[1]
    x = np.moveaxis(a, 1, 0).reshape(c, -1)
    y = np.moveaxis(b, 1, 0).reshape(c, -1)
    if x.shape[1] > 1:
        xm, ym = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    else:
        xm, ym = np.zeros((c, 1)), np.zeros((c, 1))
    xc, yc = x - xm, y - ym
    yy = np.einsum("ij,ij->i", yc, yc)
    s = np.where(yy > 0, np.einsum("ij,ij->i", xc, yc) / np.where(yy > 0, yy, 1.0), 1.0)
    o = (xm - s[:, None] * ym)[:, 0]
    peak = float(np.abs(x).max()) or 1.0
    if np.any(s <= 0) or float(np.abs(x - s[:, None] * y - o[:, None]).max()) > tol * peak:
        return None
    return s, o


def _all_tensors(model: onnx.ModelProto, probe: np.ndarray, wanted: set[str] | None) -> dict[str, np.ndarray]:
    """Every float32 node output of ``model`` on ``probe`` (only ``wanted`` when given), float64."""
    from normfold.verify.session import open_session

    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {v.name for v in [*inferred.graph.value_info, *inferred.graph.output]
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    names = [o for n in model.graph.node for o in n.output if o in floats and (wanted is None or o in wanted)]
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = open_session(exposed.SerializeToString(), "cpu", optimization="disable", where="the probe")
    values = session.run(names, {session.get_inputs()[0].name: probe.astype(np.float32)})
    return {n: np.asarray(v, np.float64) for n, v in zip(names, values)}


def propagate(model: onnx.ModelProto, frozen: dict[str, tuple], input_moments: Moments,
              sigmas: float) -> dict[str, Moments]:
    """Per-channel moments of every tensor the rules reach (see the module docstring)."""
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    known: dict[str, Moments] = {model.graph.input[0].name: input_moments}
    for n in model.graph.node:
        m = _rule(n, known, inits, sigmas)
        if m is not None and n.output:
            known[n.output[0]] = m
        for o in n.output[:1]:
            if o in frozen:                      # a folded norm's output: its own statistics
                beta, gamma = frozen[o]
                known[o] = Moments.gaussian(beta, gamma, sigmas)
    return known


def _attr(n: onnx.NodeProto, name: str, default=None):
    for a in n.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _rule(n: onnx.NodeProto, known: dict, inits: dict, sigmas: float) -> Moments | None:
    x = known.get(n.input[0]) if n.input else None
    op = n.op_type
    if op in ("Identity", "Dropout", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"):
        return x
    if op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
        return x            # the channel count is checked by the consumer (_fits)
    if x is None:
        return None
    if op == "Relu":
        mean, var = relu_moments(x.mean, x.std)
        return Moments(mean, np.sqrt(var), np.maximum(x.low, 0), np.maximum(x.high, 0))
    if op == "Clip":
        lo = _bound(n, 1, inits, "min", -np.inf)
        hi = _bound(n, 2, inits, "max", np.inf)
        if lo != 0.0:
            return None
        mean, var = relu_moments(x.mean, x.std)
        return Moments(np.minimum(mean, hi), np.sqrt(var), np.clip(x.low, lo, hi), np.clip(x.high, lo, hi))
    if op == "Add" and len(n.input) == 2:
        y = known.get(n.input[1])
        if y is None and n.input[1] in inits and inits[n.input[1]].size == 1:
            c = float(inits[n.input[1]].reshape(-1)[0])
            return Moments(x.mean + c, x.std, x.low + c, x.high + c)
        if y is None or y.mean.shape != x.mean.shape:
            return None
        mean, std = x.mean + y.mean, np.sqrt(x.std ** 2 + y.std ** 2)
        return Moments(mean, std, np.maximum(x.low + y.low, mean - sigmas * std),
                       np.minimum(x.high + y.high, mean + sigmas * std))
    if op == "Concat" and _attr(n, "axis") == 1:
        parts = [known.get(i) for i in n.input]
        if any(p is None for p in parts):
            return None
        return Moments(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("mean", "std", "low", "high")))
    if op in ("Conv", "Gemm") and len(n.input) > 1 and n.input[1] in inits:
        return _linear(n, x, inits, sigmas)
    return None


def _bound(n, index, inits, attr, default) -> float:
    if len(n.input) > index and n.input[index]:
        value = inits.get(n.input[index])
        return float(value.reshape(-1)[0]) if value is not None else math.nan
    return float(_attr(n, attr, default))


def _linear(n: onnx.NodeProto, x: Moments, inits: dict, sigmas: float) -> Moments | None:
    w = inits[n.input[1]]
    b = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if n.op_type == "Gemm":
        if _attr(n, "transA", 0):
            return None
        w = w if _attr(n, "transB", 0) else w.T                              # (M, K)
        k = w.shape[1]
        if x.mean.size != k:
            if k % x.mean.size:
                return None
            x = x.repeat(k // x.mean.size)                                     # Flatten of (N, C, H, W)
        w = w * _attr(n, "alpha", 1.0)
        mean, var = w @ x.mean, (w ** 2) @ (x.std ** 2)
        if b is not None:
            mean = mean + _attr(n, "beta", 1.0) * np.broadcast_to(b.reshape(-1), mean.shape)
        return Moments.gaussian(mean, np.sqrt(var), sigmas)
    groups = _attr(n, "group", 1)
    out_channels, per_group = w.shape[0], w.shape[1]
    if per_group * groups != x.mean.size or out_channels % groups:
        return None
    flat = w.reshape(out_channels, per_group, -1).sum(axis=2)
    flat_sq = (w.reshape(out_channels, per_group, -1) ** 2).sum(axis=2)
    group_of = np.arange(out_channels) // (out_channels // groups)
    m_in = x.mean.reshape(groups, per_group)[group_of]
    v_in = (x.std ** 2).reshape(groups, per_group)[group_of]
    mean = (flat * m_in).sum(axis=1) + (b.reshape(-1) if b is not None else 0.0)
    var = (flat_sq * v_in).sum(axis=1)
    return Moments.gaussian(mean, np.sqrt(var), sigmas)


def relu_moments(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E[max(0, z)], Var[max(0, z)]) for z ~ N(mean, std^2), per channel; std 0 gives max(0, mean), 0."""
    from math import erf

    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    safe = np.where(std > 0, std, 1.0)
    a = mean / safe
    cdf = 0.5 * (1.0 + np.vectorize(erf)(a / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    first = mean * cdf + safe * pdf
    second = (mean ** 2 + safe ** 2) * cdf + mean * safe * pdf
    first = np.where(std > 0, first, np.maximum(mean, 0.0))
    var = np.where(std > 0, np.maximum(second - first ** 2, 0.0), 0.0)
    return first, var
