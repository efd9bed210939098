"""Cross-layer equalization and high-bias absorption (normfold.quantize.equalize).

Judged independently of the module: onnxruntime (all graph optimizations off) runs the original and
the rewritten model on the same random inputs, and the per-channel weight ranges are recomputed here
with numpy, a consumer's grouped input channels by an explicit loop.

Tolerance: the rewrite is exact in real arithmetic and done in float64, so what remains is fp32: each
rewritten weight rounded once (relative 6e-8) and the convolutions accumulating in another order of
magnitudes. Both give errors of a few 1e-7 of the output scale on these models (observed: <= 4e-7);
1e-4 of max|out| is 250x that, and still 100x below what a wrong channel or a sign slip gives.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from normfold.quantize.equalize import Pair, absorb_high_bias, equalize

TOL = 1e-4
# timm's models come with some BN statistics never updated (normfold's fold warns); not this file's subject
pytestmark = pytest.mark.filterwarnings("ignore:normfold.fold.*never updated its statistics")
DATA_PPOCR = "data/onnx/ch_ppocr_mobile_v2.0_cls_infer.onnx"


# ---- independent helpers: onnxruntime runs, weights, ranges ----

def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if outputs:  # intermediate tensors as extra graph outputs, on a copy
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs)
        model = copy
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def random_feeds(model: onnx.ModelProto, shape: tuple[int, ...], seed: int = 0) -> dict[str, np.ndarray]:
    name = model.graph.input[0].name
    return {name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def assert_same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feeds) -> float:
    ya, yb = run(a, feeds)[0], run(b, feeds)[0]
    scale = float(np.abs(ya).max())
    diff = float(np.abs(ya - yb).max())
    assert diff <= TOL * scale, f"max |diff| {diff:.3g} > {TOL} * max|out| ({scale:.3g}): needs tol {diff / scale:.3g}"
    return diff / scale


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def raw(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


def nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def attr(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def producer_ranges(w: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    """max|W| of each output channel."""
    if node.op_type == "Gemm" and not attr(node, "transB", 0):
        w = w.T
    return np.array([np.abs(w[i]).max() for i in range(w.shape[0])])


def consumer_ranges(w: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    """max|W| over everything reading input channel i, a grouped Conv's channels one by one."""
    if node.op_type == "Gemm":
        w = w if attr(node, "transB", 0) else w.T    # [N, K]
        return np.array([np.abs(w[:, i]).max() for i in range(w.shape[1])])
    groups = attr(node, "group", 1)
    per_group_in, per_group_out = w.shape[1], w.shape[0] // groups
    out = []
    for i in range(per_group_in * groups):
        g, j = divmod(i, per_group_in)
        out.append(np.abs(w[g * per_group_out:(g + 1) * per_group_out, j]).max())
    return np.array(out)


def pair_weights(model: onnx.ModelProto, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    ns, ws = nodes(model), weights(model)
    return ws[ns[pair.first].input[1]], ws[ns[pair.second].input[1]]


def layer_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")]


# ---- the models ----

def _export(module: nn.Module, shape, path) -> onnx.ModelProto:
    from normfold.export import export

    return onnx.load(export(module, torch.randn(shape), path).path)


def _zoo(name):
    def build(path):
        from normfold.zoo import build as zoo_build

        return _export(zoo_build(name, small=True), (1, 3, 32, 32), path)
    return build


def _digits(path):
    from normfold.zoo.digits import DigitNet
    from normfold.zoo.populate import populate

    torch.manual_seed(0)
    return _export(populate(DigitNet(), (16, 1, 8, 8), seed=0).eval(), (1, 1, 8, 8), path)


def _regnet(path):
    from normfold.zoo import external

    return _export(external.build("timm/regnetx_002"), (1, 3, 64, 64), path)


class Mixed(nn.Module):
    """Conv-BN-ReLU -> depthwise 3x3-BN-PReLU -> grouped 1x1 (4 groups)-BN-LeakyReLU -> 1x1-BN-ReLU ->
    1x1-BN -> mean -> Linear-ReLU-Linear-ReLU-Linear. BN statistics drawn at random; half the channels
    of the first and fourth conv's BN and of the first Linear get a high bias (+4: all-positive
    pre-activations, what high-bias absorption is for)."""

    def __init__(self):
        super().__init__()

        def cbn(i, o, k, g=1):
            return [nn.Conv2d(i, o, k, padding=k // 2, groups=g, bias=False), nn.BatchNorm2d(o)]

        self.features = nn.Sequential(*cbn(3, 16, 3), nn.ReLU(), *cbn(16, 16, 3, 16), nn.PReLU(16),
                                      *cbn(16, 16, 1, 4), nn.LeakyReLU(0.1), *cbn(16, 24, 1), nn.ReLU(),
                                      *cbn(24, 8, 1))
        self.head = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for bn in (m for m in self.features if isinstance(m, nn.BatchNorm2d)):
                c = bn.num_features
                bn.running_mean.copy_(0.5 * torch.randn(c, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
                bn.weight.copy_(torch.rand(c, generator=g) * 3 + 0.1)   # unequal channel scales
                bn.bias.copy_(0.5 * torch.randn(c, generator=g))
                bn.num_batches_tracked.fill_(1)
            for high in (self.features[1].bias, self.features[10].bias, self.head[0].bias):
                high[::2] += 4.0

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _mixed(path):
    torch.manual_seed(0)
    return _export(Mixed().eval(), (1, 3, 16, 16), path)


def _ppocr(path):
    from normfold import fold_onnx

    folded, _ = fold_onnx(onnx.load(DATA_PPOCR), input_shapes={"x": [1, 3, 48, 192]})
    return folded


# name: (builder, input shape for the runs, pairs, refusals)
CASES = {
    "resnet18-bn": (_zoo("resnet18-bn"), (2, 3, 32, 32), 8, 13),
    "mobilenetv2-bn": (_zoo("mobilenetv2-bn"), (2, 3, 32, 32), 1, 52),
    "digits": (_digits, (2, 1, 8, 8), 1, 3),
    "timm-regnetx_002": (_regnet, (2, 3, 64, 64), 26, 19),
    "mixed": (_mixed, (2, 3, 16, 16), 6, 2),
    "ppocr-cls": (_ppocr, (2, 3, 48, 192), 15, 39),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("equalize")
    cache: dict[str, tuple[onnx.ModelProto, onnx.ModelProto, object]] = {}

    def get(name):
        """(original, equalized, report), each model built and equalized once."""
        if name not in cache:
            original = CASES[name][0](folder / f"{name}.onnx")
            before = original.SerializeToString()
            equalized, report = equalize(original)
            assert original.SerializeToString() == before, "equalize modified its input"
            cache[name] = (original, equalized, report)
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_unchanged_and_every_layer_accounted_for(model, name):
    original, equalized, report = model(name)
    _, shape, n_pairs, n_refused = CASES[name]
    assert (len(report.pairs), len(report.refused)) == (n_pairs, n_refused), "\n".join(report.lines())
    # every Conv/Gemm is the first of one pair or refused once, with a reason naming it
    firsts = [p.first for p in report.pairs] + [r.node for r in report.refused]
    assert sorted(firsts) == sorted(layer_names(original))
    assert all(r.reason.startswith(r.node) for r in report.refused)
    assert_same_outputs(original, equalized, random_feeds(original, shape))
    onnx.checker.check_model(equalized)


@pytest.mark.parametrize("name", list(CASES))
def test_ranges_equal_per_channel_after(model, name):
    original, equalized, report = model(name)
    touched = set()
    for pair in report.pairs:
        w1, w2 = pair_weights(equalized, pair)
        n1, n2 = nodes(equalized)[pair.first], nodes(equalized)[pair.second]
        r1, r2 = producer_ranges(w1, n1), consumer_ranges(w2, n2)
        live = (r1 > 0) & (r2 > 0)
        np.testing.assert_allclose(r1[live], r2[live], rtol=1e-5, err_msg=f"{pair.first} -> {pair.second}")
        # the report's summary, recomputed: median over channels of r_i / max r, before and after
        r1_before = producer_ranges(pair_weights(original, pair)[0], n1)
        assert pair.range_ratio_before == pytest.approx(np.median(r1_before) / r1_before.max(), rel=1e-6)
        assert pair.range_ratio_after == pytest.approx(np.median(r1) / r1.max(), rel=1e-5)
        touched |= {n1.input[1], n2.input[1], *(n1.input[2:3])}
    # nothing outside the pairs changed, byte for byte
    before, after = raw(original), raw(equalized)
    assert {k: v for k, v in after.items() if k not in touched} == {k: v for k, v in before.items() if k not in touched}


def test_independent_pairs_take_one_sweep(model):
    _, _, report = model("resnet18-bn")     # its pairs share no layer: one sweep, one to confirm
    assert (report.iterations, report.converged) == (2, True)


def test_mixed_activations_groups_and_gemms(model):
    _, equalized, report = model("mixed")
    ns = nodes(equalized)
    got = [(ns[p.first].op_type, p.activation, ns[p.second].op_type, attr(ns[p.second], "group", 1))
           for p in report.pairs]
    assert got == [("Conv", "Relu", "Conv", 16), ("Conv", "PRelu", "Conv", 4), ("Conv", "LeakyRelu", "Conv", 1),
                   ("Conv", "Relu", "Conv", 1), ("Gemm", "Relu", "Gemm", 1), ("Gemm", "Relu", "Gemm", 1)]
    assert report.converged
    assert report.to_dict()["pairs"][0]["activation"] == "Relu"
    assert report.lines()[0].startswith("equalized 6 pair(s)")


def test_regnet_grouped_consumers_equalized(model):
    _, equalized, report = model("timm-regnetx_002")
    ns = nodes(equalized)
    assert any(attr(ns[p.second], "group", 1) > 1 for p in report.pairs)


# ---- refusals ----

def _conv(name, x, y, w, b=None, pads=1):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, pads=[pads] * 4)


def _graph_model(nodes_, inits, x_shape, y_shape, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes_, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _refusal_graph() -> onnx.ModelProto:
    """A -> Clip(0, 6) -> B; B branches to C and an Add; C -> Add; D -> Relu -> E (a pair);
    E -> HardSwish -> F; F -> Flatten -> Gemm H; H is the graph output."""
    rng = np.random.default_rng(0)
    inits = {}
    for k in "ABCDEF":
        scale = rng.uniform(0.1, 3, (4, 1, 1, 1))   # unequal output channels
        inits[f"W{k}"] = (rng.standard_normal((4, 4, 3, 3)) * scale).astype(np.float32)
        inits[f"b{k}"] = rng.standard_normal(4).astype(np.float32)
    inits.update(lo=np.array(0, np.float32), hi=np.array(6, np.float32),
                 WH=rng.standard_normal((10, 256)).astype(np.float32), bH=np.zeros(10, np.float32))
    graph = [
        _conv("A", "x", "a", "WA", "bA"), helper.make_node("Clip", ["a", "lo", "hi"], ["a6"], name="relu6"),
        _conv("B", "a6", "b", "WB", "bB"), _conv("C", "b", "c", "WC", "bC"),
        helper.make_node("Add", ["b", "c"], ["bc"], name="add"),
        _conv("D", "bc", "d", "WD", "bD"), helper.make_node("Relu", ["d"], ["dr"], name="relu"),
        _conv("E", "dr", "e", "WE", "bE"), helper.make_node("HardSwish", ["e"], ["eh"], name="hswish"),
        _conv("F", "eh", "f", "WF", "bF"), helper.make_node("Flatten", ["f"], ["ff"], name="flatten"),
        helper.make_node("Gemm", ["ff", "WH", "bH"], ["y"], name="H", transB=1),
    ]
    return _graph_model(graph, inits, ("N", 4, 8, 8), ("N", 10))


def test_refusals_name_the_nodes_and_leave_their_weights():
    original = _refusal_graph()
    before = original.SerializeToString()
    equalized, report = equalize(original)
    assert original.SerializeToString() == before
    assert [(p.first, p.activation, p.second) for p in report.pairs] == [("D", "Relu", "E")]
    reasons = {r.node: r.reason for r in report.refused}
    assert reasons == {
        "A": "A -> Clip -> B: Clip is not positively homogeneous (f(s x) != s f(x) for s > 0)",
        "B": "B: its output feeds 2 nodes (C, add): a branch would see unscaled channels",
        "C": "C -> add: Add is not a Conv/Gemm that could take the inverse scale",
        "E": "E -> HardSwish -> F: HardSwish is not positively homogeneous (f(s x) != s f(x) for s > 0)",
        "F": "F -> Flatten -> H: the Gemm reads the channels flattened with the positions (not handled)",
        "H": "H: its output is a graph output",
    }
    a, b = raw(original), raw(equalized)
    for name in ("WA", "bA", "WB", "bB", "WC", "bC", "WF", "bF", "WH", "bH"):
        assert a[name] == b[name], name
    assert a["WD"] != b["WD"] and a["WE"] != b["WE"]
    assert_same_outputs(original, equalized, random_feeds(original, (2, 4, 8, 8)))


def test_shared_weight_refused():
    """P and R read the same weight: neither may be rescaled, nor Q -> R."""
    rng = np.random.default_rng(1)
    inits = {"W": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
             "W2": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    graph = [_conv("P", "x", "p", "W", pads=0), helper.make_node("Relu", ["p"], ["pr"], name="relu"),
             _conv("Q", "pr", "q", "W2", pads=0), helper.make_node("Relu", ["q"], ["qr"], name="relu2"),
             _conv("R", "qr", "y", "W", pads=0)]
    original = _graph_model(graph, inits, (1, 4, 5, 5), (1, 4, 5, 5))
    equalized, report = equalize(original)
    assert report.pairs == []
    reasons = {r.node: r.reason for r in report.refused}
    assert reasons["P"] == "P's weight W is shared with R"
    assert reasons["Q"] == "Q -> Relu -> R: R's weight W is shared with P"
    assert raw(original) == raw(equalized)


def test_ppocr_hardswish_refused_depthwise_equalized(model):
    original, equalized, report = model("ppocr-cls")
    hardswish = [r for r in report.refused if "HardSwish is not positively homogeneous" in r.reason]
    assert len(hardswish) == 18
    # the fold took HardSwish's / 6 into the next conv (a gate's constant factor folds forward)
    assert hardswish[0].reason == ("Conv@0 -> HardSwish (Add, Clip, Mul) -> Conv@1: HardSwish is not "
                                   "positively homogeneous (f(s x) != s f(x) for s > 0)")
    assert any("HardSigmoid is not positively homogeneous" in r.reason for r in report.refused)
    ns = nodes(equalized)
    depthwise = [p for p in report.pairs if attr(ns[p.second], "group", 1) > 1]
    assert depthwise and all(attr(ns[p.second], "group", 1) == pair_weights(equalized, p)[1].shape[0]
                             for p in depthwise)
    for r in hardswish:  # the refused producers' weights are untouched
        n = nodes(original)[r.node]
        if not any(p.second == r.node for p in report.pairs):
            assert raw(original)[n.input[1]] == raw(equalized)[n.input[1]]


# ---- high-bias absorption ----

def _minima(model, feeds, tensors) -> dict[str, np.ndarray]:
    """Per-channel minimum of each tensor (channel axis 1) over the inputs."""
    values = run(model, feeds, tensors)[1:]
    return {t: v.min(axis=tuple(i for i in range(v.ndim) if i != 1)).astype(np.float64)
            for t, v in zip(tensors, values)}


def _output_of(model, node_name) -> str:
    return nodes(model)[node_name].output[0]


def test_absorb_high_bias_exact_above_the_bounds(model):
    original, equalized, report = model("mixed")
    feeds = random_feeds(equalized, (4, 3, 16, 16), seed=3)
    firsts = {p.first: (p.activation, p.second) for p in report.pairs}
    tensors = [_output_of(equalized, f) for f in firsts]
    bounds = _minima(equalized, feeds, tensors)
    before = equalized.SerializeToString()
    absorbed, entries = absorb_high_bias(equalized, bounds)
    assert equalized.SerializeToString() == before
    done = [e for e in entries if e["reason"] is None]
    # Relu pairs into an unpadded consumer: the two Gemm pairs and the 1x1 Conv pair
    ns = nodes(equalized)
    assert sorted(ns[e["first"]].op_type for e in done) == ["Conv", "Gemm", "Gemm"]
    assert all(e["second"] == firsts[e["first"]][1] for e in entries)
    for e in entries:
        if firsts[e["first"]][0] != "Relu":
            assert e["reason"].startswith(f"the activation is {firsts[e['first']][0]}")
    padded = [e for e in entries if e["padded"]]
    assert len(padded) == 1 and "pads with zeros" in padded[0]["reason"]
    high = [e for e in done if e["channels"] > 0]
    assert len(high) >= 2 and all(e["max_c"] > 1.0 for e in high)
    # the biases, recomputed: the producer's minus c, the consumer's plus W2 c (no groups, no
    # padding, alpha = beta = 1 here); fc2 is the consumer of one pair and the producer of the next
    old, new = weights(equalized), weights(absorbed)
    bias = {n: old[ns[n].input[2]].astype(np.float64) for e in done for n in (e["first"], e["second"])}
    for e in done:
        c = np.maximum(bounds[e["tensor"]], 0)
        assert e["channels"] == int((c > 0).sum()) and e["max_c"] == pytest.approx(c.max())
        q = ns[e["second"]]
        assert attr(q, "group", 1) == 1
        w2 = old[q.input[1]].astype(np.float64)
        bias[e["first"]] -= c
        bias[e["second"]] += w2 @ c if q.op_type == "Gemm" else w2.sum(axis=(2, 3)) @ c
    for n, b in bias.items():
        np.testing.assert_allclose(new[ns[n].input[2]], b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=n)
    for e in high:   # |b1| shrinks where nothing else adds to it (fc2 takes fc1's W2 c too)
        if any(d["second"] == e["first"] for d in done):
            continue
        producer_bias = ns[e["first"]].input[2]
        assert np.abs(new[producer_bias]).sum() < np.abs(old[producer_bias]).sum(), e["first"]
    assert_same_outputs(equalized, absorbed, feeds)
    onnx.checker.check_model(absorbed)

    # the padded consumer was right to be skipped: absorbing there changes the border outputs
    forced, entries = absorb_high_bias(equalized, bounds, allow_padding=True)
    assert sum(e["reason"] is None for e in entries) == 4
    ya, yb = run(equalized, feeds)[0], run(forced, feeds)[0]
    assert np.abs(ya - yb).max() > 100 * TOL * np.abs(ya).max()


def test_absorb_adds_missing_biases_and_minds_gemm_alpha_beta():
    """x >= 1, positive weights: every pre-activation is positive. Gemm(transB=0, alpha=0.5, beta=2)
    -> Relu -> Gemm(transB=0, alpha=1.5, no C), and Conv (no bias) -> Relu -> Conv (no bias)."""
    rng = np.random.default_rng(2)
    inits = {"W1": rng.uniform(0.1, 1, (8, 6)).astype(np.float32), "C1": rng.uniform(0, 1, 6).astype(np.float32),
             "W2": rng.uniform(-1, 1, (6, 4)).astype(np.float32)}
    graph = [helper.make_node("Gemm", ["x", "W1", "C1"], ["h"], name="G1", alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "W2"], ["y"], name="G2", alpha=1.5)]
    gemms = _graph_model(graph, inits, (3, 8), (3, 4))
    inits = {"K1": rng.uniform(0.1, 1, (5, 3, 1, 1)).astype(np.float32),
             "K2": rng.uniform(-1, 1, (4, 5, 2, 2)).astype(np.float32)}
    graph = [_conv("P", "x", "p", "K1", pads=0), helper.make_node("Relu", ["p"], ["pr"], name="relu"),
             _conv("Q", "pr", "y", "K2", pads=0)]
    convs = _graph_model(graph, inits, (2, 3, 6, 6), (2, 4, 5, 5))
    for original, first, shape in ((gemms, "G1", (3, 8)), (convs, "P", (2, 3, 6, 6))):
        equalized, report = equalize(original)
        assert len(report.pairs) == 1
        feeds = {"x": np.random.default_rng(4).uniform(1, 2, shape).astype(np.float32)}
        assert_same_outputs(original, equalized, feeds)
        tensor = _output_of(equalized, first)
        bounds = _minima(equalized, feeds, [tensor])
        assert bounds[tensor].min() > 0
        absorbed, entries = absorb_high_bias(equalized, bounds)
        assert entries[0]["reason"] is None and entries[0]["channels"] == bounds[tensor].size
        assert all(len(n.input) == 3 for n in absorbed.graph.node if n.op_type in ("Gemm", "Conv"))
        assert_same_outputs(original, absorbed, feeds)
        # the first layer's pre-activation now starts at 0 in each channel
        shifted = _minima(absorbed, feeds, [tensor])[tensor]
        np.testing.assert_allclose(shifted, 0, atol=1e-5 * np.abs(bounds[tensor]).max())


def test_absorb_refuses_a_name_that_is_no_layer_output():
    with pytest.raises(ValueError, match="not the output of a Conv/Gemm"):
        absorb_high_bias(_refusal_graph(), {"relu6_out": np.zeros(4)})
