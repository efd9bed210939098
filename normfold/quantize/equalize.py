"""Cross-layer equalization and high-bias absorption (Nagel et al. 2019, "Data-Free Quantization", DFQ)
on a folded fp32 ONNX graph, in float64 numpy.

**What pairs.** A producer Conv/Gemm P (weight W1, bias b1; any kernel, stride, dilation, padding,
groups), then at most one f in {Relu, LeakyRelu, PRelu}, then a consumer Conv/Gemm Q (weight W2)
reading that tensor as its data input. P's output (and f's) must feed exactly that one node and be no
graph output; every weight and bias an initializer read by its node alone.

**Equalization.** f is positively homogeneous: f(s x) = s f(x) for s > 0 (a PRelu's slope, per
channel or scalar, is untouched). So for s_i > 0

    W1[i] /= s_i,  b1[i] /= s_i,  W2[:, i] *= s_i

leaves Q's output unchanged, exactly in real arithmetic. For a grouped Q with G groups over C
input channels, "W2[:, i]" is in-group input index i % (C/G) of the output channels of group
i // (C/G) (depthwise, G == C: output channel i's own kernel). For a Gemm, a channel is a row of B
with transB=1 and a column without. DFQ picks

    s_i = sqrt(r1_i / r2_i)

with r1_i = max|W1[i]| (P's output channel i) and r2_i = max|W2[:, i]| (Q's weights reading i): then
both become sqrt(r1_i r2_i), the ranges of the two layers are equal channel by channel, and a
per-tensor weight quantizer wastes less of its range on P's largest channel. A zero range leaves
s_i = 1. A layer in a chain P -> Q -> R is the consumer of one pair and the producer of the next, so
the pairs are swept in turn until max_i |log s_i| < tolerance in a whole sweep (or max_iterations).
The algebra runs on float64 copies; each changed tensor is cast to its own dtype once at the end.

``Pair.range_ratio_before/after`` summarise P's weight, the one whose per-tensor range the
equalization fixes: median over output channels of r1_i / max_j r1_j (1.0: every channel uses the
whole range; near 0: most channels are tiny next to the largest).

**Refused, with a reason, once per producer** (every Conv/Gemm that is not the first of a pair):
an activation that is not positively homogeneous (Clip/ReLU6, HardSwish, HardSigmoid, Sigmoid, Tanh,
x * g(x) gates as SiLU/HardSwish decompose into, ...), a branch (an output read by two nodes would
reach one of them unscaled), a graph output, a next node that is not a Conv/Gemm (Add, Concat,
pooling; a Gemm after Flatten/Reshape, whose inputs mix channels with positions), a weight that is not
an initializer or is shared, a consumer Gemm with transA, an op version the pass does not know.

**High-bias absorption** (DFQ: "absorbing high biases"), for a pair with f = Relu. Given a lower
bound m_i of P's pre-activation output channel i, let c_i = max(0, m_i). For every input with x_i >= c_i,
Relu(x_i - c_i) = Relu(x_i) - c_i, and Q's weights map the constant c back into its bias:

    b1' = b1 - c,   b2'[o] = b2[o] + sum_{i, k} W2[o, i, k] c_i   (Gemm: b2' = b2 + alpha W2 c / beta)

This is exact for every input whose pre-activations stay >= c_i, and only approximate for others
(an x_i < c_i is clipped at 0 where Relu(x_i) - c_i would go below). A Q with zero padding also breaks
it: a padded position reads 0 after the shift, c_i before, so Q's border outputs change. Such a Q
is skipped unless ``allow_padding=True`` (as DFQ does it: exact inside, approximate at the border).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from normfold.fold.onnx.graph import KNOWN_VERSIONS, ONNX_DOMAINS

LAYERS = ("Conv", "Gemm")
HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu")
NOT_HOMOGENEOUS = frozenset({
    "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "Gelu", "Softplus",
    "Softsign", "Mish", "Swish", "Exp", "Log", "Erf", "ThresholdedRelu", "Shrink", "Sin", "Cos", "Abs",
    "Neg", "Sqrt", "Pow", "Reciprocal", "Softmax", "LogSoftmax",
})
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)
NOT_HOMOGENEOUS_WHY = "is not positively homogeneous (f(s x) != s f(x) for s > 0)"


@dataclass
class Pair:
    """One equalized Conv/Gemm pair; the range ratios summarise ``first``'s weight (module docstring)."""
    first: str
    second: str
    activation: str          # "Relu", "LeakyRelu", "PRelu" or "none"
    range_ratio_before: float
    range_ratio_after: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Refusal:
    node: str                # the producer Conv/Gemm
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EqualizeReport:
    pairs: list[Pair]
    refused: list[Refusal]
    iterations: int
    converged: bool = True   # False: max_iterations ended the sweeps before max |log s| < tolerance

    def to_dict(self) -> dict:
        return {"pairs": [p.to_dict() for p in self.pairs], "refused": [r.to_dict() for r in self.refused],
                "iterations": self.iterations, "converged": self.converged}

    def lines(self) -> list[str]:
        done = "" if self.converged else " (not converged: max_iterations reached)"
        out = [f"equalized {len(self.pairs)} pair(s) in {self.iterations} sweep(s){done}; refused {len(self.refused)}"]
        out += [f"  {p.first} -{p.activation}-> {p.second}: median range/max {p.range_ratio_before:.3f} -> "
                f"{p.range_ratio_after:.3f}" for p in self.pairs]
        out += [f"  refused {r.reason}" if r.reason.startswith(r.node) else f"  refused {r.node}: {r.reason}"
                for r in self.refused]
        return out


@dataclass
class _Layer:
    node: onnx.NodeProto
    weight: str
    bias: str | None
    groups: int              # Conv's groups; 1 for a Gemm
    trans_b: bool            # Gemm's transB; False for a Conv

    @property
    def is_gemm(self) -> bool:
        return self.node.op_type == "Gemm"


@dataclass
class _Site:
    first: _Layer
    act: onnx.NodeProto | None
    second: _Layer

    @property
    def activation(self) -> str:
        return self.act.op_type if self.act is not None else "none"


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type}({node.output[0] if node.output else ''})"


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [g for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)]


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a (sub)graph's nodes read, nested subgraphs included."""
    names = set()
    for node in graph.node:
        names.update(i for i in node.input if i)
        for sub in _subgraphs(node):
            names |= _subgraph_reads(sub)
    return names


class _Graph:
    """The main graph's producers, readers (one entry per read; a node whose subgraph reads a tensor
    counts as its reader), initializers and outputs, read once."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.inputs = {i.name for i in g.input}
        self.outputs = {o.name for o in g.output}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in g.node:
            for o in node.output:
                self.producer[o] = node
            reads = [i for i in node.input if i]
            for sub in _subgraphs(node):
                reads += sorted(_subgraph_reads(sub))
            for name in reads:
                self.readers.setdefault(name, []).append(node)
        self.opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), None)

    def users(self, tensor: str) -> list[onnx.NodeProto]:
        return self.readers.get(tensor, [])

    def sole_user(self, tensor: str) -> onnx.NodeProto | None:
        users = self.users(tensor)
        return users[0] if len(users) == 1 and tensor not in self.outputs else None

    def describe(self, tensor: str) -> str:
        """Who reads ``tensor``: a node's label, "the graph output", or "k nodes (a, b)"."""
        names = [_label(n) for n in self.users(tensor)] + (["the graph output"] if tensor in self.outputs else [])
        return names[0] if len(names) == 1 else f"{len(names)} nodes ({', '.join(names)})" if names else "nothing"

    def constant_problem(self, node: onnx.NodeProto, name: str, what: str) -> str | None:
        """Why initializer ``name`` (``what`` of ``node``) cannot be rewritten, or None."""
        tensor = self.inits.get(name)
        if tensor is None or name in self.inputs:
            return f"{_label(node)}'s {what} {name} is not an initializer (computed, a Constant or a graph input)"
        if tensor.data_type not in FLOAT_TYPES:
            return f"{_label(node)}'s {what} {name} is {onnx.TensorProto.DataType.Name(tensor.data_type)}, not a float"
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return f"{_label(node)}'s {what} {name} is stored as external data (load the model with its data)"
        others = [_label(n) for n in self.users(name) if n is not node]
        if others or len(self.users(name)) != 1:
            return f"{_label(node)}'s {what} {name} is shared with {', '.join(others) or 'another input'}"
        return None

    def layer(self, node: onnx.NodeProto, role: str) -> _Layer | str:
        """``node`` as a Conv/Gemm whose weights may be rewritten, or why not (``role``: producer/consumer)."""
        version = None
        if self.opset is not None:
            try:
                version = onnx.defs.get_schema(node.op_type, self.opset, "").since_version
            except Exception:  # no such op at this opset
                pass
        if version not in KNOWN_VERSIONS[node.op_type]:
            return f"{_label(node)} is {node.op_type}-{version} (opset {self.opset}), a version this pass does not know"
        if len(node.input) < 2 or not node.input[1]:
            return f"{_label(node)} has no weight input"
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        for name, what in ((node.input[1], "weight"), (bias, "bias")):
            if name is not None and (problem := self.constant_problem(node, name, what)):
                return problem
        if node.op_type == "Gemm":
            if role == "consumer" and _attr(node, "transA", 0):
                return f"{_label(node)} is a Gemm with transA=1: it reads the channels along the wrong axis"
            w = self.inits[node.input[1]]
            n = w.dims[0] if _attr(node, "transB", 0) else w.dims[1]
            if bias is not None and int(np.prod(self.inits[bias].dims)) not in (1, n):
                shape = list(self.inits[bias].dims)
                return f"{_label(node)}'s bias {bias} has shape {shape}, not one value per output channel"
            return _Layer(node, node.input[1], bias, 1, bool(_attr(node, "transB", 0)))
        if len(self.inits[node.input[1]].dims) < 3:
            return f"{_label(node)}'s weight {node.input[1]} has rank {len(self.inits[node.input[1]].dims)} (< 3)"
        return _Layer(node, node.input[1], bias, int(_attr(node, "group", 1)), False)


def _is_layer(node: onnx.NodeProto) -> bool:
    return node.domain in ONNX_DOMAINS and node.op_type in LAYERS


def _gate(g: _Graph, tensor: str) -> tuple[str, list[onnx.NodeProto], str] | None:
    """``tensor`` read by an x * g(x) gate (SiLU, a decomposed HardSwish): (name, the gate's nodes,
    the tensor after it, past a trailing Div/Mul by a constant), or None."""
    users = g.users(tensor)
    if len(users) != 2 or tensor in g.outputs:
        return None
    mul = next((n for n in users if n.op_type == "Mul"), None)
    if mul is None or len(mul.input) != 2:
        return None
    other = users[1] if users[0] is mul else users[0]
    chain, t = [], mul.input[1] if mul.input[0] == tensor else mul.input[0]
    for _ in range(4):  # walk back from the gate's other factor to the node that reads x
        node = g.producer.get(t)
        if node is None:
            return None
        chain.insert(0, node)
        if node is other:
            break
        t = node.input[0] if node.input else ""
    else:
        return None
    ops = [n.op_type for n in chain]
    name = "SiLU" if "Sigmoid" in ops else "HardSwish" if {"HardSigmoid", "Clip"} & set(ops) else "x * g(x)"
    chain.append(mul)
    out = mul.output[0]
    after = g.sole_user(out)
    if after is not None and after.op_type in ("Div", "Mul") and any(i in g.inits for i in after.input):
        chain.append(after)
        out = after.output[0]
    return name, chain, out


def _match(g: _Graph, node: onnx.NodeProto) -> _Site | str:
    """The pair ``node`` starts, or the one-line reason it starts none."""
    me = _label(node)
    first = g.layer(node, "producer")
    if isinstance(first, str):
        return first
    out = node.output[0]
    if out in g.outputs:
        return f"{me}: its output is a graph output"
    if len(g.users(out)) > 1:
        gate = _gate(g, out)
        if gate is not None:
            name, chain, after = gate
            return (f"{me} -> {name} ({', '.join(n.op_type for n in chain)}) -> {g.describe(after)}: "
                    f"{name} {NOT_HOMOGENEOUS_WHY}")
        return f"{me}: its output feeds {g.describe(out)}: a branch would see unscaled channels"
    if not g.users(out):
        return f"{me}: nothing reads its output"
    act, nxt, path = None, g.users(out)[0], me
    if nxt.domain in ONNX_DOMAINS and nxt.op_type in HOMOGENEOUS:
        act, path = nxt, f"{me} -> {nxt.op_type}"
        if nxt.input[0] != out:
            return f"{path}: it reads {me}'s output as its slope"
        a_out = nxt.output[0]
        if a_out in g.outputs or len(g.users(a_out)) != 1:
            return f"{path}: its output feeds {g.describe(a_out)}: a branch would see unscaled channels"
        nxt = g.users(a_out)[0]
    elif nxt.op_type in NOT_HOMOGENEOUS:
        return f"{me} -> {nxt.op_type} -> {g.describe(nxt.output[0])}: {nxt.op_type} {NOT_HOMOGENEOUS_WHY}"
    if not _is_layer(nxt):
        if nxt.op_type in ("Flatten", "Reshape") and (after := g.sole_user(nxt.output[0])) is not None \
                and after.op_type in ("Gemm", "MatMul"):
            return (f"{path} -> {nxt.op_type} -> {_label(after)}: the {after.op_type} reads the channels "
                    f"flattened with the positions (not handled)")
        return f"{path} -> {_label(nxt)}: {nxt.op_type} is not a Conv/Gemm that could take the inverse scale"
    if nxt.input[0] != (act.output[0] if act is not None else out):
        return f"{path} -> {_label(nxt)}: it reads the tensor as a weight or bias, not as its data input"
    second = g.layer(nxt, "consumer")
    if isinstance(second, str):
        return f"{path} -> {_label(nxt)}: {second}"
    channels = _out_channels(g.inits[first.weight], first)
    w2 = g.inits[second.weight]
    c_in = (w2.dims[1] if second.trans_b else w2.dims[0]) if second.is_gemm else w2.dims[1] * second.groups
    if c_in != channels or (not second.is_gemm and w2.dims[0] % second.groups):
        return f"{path} -> {_label(nxt)}: {channels} channels out, but it reads {c_in}"
    return _Site(first, act, second)


def _out_channels(weight: onnx.TensorProto, layer: _Layer) -> int:
    return weight.dims[1] if layer.is_gemm and not layer.trans_b else weight.dims[0]


# ---- the numeric core: ranges and scales of float64 arrays ----

def out_ranges(w: np.ndarray, layer: _Layer) -> np.ndarray:
    """max|W| per output channel."""
    w = np.abs(w)
    if layer.is_gemm and not layer.trans_b:
        return w.max(axis=0)
    return w.reshape(w.shape[0], -1).max(axis=1)


def _in_view(w: np.ndarray, layer: _Layer) -> tuple[np.ndarray, tuple[int, ...]]:
    """The consumer weight viewed with input channel i on one axis (after a group axis for a Conv),
    and the shape a per-input-channel vector broadcasts with."""
    if layer.is_gemm:
        return (w, (1, -1)) if layer.trans_b else (w, (-1, 1))
    g = layer.groups
    view = w.reshape(g, w.shape[0] // g, *w.shape[1:])   # [G, M/G, C/G, k...]
    return view, (g, 1, w.shape[1]) + (1,) * (w.ndim - 2)


def in_ranges(w: np.ndarray, layer: _Layer) -> np.ndarray:
    """max|W| over everything that reads input channel i (i = group * C/G + in-group index)."""
    view, _ = _in_view(np.abs(w), layer)
    if layer.is_gemm:
        return view.max(axis=0) if layer.trans_b else view.max(axis=1)
    return view.max(axis=(1, *range(3, view.ndim))).reshape(-1)


def scale_out(w: np.ndarray, inv: np.ndarray, layer: _Layer) -> np.ndarray:
    return w * (inv if layer.is_gemm and not layer.trans_b else inv.reshape(-1, *(1,) * (w.ndim - 1)))


def scale_in(w: np.ndarray, s: np.ndarray, layer: _Layer) -> np.ndarray:
    view, shape = _in_view(w, layer)
    return (view * s.reshape(shape)).reshape(w.shape)


def _bias_vector(b: np.ndarray, channels: int) -> np.ndarray:
    return np.full(channels, b.reshape(-1)[0]) if b.size == 1 and channels != 1 else b.reshape(-1)


def median_ratio(r: np.ndarray) -> float:
    top = float(r.max()) if r.size else 0.0
    return float(np.median(r) / top) if top > 0 else 1.0


def _equalization_scale(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    s = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    s[ok] = np.sqrt(r1[ok] / r2[ok])
    return s


# ---- the passes ----

def _sites(model: onnx.ModelProto) -> tuple[_Graph, list[_Site], list[Refusal]]:
    g = _Graph(model)
    sites, refused = [], []
    for node in model.graph.node:
        if _is_layer(node):
            site = _match(g, node)
            if isinstance(site, str):
                refused.append(Refusal(_label(node), site))
            else:
                sites.append(site)
    return g, sites, refused


def _write(model: onnx.ModelProto, arrays: dict[str, np.ndarray], changed: set[str]) -> None:
    for tensor in model.graph.initializer:
        if tensor.name in changed:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            tensor.CopyFrom(numpy_helper.from_array(arrays[tensor.name].astype(dtype), tensor.name))


def equalize(model: onnx.ModelProto, *, max_iterations: int = 100,
             tolerance: float = 1e-6) -> tuple[onnx.ModelProto, EqualizeReport]:
    """Cross-layer equalization (Nagel et al. 2019, DFQ: "cross-layer range equalization") of every
    Conv/Gemm pair P -> [Relu | LeakyRelu | PRelu] -> Q of a copy of ``model``; ``model`` is not modified.

    W1[i] /= s_i, b1[i] /= s_i, W2[:, i] *= s_i with s_i = sqrt(r1_i / r2_i) (r: per-channel max |w|;
    s_i = 1 where either is 0), exact since f(s x) = s f(x) for s > 0. Swept over all pairs until
    max |log s_i| < ``tolerance`` in a sweep, at most ``max_iterations`` sweeps; the report's
    ``iterations`` counts them (the last one is the sweep that found nothing left to move) and
    ``converged`` says whether that point was reached. Pairs that share no layer settle in one
    sweep; a chain of n pairs is a Gauss-Seidel iteration whose error shrinks by about
    cos^2(pi / (n + 1)) a sweep (1/2 for 3 pairs, 0.8 for 6): ppocr-cls's chains take 21 sweeps,
    torchvision MNASNet-0.5's 41, hence the default of 100 (a sweep costs milliseconds).
    Every other Conv/Gemm is a ``Refusal`` with its reason. See the module docstring.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, sites, refused = _sites(out)
    arrays: dict[str, np.ndarray] = {}
    for site in sites:
        for name in (site.first.weight, site.first.bias, site.second.weight):
            if name is not None and name not in arrays:
                arrays[name] = numpy_helper.to_array(g.inits[name]).astype(np.float64)
    before = [median_ratio(out_ranges(arrays[s.first.weight], s.first)) for s in sites]
    changed: set[str] = set()
    sweeps, converged = 0, not sites
    while sites and sweeps < max_iterations:
        sweeps += 1
        worst = 0.0
        for site in sites:
            p, q = site.first, site.second
            s = _equalization_scale(out_ranges(arrays[p.weight], p), in_ranges(arrays[q.weight], q))
            step = float(np.abs(np.log(s)).max()) if s.size else 0.0
            worst = max(worst, step)
            if step == 0.0:
                continue
            arrays[p.weight] = scale_out(arrays[p.weight], 1.0 / s, p)
            if p.bias is not None:
                arrays[p.bias] = _bias_vector(arrays[p.bias], s.size) / s
            arrays[q.weight] = scale_in(arrays[q.weight], s, q)
            changed |= {p.weight, q.weight} | ({p.bias} if p.bias is not None else set())
        converged = worst < tolerance
        if converged:
            break
    _write(out, arrays, changed)
    pairs = [Pair(_label(s.first.node), _label(s.second.node), s.activation, b,
                  median_ratio(out_ranges(arrays[s.first.weight], s.first))) for s, b in zip(sites, before)]
    return out, EqualizeReport(pairs, refused, sweeps, converged)


def _padded(layer: _Layer) -> bool:
    if layer.is_gemm:
        return False
    auto = _attr(layer.node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    return auto in ("SAME_UPPER", "SAME_LOWER") or (auto == "NOTSET" and any(_attr(layer.node, "pads", [])))


def _fresh(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {v for n in model.graph.node for v in (*n.input, *n.output)}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _add_bias(model: onnx.ModelProto, g: _Graph, layer: _Layer, channels: int, dtype) -> None:
    """Give ``layer`` a zero bias initializer (Conv: [M]; Gemm: C of [N])."""
    name = _fresh(model, f"{layer.weight}_bias")
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(channels, dtype), name))
    g.inits[name] = model.graph.initializer[-1]
    if len(layer.node.input) == 2:
        layer.node.input.append(name)
    else:
        layer.node.input[2] = name
    layer.bias = name


def absorb_high_bias(model: onnx.ModelProto, lower_bounds: dict[str, np.ndarray], *,
                     allow_padding: bool = False) -> tuple[onnx.ModelProto, list[dict]]:
    """High-bias absorption (DFQ: "absorbing high biases") for the pairs P -> Relu -> Q that
    ``equalize`` finds (Relu only). ``lower_bounds`` maps P's output tensor name to a per-channel lower bound m_i of P's
    pre-activation output (from the frozen BN statistics, beta - 3|gamma|, or from calibration data).
    With c_i = max(0, m_i): b1' = b1 - c, b2' = b2 + W2 * c (summed over input channels and kernel;
    a Gemm's alpha/beta accounted for). A missing bias becomes an initializer.

    Exact for every input whose pre-activations stay >= c_i (Relu(x - c) = Relu(x) - c there);
    approximate for others. A zero-padded Q (pads or SAME auto_pad) is also approximate at its border
    and is skipped unless ``allow_padding``. ``model`` is not modified.

    Returns the new model and one dict per tensor of ``lower_bounds``: "first", "second", "tensor",
    "channels" (how many c_i > 0), "max_c", "padded", and "reason": None where it was absorbed, else
    why not (then nothing was changed for it). A name that is no Conv/Gemm's output is a ValueError.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g, sites, refused = _sites(out)
    by_output = {s.first.node.output[0]: s for s in sites}
    why_not = {r.node: r.reason for r in refused}
    producers = {n.output[0]: n for n in out.graph.node if _is_layer(n) and n.output}
    results = []
    for tensor, bound in lower_bounds.items():
        node = producers.get(tensor)
        if node is None:
            raise ValueError(f"lower_bounds names {tensor!r}, which is not the output of a Conv/Gemm in the graph")
        site = by_output.get(tensor)
        entry = {"first": _label(node), "second": None, "tensor": tensor, "channels": 0, "max_c": 0.0,
                 "padded": False, "reason": None}
        results.append(entry)
        if site is None:
            entry["reason"] = why_not.get(_label(node), "not an equalizable pair")
            continue
        p, q = site.first, site.second
        entry["second"], entry["padded"] = _label(q.node), _padded(q)
        w1 = g.inits[p.weight]
        channels = _out_channels(w1, p)
        bound = np.asarray(bound, dtype=np.float64).reshape(-1)
        if site.activation != "Relu":
            entry["reason"] = f"the activation is {site.activation}; high-bias absorption is for Relu"
        elif bound.size != channels:
            entry["reason"] = f"lower bound has {bound.size} values for {channels} channels"
        elif entry["padded"] and not allow_padding:
            entry["reason"] = (f"{_label(q.node)} pads with zeros: its border outputs would change "
                               f"(allow_padding=True absorbs anyway)")
        elif (p.is_gemm and _attr(p.node, "beta", 1.0) == 0) or (q.is_gemm and _attr(q.node, "beta", 1.0) == 0):
            entry["reason"] = "a Gemm with beta=0 ignores its bias"
        if entry["reason"] is not None:
            continue
        c = np.maximum(bound, 0.0)
        entry["channels"], entry["max_c"] = int((c > 0).sum()), float(c.max()) if c.size else 0.0
        if not (c > 0).any():
            continue
        w2 = numpy_helper.to_array(g.inits[q.weight]).astype(np.float64)
        if q.is_gemm:
            delta2 = (w2 @ c if q.trans_b else c @ w2) * _attr(q.node, "alpha", 1.0) / _attr(q.node, "beta", 1.0)
        else:
            view, shape = _in_view(w2, q)
            delta2 = (view * c.reshape(shape)).sum(axis=tuple(range(2, view.ndim))).reshape(-1)
        delta1 = -c / (_attr(p.node, "beta", 1.0) if p.is_gemm else 1.0)
        for layer, delta, w in ((p, delta1, w1), (q, delta2, g.inits[q.weight])):
            dtype = onnx.helper.tensor_dtype_to_np_dtype(w.data_type)
            if layer.bias is None:
                _add_bias(out, g, layer, delta.size, dtype)
            b = _bias_vector(numpy_helper.to_array(g.inits[layer.bias]).astype(np.float64), delta.size)
            _write(out, {layer.bias: b + delta}, {layer.bias})
    return out, results
