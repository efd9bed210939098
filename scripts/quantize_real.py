"""INT8 on trained models with labelled data made here: digits CNNs and PaddleOCR's det/rec/cls files.

    python scripts/quantize_real.py                      # all models -> docs/quantize.{md,json} (~30 min)
    python scripts/quantize_real.py --only digits-bn,ppocr-cls --md /tmp/q.md --json /tmp/q.json

For each model, normfold.quantize measures every step on the labelled set
(each adds one thing to the row above): onnxruntime's quantize_static as it
comes (QDQ, s8 per-channel weights, u8 activations, MinMax), percentile
calibration, cross-layer equalization, bias correction, then the search keeps
the worst nodes in float until the gate (accuracy drop <= 1 point) holds.
Then latency on onnxruntime CPU (ORT_ENABLE_ALL, 2 threads, interleaved):
INT8 vs the folded fp32 file and vs the file as shipped (the unfolded export
for a PyTorch model). Per-tensor weights and the data-free mode are measured
on the ReLU models (digits) beside per-channel.

Data (nothing downloaded at run time but PaddleOCR's files, fetched once from
the rapidocr-onnxruntime wheel on PyPI by tests/fold_onnx/third_party.py):
the digits' 360 labelled test images (calibration: 256 training images);
text rendered by scripts/ocr_data.py with PIL's own TrueType font: rec 300
lines, cls 200 lines (half rotated 180 degrees), det 100 pages (evaluation
seed 1; calibration: 64 other lines/pages, seed 2). Metrics
(scripts/ocr_metric.py): rec exact match (CTC greedy with the file's own
dictionary) and character accuracy; cls top-1; det recall and precision at
IoU 0.5. resnet18-bn (the zoo's, random weights with populated statistics):
speed, and top-1 agreement with fp32 on 1,000 seeded normal inputs (no gate:
with random weights the logits of noise are nearly tied, so agreement there
says little; the logits' SQNR is in the JSON).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from normfold.atomic import write_text  # noqa: E402
from normfold.quantize import QuantOptions, quantize  # noqa: E402

GATE = 0.01
MODELS = ("digits-bn", "digits-iternorm", "ppocr-cls", "ppocr-rec", "ppocr-det", "resnet18-bn")


def digits(norm: str, work: Path, rounds: int) -> list[dict]:
    from tests.quantize._digits import trained, write_sets

    model, data = trained(norm, epochs=12)
    cal, test, labels = write_sets(data, work, n_calibration=256)
    x = data.x_test[:1]
    rows = []
    for label, kw in (("per-channel", {}), ("per-tensor", {"options": QuantOptions(per_channel=False)})):
        _, r = quantize(model, cal, example_input=x, validation=test, labels=labels, max_accuracy_drop=GATE,
                        bench_rounds=rounds, **kw)
        rows.append(_row(f"digits-{norm}", label, r))
        rows[-1]["entropy"] = _entropy(model, cal, test, labels, example_input=x, per_channel=not kw)
    _, r = quantize(model, None, data_free=True, input_range=(0, 1), example_input=x, validation=test,
                    labels=labels, max_accuracy_drop=GATE, bench_rounds=rounds)
    rows.append(_row(f"digits-{norm}", "data-free, per-channel", r))
    return rows


def ppocr(kind: str, work: Path, rounds: int) -> list[dict]:
    import ocr_data
    import ocr_metric
    from tests.fold_onnx import third_party

    path = third_party.path(f"ppocr-{kind}")
    n = {"rec": 300, "cls": 200, "det": 100}[kind]
    val, cal = work / "val", work / "cal"
    ocr_data.write(kind, n, 1, val)
    ocr_data.write(kind, 64 if kind != "det" else 32, 2, cal)
    shape = {"rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192), "det": (1, 3, 320, 320)}[kind]
    metric = {"rec": f"{ROOT}/scripts/ocr_metric.py:rec_exact", "cls": None,
              "det": f"{ROOT}/scripts/ocr_metric.py:det_recall"}[kind]
    q, r = quantize(path, cal / f"{kind}.npz", input_shape=shape, validation=val / f"{kind}.npz",
                    labels=val / f"{kind}.csv", metric=metric, max_accuracy_drop=GATE, bench_rounds=rounds,
                    batch_size=8)
    row = _row(f"ppocr-{kind}", "per-channel", r)
    row["entropy"] = _entropy(path, cal / f"{kind}.npz", val / f"{kind}.npz", val / f"{kind}.csv", input_shape=shape,
                              metric=metric, batch_size=8)
    with tempfile.TemporaryDirectory() as tmp:      # every metric of the kind, on the shipped and the INT8 file
        int8 = Path(tmp) / "int8.onnx"
        onnx.save(q, int8)
        row["shipped_metrics"] = ocr_metric.evaluate(kind, val, path)
        row["int8_metrics"] = ocr_metric.evaluate(kind, val, int8)
    return [row]


def resnet18(work: Path, rounds: int) -> list[dict]:
    from normfold.zoo import build

    model = build("resnet18-bn")
    rng = np.random.default_rng(0)
    cal, val = work / "cal.npz", work / "val.npz"
    np.savez(cal, x=rng.standard_normal((32, 3, 224, 224)).astype(np.float32))
    np.savez(val, x=rng.standard_normal((1000, 3, 224, 224)).astype(np.float32))
    _, r = quantize(model, cal, example_input=torch.randn(1, 3, 224, 224), validation=val, measure_steps=False,
                    bench_rounds=rounds)
    rows = [_row("resnet18-bn", "per-channel", r)]
    # per-tensor weights on a ReLU network: what equalization and bias correction buy over naive per-tensor
    small, small_cal = work / "small.npz", work / "small_cal.npz"
    np.savez(small, x=rng.standard_normal((200, 3, 112, 112)).astype(np.float32))
    np.savez(small_cal, x=rng.standard_normal((32, 3, 112, 112)).astype(np.float32))
    _, r = quantize(model, small_cal, example_input=torch.randn(1, 3, 112, 112), validation=small,
                    options=QuantOptions(per_channel=False), latency=False)
    rows.append(_row("resnet18-bn", "per-tensor, 112x112, steps", r))
    return rows


def _entropy(model, cal, val, labels, per_channel: bool = True, **kw) -> dict:
    """The third calibration method beside the steps' MinMax and percentile rows: entropy (KL), no
    equalization, no bias correction, no search: the metric of the INT8 file."""
    options = QuantOptions(per_channel=per_channel, calibration="entropy", equalize=False, bias_correction=False,
                           search=False)
    _, r = quantize(model, cal, validation=val, labels=labels, options=options, measure_steps=False, latency=False,
                    **kw)
    e = r.final.evaluation
    return {"fp32": e.fp32_score, "int8": e.int8_score, "agreement": e.agreement}


def _row(model: str, variant: str, r) -> dict:
    lat = {f"{l['numerator']}/b{l['batch_size']}": l["latency_ratio"] for l in r.latency}
    metric = r.final.evaluation.metric
    return {"model": model, "variant": variant, "verdict": r.verdict, "ok": r.ok,
            "metric": metric.rsplit(":", 1)[-1] if metric else None,
            "steps": [{"name": s.name, "fp32": s.evaluation.fp32_score, "int8": s.evaluation.int8_score,
                       "agreement": s.evaluation.agreement, "float_nodes": len(s.float_nodes),
                       "sqnr_db": min(o.sqnr_db for o in s.evaluation.outputs)} for s in r.steps],
            "kept_float": r.kept_float, "speedup": lat, "latency_ms": getattr(r, "latency_ms", {}),
            "equalized_pairs": len((r.equalization or {}).get("pairs", [])),
            "bias_corrected": len(r.bias_changes), "data": re.sub(r"/tmp/[^ ,;]*/", "", r.data["summary"]),
            "report": _brief(r.to_dict())}


def _brief(report: dict) -> dict:
    """The report without the fold's per-norm lists and with the 20 worst nodes only (the JSON stays small)."""
    fold = report.pop("fold", {})
    report["fold_counts"] = {"folded": len(fold.get("folded", [])), "skipped": len(fold.get("skipped", []))}
    report["node_errors"] = report["node_errors"][:20]
    return report


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def markdown(rows: list[dict], command: str, seconds: float) -> str:
    out = ["# INT8 with normfold quantize: trained models, labelled data made here", "",
           f"Regenerate: `{command}` ({seconds / 60:.0f} min on this 2-core machine). "
           "onnxruntime CPU provider, 2 intra-op threads; accuracy on labelled data, latency interleaved "
           "(paired median ratio of rounds, ORT_ENABLE_ALL). Each step adds one thing to the row above; "
           "the last row is the file written. Gate: accuracy drop <= 1 point (none for resnet18-bn).",
           ""]
    for row in rows:
        out += [f"## {row['model']} ({row['variant']})", "", f"{row['data']}", "",
                f"| step | fp32 {row['metric'] or ''} | INT8 | drop | agreement with fp32 | output SQNR | "
                "Conv/Gemm in float |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for s in row["steps"]:
            drop = None if s["fp32"] is None else s["fp32"] - s["int8"]
            out.append(f"| {s['name']} | {_pct(s['fp32'])} | {_pct(s['int8'])} | {_pct(drop)} | "
                       f"{_pct(s['agreement'])} | {s['sqnr_db']:.1f} dB | {s['float_nodes']} |")
        sp = row["speedup"]
        out += ["", "INT8 speed-up (latency ratio, >1 = INT8 faster): " + ", ".join(
            f"vs {k.split('/')[0] if not k.startswith('unfolded') else 'as shipped/unfolded'} "
            f"batch {k.split('/b')[1]}: **{v:.2f}x**" for k, v in sorted(sp.items())) or "not measured", ""]
        if "entropy" in row:
            en = row["entropy"]
            out.append(f"Entropy calibration instead (no equalization, bias correction or search): INT8 "
                       f"{_pct(en['int8'])}, agreement {_pct(en['agreement'])}.")
        if row.get("kept_float"):
            out.append(f"Kept in float by the search: {', '.join(row['kept_float'])}.")
        out.append(f"Equalized pairs: {row['equalized_pairs']}; bias-corrected layers: {row['bias_corrected']}. "
                   f"Verdict: {row['verdict']}")
        if "int8_metrics" in row:
            out.append("All metrics, shipped fp32 file vs INT8 file: " + ", ".join(
                f"{k} {row['shipped_metrics'][k]:.4f} -> {row['int8_metrics'][k]:.4f}" for k in row["int8_metrics"]))
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--bench-rounds", type=int, default=10)
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "quantize.md")
    p.add_argument("--json", type=Path, default=ROOT / "docs" / "quantize.json")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    start, rows = time.perf_counter(), []
    for name in args.only.split(","):
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"normfold-{name}-") as tmp:
            work = Path(tmp)
            if name.startswith("digits-"):
                new = digits(name.split("-", 1)[1], work, args.bench_rounds)
            elif name.startswith("ppocr-"):
                new = ppocr(name.split("-", 1)[1], work, args.bench_rounds)
            elif name == "resnet18-bn":
                new = resnet18(work, args.bench_rounds)
            else:
                p.error(f"unknown model {name!r}")
        rows += new
        for row in new:
            print(f"{row['model']:<16} {row['variant']:<24} {row['verdict']}  speedup {row['speedup']}  "
                  f"({time.perf_counter() - t:.0f}s)", flush=True)
    command = "python scripts/quantize_real.py" + (f" --only {args.only}" if args.only != ",".join(MODELS) else "")
    write_text(args.md, markdown(rows, command, time.perf_counter() - start))
    write_text(args.json, json.dumps(rows, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
