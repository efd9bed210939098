"""normfold quantize: fold, equalize, quantize to INT8 (onnxruntime, QDQ), correct biases, search, measure.

MODEL is what `normfold run` takes (zoo name, path/to/file.py:factory, .onnx).
Writes, into --out DIR, model.onnx (folded fp32, verified against the float64
oracle as `run` does), model.int8.onnx (QDQ: runs on any onnxruntime provider)
and, for a PyTorch MODEL, model.unfolded.onnx.

--calibrate DATA sets the activation ranges; --inputs VAL (with --labels and
--metric) is where accuracy is measured, streamed. Each step is measured on
it: onnxruntime's quantize_static with MinMax, the chosen calibration,
cross-layer equalization, bias correction. When the INT8 model misses the gate
(--max-accuracy-drop, --min-agreement), the nodes whose own quantization is
worst (SQNR, onnxruntime's qdq_loss_debug) are kept in float, fewest first,
until it holds. Then latency: INT8 vs folded vs unfolded, onnxruntime CPU.

INT8 is not an equivalence claim: the report is agreement and accuracy
against fp32, errors and SQNR per output, and speed. Exit 0 when the gate
holds (or none is given), 1 when no configuration meets it (the best found is
written), 2 bad input (one line, nothing written).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import staged
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_model_arguments,
    check_paths,
    finite_floats,
    is_onnx,
    model_and_input,
    model_file,
    output,
    outputs_in,
    positive_floats,
    positive_int,
    write_json_atomic,
)
from .verify_data import _fraction, _progress, _size

TORCH_FILES = ["model.onnx", "model.unfolded.onnx", "model.int8.onnx"]
ONNX_FILES = ["model.onnx", "model.int8.onnx"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="INT8 that keeps its accuracy: fold, equalize, quantize, search",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--calibrate", default=None, metavar="DATA",
                   help="calibration data: a folder of images/.npy, a glob, or an .npz (as verify --inputs)")
    p.add_argument("--data-free", action="store_true",
                   help="no calibration data: activation ranges and bias correction from the frozen norm "
                        "statistics (needs --input-range and --inputs)")
    p.add_argument("--input-range", type=finite_floats, default=None, metavar="LOW,HIGH",
                   help="with --data-free: the values the model's input takes (e.g. 0,1)")
    p.add_argument("--sigmas", type=float, default=6.0, metavar="K",
                   help="with --data-free: ranges are mean +- K std of the frozen statistics (default 6)")
    p.add_argument("--calibration-samples", type=positive_int, default=256, metavar="N",
                   help="use at most N calibration samples, evenly spaced (default 256)")
    p.add_argument("--inputs", default=None, metavar="VAL", help="where accuracy is measured (same forms)")
    p.add_argument("--labels", type=Path, default=None, metavar="FILE",
                   help="CSV name,label (label may be any string) or the --inputs folder laid out one per class")
    p.add_argument("--metric", default=None, metavar="FILE.py:FUNCTION",
                   help="function(outputs, labels) -> one score per sample (default: top-1 of the first "
                        "classifier output)")
    p.add_argument("--resize", type=_size, default=None, metavar="H,W", help="resize images (bilinear)")
    p.add_argument("--mean", type=finite_floats, default=None, help="per-channel mean subtracted from images")
    p.add_argument("--std", type=positive_floats, default=None, help="per-channel std images are divided by")
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N", help="samples per batch")
    g = p.add_argument_group("the gate")
    g.add_argument("--max-accuracy-drop", type=_fraction, default=None, metavar="F",
                   help="with --labels: fail when INT8's metric is more than F below fp32's (0.01 = 1 point)")
    g.add_argument("--min-agreement", type=_fraction, default=None, metavar="F",
                   help="fail when INT8's top-1 (or sequence) agreement with fp32 is below F")
    q = p.add_argument_group("quantization")
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    q.add_argument("--activations", choices=("u8", "s8"), default="u8", help="activation type (default u8)")
    q.add_argument("--calibration", choices=("minmax", "percentile", "entropy"), default="percentile",
                   help="activation range method (default percentile)")
    q.add_argument("--percentile", type=float, default=99.999, help="for --calibration percentile (default 99.999)")
    q.add_argument("--op-types", default=None, metavar="Conv,Gemm", help="quantize only these op types")
    q.add_argument("--no-equalize", action="store_true", help="skip cross-layer equalization")
    q.add_argument("--no-bias-correction", action="store_true", help="skip bias correction")
    q.add_argument("--absorb-high-bias", action="store_true",
                   help="after equalization, absorb high biases into the next layer (DFQ; off by default: "
                        "measured to cost accuracy, docs/quantize.md)")
    q.add_argument("--no-search", action="store_true", help="do not keep nodes in float when the gate fails")
    q.add_argument("--max-float", type=int, default=None, metavar="N", help="keep at most N nodes in float")
    q.add_argument("--final-only", action="store_true", help="measure only the final configuration, not each step")
    p.add_argument("--no-bench", action="store_true", help="skip the latency measurement")
    p.add_argument("--bench-rounds", type=positive_int, default=10, metavar="N", help="interleaved rounds (default 10)")
    p.add_argument("--out", type=Path, default=Path("normfold-quant"), help="output directory (default ./normfold-quant)")
    p.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from normfold.quantize import QuantizeError, QuantOptions, quantize

    names = ONNX_FILES if is_onnx(args.model) else TORCH_FILES
    inputs = [("MODEL", model_file(args.model))] + [(flag, _path(v)) for flag, v in
                                                     (("--calibrate", args.calibrate), ("--inputs", args.inputs),
                                                      ("--labels", args.labels))]
    check_paths(outputs_in("--out", args.out, names, new_dirs=True) + output("--json", args.json), inputs)
    if args.calibrate is None and not args.data_free:
        raise UsageError("give --calibrate DATA (calibration inputs: a folder, glob or .npz), or --data-free")
    if args.input_range is not None and not args.data_free:
        raise UsageError("--input-range is for --data-free (with --calibrate, the data sets the ranges)")
    try:
        options = QuantOptions(
            per_channel=not args.per_tensor, activations=args.activations, calibration=args.calibration,
            percentile=args.percentile, calibration_samples=args.calibration_samples,
            equalize=not args.no_equalize, bias_correction=not args.no_bias_correction,
            absorb_high_bias=args.absorb_high_bias, search=not args.no_search,
            max_float=args.max_float, sigmas=args.sigmas, op_types=tuple(args.op_types.split(",")) if args.op_types else None)
    except QuantizeError as exc:
        raise UsageError(str(exc)) from exc
    if is_onnx(args.model):
        model, example, shape, name = args.model, None, args.input_shape, args.model
    else:
        name, model, shape, example = model_and_input(args)
    with staged(args.out) as stage:
        try:
            with _progress(args) as progress:
                _, report = quantize(
                    model, args.calibrate, example_input=example, input_shape=shape, validation=args.inputs,
                    labels=args.labels, metric=args.metric, max_accuracy_drop=args.max_accuracy_drop,
                    min_agreement=args.min_agreement, options=options, data_free=args.data_free,
                    input_range=args.input_range, resize=args.resize, mean=args.mean,
                    std=args.std, batch_size=args.batch_size, measure_steps=not args.final_only,
                    latency=not args.no_bench, bench_rounds=args.bench_rounds, workdir=stage.directory,
                    progress=progress)
        except QuantizeError as exc:
            raise UsageError(str(exc)) from exc
        report.model = name
        files = dict(zip(("folded", "unfolded", "int8") if len(names) == 3 else ("folded", "int8"),
                         stage.commit(names)))
    for line in report.lines():
        print(line)
    print(f"wrote      {', '.join(map(str, files.values()))}")
    if args.json is not None:
        write_json_atomic(dict(report.to_dict(), files={k: str(v) for k, v in files.items()}), args.json)
    return EXIT_OK if report.ok else EXIT_FAILED


def _path(value):
    """A file the command reads (for the output-overwrite check), or None for a glob or nothing."""
    if value is None:
        return None
    text = str(value)
    return None if any(c in text for c in "*?[") else Path(text)
