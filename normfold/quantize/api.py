"""``normfold.quantize``: fold, equalize, quantize, correct biases, search, measure; see the package docstring."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from .bias_correction import channel_statistics, correct_biases, input_means
from .calibration import DatasetReader, calibration_indices
from .equalize import absorb_high_bias, equalize
from .evaluate import Evaluator
from .metric import Metric, load_metric, prediction_kind, top1
from .options import QuantizeError, QuantOptions
from .qdq import COMPUTE_OPS, COMPUTE_ORDER, at_least_opset_13, float_nodes, quantize_problem, quantize_qdq
from .report import Gate, QuantReport, Step
from .search import Trial, fewest_float, node_errors
from .source import folded_source

SENSITIVITY_SAMPLES = 4          # calibration samples run with every activation exposed (memory grows with them)
CALIBRATION_BATCH = 4            # samples per calibration batch: the quantizer holds every activation of one batch
CUDA_NOTE = ("onnxruntime's CUDA provider does not run QDQ INT8 faster than fp32 (INT8 on NVIDIA GPUs is "
             "TensorRT's): no CUDA speed-up is claimed, and none was measured")


def quantize(
    model: Any,
    calibration: str | os.PathLike | None = None,
    *,
    example_input=None,
    input_shape: Sequence[int] | None = None,
    validation: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    metric: str | Metric | Callable | None = None,
    max_accuracy_drop: float | None = None,
    min_agreement: float | None = None,
    options: QuantOptions = QuantOptions(),
    data_free: bool = False,
    input_range: Sequence[float] | None = None,
    resize: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    batch_size: int | None = None,
    measure_steps: bool = True,
    latency: bool = True,
    bench_rounds: int = 10,
    workdir: str | os.PathLike | None = None,
    progress=None,
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, QuantReport]:
    """Quantize ``model`` to INT8 (QDQ) and measure what it costs; returns (the INT8 model, the report).

    ``model``: an ``nn.Module`` (with ``example_input``), an .onnx path or a
    ModelProto (``input_shape`` fixes symbolic dims). ``calibration``: what
    ``normfold verify --inputs`` takes (folder, glob, .npz), streamed.
    ``validation`` (same forms) and ``labels`` (CSV ``name,label`` or a
    folder per class) are what accuracy is measured on; without them,
    agreement with fp32 on the calibration samples. ``metric``: ``path.py:function``
    or a callable ``(outputs, labels) -> scores``; default top-1 of the first
    classifier output. The gate (``max_accuracy_drop`` with labels,
    ``min_agreement``) drives the search for nodes to keep in float.
    ``data_free``: no calibration data; activation ranges and the bias
    correction's E[x] come from the frozen norm statistics (data_free.py),
    ``input_range`` (low, high) says what the input's values are.
    ``workdir`` keeps model.onnx (folded fp32) and the intermediate files;
    the report's ``folded_model`` is the folded fp32 ModelProto.
    Bad input raises QuantizeError (one line) before the long work.
    """
    from normfold.verify import InputError

    log = log or (lambda _m: None)
    gate = Gate(max_accuracy_drop, min_agreement)
    if data_free:
        if calibration is not None:
            raise QuantizeError("give calibration data (--calibrate) or data_free (--data-free), not both")
        if validation is None:
            raise QuantizeError("data_free (--data-free) still measures the INT8 model: give a validation set "
                                "(--inputs)")
        if input_range is None or len(input_range) != 2 or not float(input_range[0]) < float(input_range[1]):
            raise QuantizeError("data_free (--data-free) needs the range of the model's input values "
                                "(--input-range LOW,HIGH, e.g. 0,1 or -2.12,2.64 for ImageNet-normalized images)")
    elif calibration is None:
        raise QuantizeError("no calibration data: give calibration (--calibrate DATA): a folder, glob or .npz "
                            "of inputs like the ones the model will see, or --data-free")
    if labels is not None and validation is None:
        raise QuantizeError("labels (--labels) need a validation set (--inputs)")
    if max_accuracy_drop is not None and labels is None:
        raise QuantizeError("max_accuracy_drop (--max-accuracy-drop) needs labels (--labels)")
    if metric is not None and labels is None:
        raise QuantizeError("a metric (--metric) scores against labels: give --labels")
    metric = load_metric(metric) if isinstance(metric, str) else \
        Metric(getattr(metric, "__name__", "metric"), metric) if callable(metric) and not isinstance(metric, Metric) \
        else metric
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="normfold-quantize-")))
        try:
            return _quantize(model, calibration, example_input, input_shape, validation, labels, metric, gate,
                             options, resize, mean, std, batch_size, measure_steps, latency, bench_rounds, work,
                             progress, log, stack, tuple(input_range) if data_free else None)
        except InputError as exc:
            raise QuantizeError(str(exc)) from exc


def _quantize(model, calibration, example_input, input_shape, validation, labels, metric, gate, options, resize,
              mean, std, batch_size, measure_steps, latency, bench_rounds, work, progress, log, stack, input_range):
    from normfold.verify import open_dataset, read_labels
    from normfold.verify.session import open_session, run_session
    from normfold.verify.signature import signature_of
    from normfold.verify.stream import default_batch_size

    data_free = input_range is not None
    if data_free:   # the ranges are written as a MinMax calibration cache (data_free.py)
        options = dataclasses.replace(options, calibration="minmax")
    src = folded_source(model, example_input, input_shape, work, log)
    float_model = at_least_opset_13(src.proto)
    problem = quantize_problem(float_model, src.name)
    if problem:
        raise QuantizeError(problem)
    sig = signature_of(float_model, src.name)
    inputs = list(zip(sig.names, sig.shapes))
    calib = None if data_free else stack.enter_context(contextlib.closing(
        open_dataset(calibration, inputs, resize=resize, mean=mean, std=std, flag="--calibrate")))
    val = stack.enter_context(contextlib.closing(
        open_dataset(validation, inputs, resize=resize, mean=mean, std=std, flag="--inputs"))) if validation else None
    label_values = read_labels(labels, val.names, text=True).values if labels is not None else None
    evaluation_set = val or calib
    bs = batch_size or default_batch_size(sig, evaluation_set)
    if not sig.dynamic_batch and bs != sig.shapes[0][0]:
        raise QuantizeError(f"{src.name} has a fixed batch of {sig.shapes[0][0]}; batch size {bs} does not fit it")
    cal_bs = bs if not sig.dynamic_batch else min(bs, CALIBRATION_BATCH)
    reader = None if data_free else \
        DatasetReader(calib, calibration_indices(len(calib), options.calibration_samples), cal_bs, sig.names)
    few = DatasetReader(evaluation_set, list(range(min(SENSITIVITY_SAMPLES, len(evaluation_set)))), cal_bs,
                        sig.names)

    fp32 = open_session(float_model.SerializeToString(), "cpu", optimization="all", where=f"{src.name} (folded)")
    # before the long work: the model runs on the data, the metric scores it, the gate can be judged
    _, first, _ = evaluation_set.read(list(range(min(bs, len(evaluation_set)))))
    first_out = run_session(fp32, first)
    kinds = [prediction_kind(o.shape) for o in first_out]
    if label_values is not None:
        if metric is None:
            k = next((i for i, kind in enumerate(kinds) if kind == "classifier"), None)
            if k is None:
                raise QuantizeError(f"{src.name} has no classifier-shaped output (N, classes) for top-1: give "
                                    "--metric path.py:function")
            metric = top1(k, f"top-1 ({fp32.get_outputs()[k].name})")
        metric.score([np.asarray(o) for o in first_out], [label_values[i] for i in range(len(first[0]))])
    if gate.min_agreement is not None and not any(kinds):
        raise QuantizeError("--min-agreement needs an output with a discrete prediction (N, classes) or "
                            "(N, T, classes); this model has none: gate on --max-accuracy-drop with --metric")
    evaluator = Evaluator(fp32, evaluation_set, range(len(evaluation_set)), bs,
                          labels=label_values, metric=metric if label_values is not None else None, progress=progress)

    report = QuantReport(
        model=src.name, input_shape=list(src.shape), options=options.to_dict(),
        data=_data_summary(calib, reader, val, labels, metric if label_values is not None else None, input_range),
        fold=src.fold_report.to_dict() if src.fold_report is not None else {}, fold_verified=src.verified, gate=gate)
    report.folded_model = src.proto
    free = _DataFree(src, float_model, input_range, options.sigmas, sig) if data_free else None

    def step(name, model_, opts, exclude=(), cache=None, matched_on=None) -> tuple[onnx.ModelProto, Step]:
        log(f"{name}: quantizing ...")
        if free is not None and not Path(cache).exists():
            free.write(model_, cache, matched_on)
        qdq = quantize_qdq(model_, reader, opts, exclude=exclude, calibration_cache=cache)
        session = open_session(qdq.SerializeToString(), "cpu", optimization="all", where=f"{name} (INT8)")
        e = evaluator(session, name)
        computed = float_nodes(qdq)
        return qdq, Step(name, e, [n for op in COMPUTE_OPS for n in computed.get(op, [])])

    caches = iter(work / f"calibration.{i}.json" for i in range(100))

    def run(name, model_, opts, matched_on=None) -> tuple[onnx.ModelProto, Path]:
        cache = next(caches)
        qdq, s = step(name, model_, opts, cache=cache, matched_on=matched_on)
        report.steps.append(s)
        return qdq, cache

    current, last = float_model, None
    first_step = "data-free ranges" if data_free else f"{options.calibration} calibration"
    if measure_steps:
        if data_free:
            last = run(first_step, current, options)
        else:
            last = run("quantize_static minmax", current, dataclasses.replace(options, calibration="minmax"))
            if options.calibration != "minmax":
                last = run(f"+ {options.calibration} calibration", current, options)
    if options.equalize:
        current, eq = equalize(current)
        if options.absorb_high_bias:
            current, report.absorbed = _absorb(current, eq, free, reader)
        report.equalization = eq.to_dict()
        report.equalization_fp32_change = _moved(float_model, current, few)
        last = run("+ equalization", current, options) if measure_steps or not options.bias_correction else None
    # ``pre``: the graph before bias correction, with its ranges; a variant of the search keeps some nodes
    # in float, and a float node must keep its own bias: the correction is redone for what is quantized
    pre, pre_cache, means = current, (last[1] if last else None), None
    if options.bias_correction:
        if last is None:
            pre_cache = next(caches)
            if free is not None:
                free.write(current, pre_cache)
            weights = quantize_qdq(current, reader, options, calibration_cache=pre_cache)
        else:
            weights = last[0]
        if free is not None:
            means = {t: m.mean for t, m in free.moments(current).items()}
        else:
            means = input_means(current, [n.input[0] for n in current.graph.node if n.op_type in ("Conv", "Gemm")],
                                reader)
        current, report.bias_changes = correct_biases(current, weights, means=means)
        last = run("+ bias correction" + (" (frozen statistics)" if data_free else ""), current, options,
                   matched_on=pre)
    if last is None:
        last = run(first_step, current, options)
    qdq, cache = last

    def variant(name, opts, exclude):
        """The final configuration with ``opts`` (op types) and ``exclude`` (nodes kept in float)."""
        if not options.bias_correction:
            return step(name, current, opts, exclude=exclude, cache=cache)
        weights = quantize_qdq(pre, reader, opts, exclude=exclude, calibration_cache=pre_cache)
        corrected, _ = correct_biases(pre, weights, means=means)
        return step(name, corrected, opts, exclude=exclude, cache=cache, matched_on=pre)

    report.node_errors = node_errors(current, qdq, few)
    if gate.given and not gate.check(report.final.evaluation)[0] and options.search:
        if data_free:
            report.data["summary"] += "; no search: it would choose float nodes on --inputs, and the claim is data-free"
        else:
            qdq = _search(report, current, qdq, options, gate, variant, log)
    report.float_ops = float_nodes(qdq)
    if free is not None:
        report.data["ranges"] = free.counts
    int8_path = work / "model.int8.onnx"
    onnx.save(qdq, int8_path)
    if latency:
        _latency(report, src, int8_path, sig, bench_rounds, log)
    report.verdict = _verdict(report)
    return qdq, report


class _DataFree:
    """Data-free ranges (data_free.py) for each graph the steps quantize."""

    def __init__(self, src, float_model, input_range, sigmas, sig):
        import torch

        self.unfolded = onnx.load(str(src.unfolded))
        self.input_range, self.sigmas = input_range, sigmas
        self.channels = int(src.shape[1]) if len(src.shape) > 1 else 1
        self.probe = torch.randn(src.shape, generator=torch.Generator().manual_seed(0)).numpy()
        self.counts: dict = {}
        self.frozen: dict = {}

    def moments(self, graph, matched_on=None):
        """Moments over ``graph`` (statistics.py), the folded norms found again in ``matched_on`` (default
        ``graph``): a bias-corrected graph is matched as the graph before the correction, whose tensor
        names it keeps; the correction moves the tensors after each corrected layer through the next
        Relu by design (what it undoes is the quantized model's shift, not the float model's)."""
        from .data_free import input_moments
        from .statistics import frozen_statistics, propagate

        self.frozen = frozen_statistics(self.unfolded, matched_on if matched_on is not None else graph, self.probe)
        known = propagate(graph, self.frozen, input_moments(self.input_range, self.channels), self.sigmas)
        self.counts = {"tensors_with_frozen_statistics": len(self.frozen), "tensors_with_ranges": len(known)}
        return known

    def write(self, graph, cache, matched_on=None) -> None:
        from .data_free import write_cache

        write_cache(self.moments(graph, matched_on), cache)


def _search(report, current, qdq, options, gate, variant, log) -> onnx.ModelProto:
    """Find what to keep in float until the gate holds; the final step is the first configuration that
    passes, or the best found.

    1. op types: quantize only the compute ops (Conv/ConvTranspose/Gemm/MatMul: where the speed is),
       then only Conv; elementwise ops (the Adds, Muls and Divs of a LayerNorm or an attention block,
       whose own quantization is often the worst) stay float.
    2. nodes: within the last of those, the worst nodes by SQNR in float, fewest first (search.py),
       never all the compute nodes (that would be the fp32 model with conversions around it).
    """
    present = {n.op_type for n in current.graph.node}
    compute = tuple(op for op in COMPUTE_ORDER if op in present)
    tiers = []
    if options.op_types is None or set(options.op_types) - set(compute):
        tiers.append(compute)
    if "Conv" in compute and len(compute) > 1:
        tiers.append(("Conv",))
    made: list[tuple] = []       # (model, step, exclude, options)

    def attempt(name: str, opts, exclude: list[str]):
        model, s = variant(name, opts, exclude)
        made.append((model, s, exclude, opts))
        ok, value, why = gate.check(s.evaluation)
        log(f"search: {name}: {why}")
        return ok, value, why

    opts = options
    for tier in tiers:
        opts = dataclasses.replace(options, op_types=tier)
        name = f"+ only {'/'.join(tier)} quantized"
        ok, value, why = attempt(name, opts, [])
        report.search.append(Trial(name, 0, ok, value, why))
        if ok:
            return _keep(report, made[-1])
    errors = [e for e in report.node_errors if opts.op_types is None or e.op in opts.op_types]
    ranked = [e.node for e in errors]
    # a model with every Conv/Gemm/MatMul in float is no INT8 model: the last of them in the ranking stays
    last_compute = max((i for i, e in enumerate(errors) if e.op in COMPUTE_OPS), default=len(ranked))
    limit = last_compute if options.max_float is None else min(options.max_float, last_compute)
    k, trials = fewest_float(ranked, lambda exclude: attempt(f"+ {len(exclude)} kept float", opts, exclude), limit)
    report.search += trials
    if k is not None:
        return _keep(report, made[-1] if len(made[-1][2]) == k else next(m for m in made if len(m[2]) == k
                                                                             and m[3] is opts))
    def badness(item):
        e = item[1].evaluation
        return (e.drop or 0.0 if gate.max_accuracy_drop is not None else 0.0) - \
            (e.agreement or 0.0 if gate.min_agreement is not None else 0.0)

    best = min(made, key=badness, default=None)
    if best is None or badness(best) >= badness((qdq, report.final)):
        return qdq                                  # nothing the search tried beat the full quantization
    return _keep(report, best)


def _keep(report, made) -> onnx.ModelProto:
    model, s, exclude, opts = made
    report.steps.append(s)
    report.kept_float = list(exclude)
    report.quantized_op_types = list(opts.op_types) if opts.op_types else None
    return model


def _absorb(graph: onnx.ModelProto, eq, free, reader) -> tuple[onnx.ModelProto, list[dict]]:
    """High-bias absorption (equalize.absorb_high_bias) for the equalized pairs through a Relu. The
    lower bound of a producer's output: beta - 3|gamma| of the folded norm there (DFQ), where the frozen
    statistics are known (data-free), else the per-channel minimum over the calibration data, which
    makes the absorption exact on every calibration sample."""
    producers = {n.name: n.output[0] for n in graph.graph.node if n.output}
    tensors = [producers[p.first] for p in eq.pairs if p.activation == "Relu" and p.first in producers]
    if not tensors:
        return graph, []
    if free is not None:
        known = free.moments(graph)
        bounds = {t: known[t].mean - 3 * known[t].std for t in tensors if t in free.frozen}
    else:
        bounds = {t: low for t, (_, low) in channel_statistics(graph, tensors, reader).items()}
    if not bounds:
        return graph, []
    absorbed, entries = absorb_high_bias(graph, bounds)
    return absorbed, [e for e in entries if e["reason"] is None and e["channels"]]


def _moved(before: onnx.ModelProto, after: onnx.ModelProto, reader) -> float:
    """max |after - before| / max |before| over the outputs, on ``reader``'s samples (fp32, ORT, no fusion)."""
    from normfold.verify.session import open_session

    a = open_session(before.SerializeToString(), "cpu", optimization="disable", where="the folded model")
    b = open_session(after.SerializeToString(), "cpu", optimization="disable", where="the equalized model")
    worst = 0.0
    for batch in reader.batches():
        for x, y in zip(a.run(None, batch), b.run(None, batch)):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            scale = float(np.abs(x).max()) or 1.0
            worst = max(worst, float(np.abs(y - x).max()) / scale)
    return worst


def _data_summary(calib, reader, val, labels, metric, input_range) -> dict:
    if calib is None:
        calibration = (f"DATA-FREE: activation ranges from the frozen norm statistics and an input range of "
                       f"[{input_range[0]:g}, {input_range[1]:g}], no calibration data")
    else:
        calibration = f"calibrated on {reader.samples} of {len(calib)} samples of {calib.source['path']}"
    if val is None:
        evaluated = f"evaluated on the calibration samples ({len(calib)}): agreement with fp32 only, no labels"
    else:
        evaluated = f"evaluated on {len(val)} samples of {val.source['path']}" + \
                    (f", labels {labels}, metric {metric.name}" if labels is not None else ", agreement with fp32")
    return {"calibration": None if calib is None else dict(calib.source, used=reader.samples),
            "validation": None if val is None else val.source,
            "labels": None if labels is None else str(labels), "metric": None if metric is None else metric.name,
            "data_free": calib is None, "input_range": None if input_range is None else list(input_range),
            "summary": f"{calibration}; {evaluated}"}


def _latency(report, src, int8_path, sig, rounds, log) -> None:
    """INT8 vs folded fp32 vs unfolded on onnxruntime CPU, ORT_ENABLE_ALL, batch 1 and 8, interleaved."""
    from normfold.bench import bench

    names = {"unfolded": src.unfolded, "folded": src.folded, "int8": int8_path}
    staged = Path(int8_path).parent / "bench"
    staged.mkdir(exist_ok=True)
    files = []
    for name, path in names.items():    # bench names variants by file stem: a link, not a copy of the model
        link = staged / f"{name}.onnx"
        if not link.exists():
            link.symlink_to(Path(path).resolve())
        files.append(link)
    sizes = (1, 8) if sig.dynamic_batch else (int(sig.shapes[0][0]),)
    log("latency: unfolded, folded, int8 interleaved ...")
    b = bench(onnx_files=[files[2], files[1], files[0]], sample_shape=src.shape[1:], providers=("cpu",),
              batch_sizes=sizes, optimizations=("all",), rounds=rounds, runs_per_round=3, warmup=3,
              creation_repeats=1)
    report.latency = [r.to_dict() for r in b.ratios()]
    report.latency_notes = [CUDA_NOTE]
    medians = {(m.variant, m.batch_size): m.stats.p50_ms for m in b.measurements}
    report.latency_ms = {f"{v}/b{bs}": ms for (v, bs), ms in medians.items()}


def _verdict(report: QuantReport) -> str:
    if not report.fold_verified:
        return "FAIL: the folded fp32 model did not pass normfold verify against the float64 oracle"
    e = report.final.evaluation
    if not report.gate.given:
        return "DONE (no gate given: --max-accuracy-drop / --min-agreement)"
    ok, _, why = report.gate.check(e)
    kept = f" with {len(report.kept_float)} nodes in float" if report.kept_float else ""
    return f"PASS{kept}: {why}" if ok else f"FAIL: {why} (the best found{kept})"
