"""Measure normfold and its peers on timm and torchvision architectures: docs/real_models.{md,json}.

Every model of ``normfold.zoo.external`` (the smallest variant of each family,
no weights, statistics randomized to plausible values), on its seeded input:

* normfold: norms folded / skipped (with the reasons), and the folded model's
  error, eager and as ONNX on onnxruntime CPU (the folded model exported with
  the exporter's own BatchNorm fusions off, so the file holds normfold's fold
  alone);
* ``torch.fx.experimental.optimization.fuse``: the norms it fuses, and its
  model's error, or the reason it fails;
* the dynamo exporter with its defaults (``torch.onnx.export(model, (x,),
  dynamo=True)``, ``optimize=True``): the BatchNormalization / Mul / Add nodes
  it leaves, next to the unfolded baseline's (normfold's export with
  ``fold=False``: the same optimizer minus its BatchNorm fusions) and normfold's
  folded file's, and its error on onnxruntime CPU.

Errors are max |run - oracle|, the oracle being the ORIGINAL model in float64;
a run is correct when that is within normfold's fp32 tolerance
(``normfold.verify.tolerance``: 8 x the original fp32 model's own error + 64
fp32 ulps of the output scale). Writes atomically.

    .venv/bin/python scripts/real_models.py [--models timm/efficientnet_b0,...] [--out docs]
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import re
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import normfold
from normfold._messages import typed_line
from normfold.atomic import write_text
from normfold.export import op_counts
from normfold.nn import is_norm
from normfold.verify.oracle import eager_outputs
from normfold.verify.session import open_session, run_session
from normfold.verify.tolerance import Tolerance
from normfold.zoo import external
from normfold.zoo.peers import dynamo_default, fx_fuse
from normfold.zoo.randomize import has_running_stats

COUNTED_OPS = ("BatchNormalization", "Mul", "Add")
MAX_REASONS = 6
PER_SAMPLE = "statistics of each sample"   # normfold's reason for LayerNorm/GroupNorm: no fold removes them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="",
                   help="comma-separated names of normfold.zoo.external (default: all); with an existing "
                        "real_models.json in --out, only their rows are replaced (the update is noted)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="directory for real_models.{md,json}")
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite real_models.md (and the summary) from real_models.json in --out")
    args = p.parse_args(argv)
    if args.render_only:
        return render(args.out / "real_models.json")
    names = [n for n in args.models.split(",") if n] or list(external.EXTERNAL)
    unknown = [n for n in names if n not in external.EXTERNAL]
    if unknown:
        print(f"unknown models: {', '.join(unknown)}; see normfold.zoo.external.EXTERNAL", file=sys.stderr)
        return 2
    if not args.out.is_dir():
        print(f"--out {args.out} is not a directory", file=sys.stderr)
        return 2

    rows = []
    for name in names:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = measure(name)
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(one_line(row), flush=True)
        rows.append(row)

    command = "python scripts/real_models.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    path = args.out / "real_models.json"
    data = {"command": command, "environment": environment(), "updates": [], "models": rows}
    if args.models and path.is_file():
        data = merge(json.loads(path.read_text()), rows, command)
    write(path, data)
    return 0


def merge(data: dict, rows: list[dict], command: str) -> dict:
    """``data`` with the rows of the same names replaced, in ``EXTERNAL``'s order, and the update noted."""
    by_name = {r["name"]: r for r in data["models"]} | {r["name"]: r for r in rows}
    data["models"] = [by_name[n] for n in external.EXTERNAL if n in by_name]
    data["updates"] = [*data.get("updates", []), command]
    return data


def render(path: Path) -> int:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 2
    write(path, data)
    return 0


def write(path: Path, data: dict) -> None:
    """real_models.json with its summary (and the README's line), and real_models.md beside it."""
    data["summary"] = summary(data["models"])
    data["summary"]["readme_line"] = summary_line(data["summary"], link="docs/real_models.md")
    data.setdefault("updates", [])
    data = {k: data[k] for k in ("command", "updates", "environment", "summary", "models")}
    write_text(path, json.dumps(data, indent=2) + "\n")
    write_text(path.with_suffix(".md"), markdown(data))
    print(f"wrote {path.with_suffix('.md')}, {path}")


def measure(name: str) -> dict:
    spec = external.EXTERNAL[name]
    model = external.build(name)
    x = external.example_input(name)
    oracle = eager_outputs(model, (x,), torch.float64)[0]
    e32 = float(np.abs(eager_outputs(model, (x,), torch.float32)[0] - oracle).max())
    allowed = Tolerance().allowed(e32, float(np.abs(oracle).max()))

    def check(output) -> dict:
        err = float(np.abs(np.asarray(output, dtype=np.float64) - oracle).max())
        return {"max_abs": err, "ratio": err / allowed, "ok": bool(err <= allowed)}

    norms = [n for n, m in model.named_modules() if is_norm(m) or has_running_stats(m)]
    row = {
        "name": name, "source": spec.source, "family": spec.family, "frozen": spec.frozen,
        "input_shape": list(x.shape),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "norms": len(norms),
        "batch_norms": sum(1 for m in model.modules() if has_running_stats(m)),
        "allowed": allowed, "fp32_error": e32,
    }
    with tempfile.TemporaryDirectory() as tmp:
        row["normfold"] = normfold_row(model, x, Path(tmp), check)
        row["fx_fuse"] = fx_row(model, x, check)
        row["dynamo_default"] = dynamo_row(model, x, check)
        row["unfolded_ops"] = _guard(lambda: counted(export(model, x, Path(tmp) / "base.onnx").op_counts))
    return row


def normfold_row(model, x, tmp: Path, check) -> dict:
    try:
        result = normfold.fold(model, x)
    except Exception as exc:
        return {"error": f"normfold.fold raised {typed_line(exc)}"}
    report = result.report
    out = {
        "folded": len(report.folded), "skipped": len(report.skipped),
        "skip_reasons": [{"norm": s.norm, "reason": s.reason} for s in report.skipped],
        "untraced": dict(report.untraced),
        "eager": _guard(lambda: check(eager_outputs(result.model, (x,), torch.float32)[0])),
    }
    try:
        exported = export(result.model, x, tmp / "folded.onnx")
    except Exception as exc:
        out["onnx"] = {"error": typed_line(exc)}
        return out
    out["ops"] = counted(exported.op_counts)
    out["onnx"] = _guard(lambda: check(run_session(open_session(exported.path, "cpu"), (x.numpy(),))[0]))
    return out


def fx_row(model, x, check) -> dict:
    try:
        fused, names = fx_fuse(model)
    except Exception as exc:
        return {"error": f"symbolic_trace: {typed_line(exc)}"}
    return {"fused": len(names), "eager": _guard(lambda: check(eager_outputs(fused, (x,), torch.float32)[0]))}


def dynamo_row(model, x, check) -> dict:
    try:
        proto = dynamo_default(model, (x,))
    except Exception as exc:
        return {"error": typed_line(exc)}
    out = {"ops": counted(op_counts(proto))}
    out["onnx"] = _guard(lambda: check(run_session(open_session(proto.SerializeToString(), "cpu"), (x.numpy(),))[0]))
    return out


def export(model, x, path: Path) -> normfold.ExportResult:
    """normfold's export without its fold, at the input's static shape and without onnxsim, as the dynamo
    default exports: the files then differ from the default's only in the BatchNorm fusions and the fold."""
    return normfold.export(model, x, path, fold=False, dynamic_batch=False, simplify=False)


def counted(counts: dict[str, int]) -> dict[str, int]:
    """The nodes of each COUNTED_OPS type, from ``op_counts``."""
    return {op: counts.get(op, 0) for op in COUNTED_OPS}


def _guard(fn):
    try:
        return fn()
    except Exception as exc:
        return {"error": typed_line(exc)}


# ---------------------------------------------------------------- reporting


def correct(run: dict | None) -> bool:
    return bool(run) and run.get("ok", False)


def summary(rows: list[dict]) -> dict:
    nf = [r["normfold"] for r in rows]
    fx = [r["fx_fuse"] for r in rows]
    dy = [r["dynamo_default"] for r in rows]
    def bn_nodes(ops) -> int:
        return ops.get("BatchNormalization", 0) if ops and "error" not in ops else 0

    return {
        "models": len(rows),
        "timm": sum(r["source"] == "timm" and not r["frozen"] for r in rows),
        "torchvision": sum(r["source"] == "torchvision" and not r["frozen"] for r in rows),
        "frozen": sum(r["frozen"] for r in rows),
        "norms": sum(r["norms"] for r in rows),
        "normfold_folded": sum(n.get("folded", 0) for n in nf),
        "normfold_skipped": sum(n.get("skipped", 0) for n in nf),
        "normfold_skipped_per_sample": sum(PER_SAMPLE in x["reason"] for n in nf for x in n.get("skip_reasons", [])),
        "normfold_correct": sum(correct(n.get("eager")) and correct(n.get("onnx")) for n in nf),
        "fx_fused": sum(f.get("fused", 0) for f in fx),
        "fx_fails": sum("error" in f for f in fx),
        "fx_correct": sum(correct(f.get("eager")) for f in fx),
        "dynamo_fails": sum("error" in d for d in dy),
        "dynamo_correct": sum(correct(d.get("onnx")) for d in dy),
        "bn_nodes_unfolded": sum(bn_nodes(r["unfolded_ops"]) for r in rows),
        "bn_nodes_dynamo": sum(bn_nodes(d.get("ops")) for d in dy),
        "bn_nodes_normfold": sum(bn_nodes(n.get("ops")) for n in nf),
    }


def one_line(row: dict) -> str:
    nf, fx, dy = row["normfold"], row["fx_fuse"], row["dynamo_default"]
    return (f"{row['name']:38s} norms {row['norms']:4d}  normfold {_folded(nf):>9s} {_verdict(nf.get('eager'))}/"
            f"{_verdict(nf.get('onnx'))}  fx {_fx(fx):>12s}  dynamo {_ops(dy.get('ops')):>12s} "
            f"{_verdict(dy.get('onnx'))}  ({row['seconds']} s)")


def _folded(nf: dict) -> str:
    return nf["error"][:40] if "error" in nf else f"{nf['folded']}/{nf['skipped']}"


def _verdict(run: dict | None) -> str:
    if not run:
        return "-"
    if "error" in run:
        return "fails"
    return f"{run['ratio']:.2g} {'✓' if run['ok'] else '✗'}"


def _fx(fx: dict) -> str:
    return "fails" if "error" in fx else f"{fx['fused']} fused"


def _ops(ops: dict | None) -> str:
    if not ops or "error" in ops:
        return "-"
    return "·".join(str(ops[o]) for o in COUNTED_OPS)


def markdown(data: dict) -> str:
    s, rows = data["summary"], data["models"]
    env = data["environment"]
    lines = [
        "# normfold and its peers on timm and torchvision architectures",
        "",
        f"Recomputed by `{data['command']}` ({env['machine']}; torch {env['torch']}, timm {env['timm']}, "
        f"torchvision {env['torchvision']}, onnxscript {env['onnxscript']}, onnxruntime {env['onnxruntime']})"
        + "".join(f"; rows since updated by `{u}`" for u in data["updates"]) + ".",
        "",
        summary_line(s),
        "",
        f"torch.fx's `fuse` cannot trace {s['fx_fails']} of the models and its model is right on {s['fx_correct']}; "
        f"the dynamo exporter's default export fails on {s['dynamo_fails']} and is right on {s['dynamo_correct']}.",
        "",
        "Each model is the smallest variant of its family from `normfold.zoo.external`, built without weights; "
        "its norm statistics and affines are randomized to plausible values (`normfold.zoo.randomize`), because "
        "fresh statistics make any fold exact. Input: the seeded batch of 2 in the `input` column.",
        "",
        "* **norms**: modules for which `normfold.nn.is_norm` is true or that hold running statistics "
        "(BatchNormAct2d, FrozenBatchNorm2d, FrozenBatchNormAct2d count).",
        "* **normfold**: norms folded / skipped (every skipped norm has a reason in the report; the distinct "
        "reasons are listed below the table).",
        "* **fx fuse**: `torch.fx.experimental.optimization.fuse`: norms fused, or `fails` when "
        "`torch.fx.symbolic_trace` cannot trace the model.",
        "* **BN·Mul·Add**: BatchNormalization, Mul and Add nodes in the ONNX file: *unfolded*, the baseline "
        "(normfold's `export(fold=False, simplify=False)`: the dynamo exporter's optimizer minus its BatchNorm "
        "fusions); "
        "*dynamo*, `torch.onnx.export(model, (x,), dynamo=True)` with its default optimizer; *normfold*, "
        "normfold's folded model through the baseline's exporter (so the file holds normfold's fold alone). "
        "All three at the input's static shape, none through onnxsim. Mul/Add also count what is not a norm "
        "(residual sums, attention, squeeze-excitation, SiLU, a folded bias on a MatMul), and the default "
        "optimizer fuses GELU's Div·Erf·Mul·Add into one Gelu node where normfold's exporter keeps them: on GELU "
        "models (ConvNeXt, Swin, ViT, FastViT, ...) the Mul/Add columns differ for that reason alone.",
        "* **error columns**: max |run − oracle| / allowed, the oracle being the original model in float64 and "
        "allowed = 8 × the original fp32 model's own error + 64 fp32 ulps of max|oracle| (normfold's tolerance); "
        "✓ when ≤ 1. normfold's is eager / ONNX on onnxruntime CPU; fx fuse's is eager; dynamo's is ONNX on "
        "onnxruntime CPU.",
        "",
        "| model | family | input | norms | normfold folded/skipped | normfold err eager / ONNX | fx fuse | "
        "fx err | BN·Mul·Add unfolded | dynamo | normfold | dynamo err |",
        "|---|---|---|---:|---:|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        nf, fx, dy = r["normfold"], r["fx_fuse"], r["dynamo_default"]
        nf_ops = nf.get("ops") if "error" not in nf.get("onnx", {}) else None
        lines.append(
            f"| `{r['name']}` | {r['family']} | {r['input_shape'][2]} | {r['norms']} | {_folded(nf)} | "
            f"{_verdict(nf.get('eager'))} / {_verdict(nf.get('onnx'))} | {_fx(fx)} | {_verdict(fx.get('eager'))} | "
            f"{_ops(r['unfolded_ops'])} | {_ops(dy.get('ops'))} | {_ops(nf_ops)} | {_verdict(dy.get('onnx'))} |"
        )
    lines += ["", "## Why norms were skipped", "",
              "Reasons with the numbers in names replaced by `#`, most frequent first, per model.", ""]
    if not any(r["normfold"].get("skip_reasons") for r in rows):
        lines.append("None was skipped.")
    for r in rows:
        reasons = collections.Counter(re.sub(r"\d+", "#", x["reason"]) for x in r["normfold"].get("skip_reasons", []))
        if reasons:
            lines.append(f"* `{r['name']}` ({sum(reasons.values())}):")
            lines += [f"  * {n}× {_clip(reason)}" for reason, n in reasons.most_common(MAX_REASONS)]
            if len(reasons) > MAX_REASONS:
                lines.append(f"  * … and {len(reasons) - MAX_REASONS} more (docs/real_models.json has them all)")
    failures = [(r["name"], what, err) for r in rows for what, err in _errors(r)]
    if failures:
        lines += ["", "## Failures", "", "A run that raised instead of giving an output (`fails` in the table).", ""]
        lines += [f"* `{name}`, {what}: {_clip(err)}" for name, what, err in failures]
    return "\n".join(lines) + "\n"


def _errors(row: dict):
    """(what, error) for every step of the row that raised: a tool, or one of its runs."""
    for tool, key in (("normfold", "normfold"), ("fx fuse", "fx_fuse"), ("dynamo", "dynamo_default")):
        part = row[key]
        if "error" in part:
            yield tool, part["error"]
        for run in ("eager", "onnx"):
            if isinstance(part.get(run), dict) and "error" in part[run]:
                yield f"{tool} {run}", part[run]["error"]
    if "error" in row["unfolded_ops"]:
        yield "unfolded export", row["unfolded_ops"]["error"]


def summary_line(s: dict, link: str = "") -> str:
    """The table in one sentence; with ``link``, the README's line (tests/test_docs.py checks it is there)."""
    return (
        f"On {s['timm']} timm and {s['torchvision']} torchvision architectures (and {s['frozen']} with frozen "
        f"batch norms), normfold folds {s['normfold_folded']} of {s['norms']} norm layers and skips "
        f"{s['normfold_skipped']} with a reason ({s['normfold_skipped_per_sample']} of them LayerNorm/GroupNorm, "
        f"which normalize with each sample's statistics); the folded model equals the float64 original within the fp32 "
        f"tolerance, eager and on onnxruntime, on {s['normfold_correct']} of {s['models']}. On the same models "
        f"torch.fx's `fuse` fuses {s['fx_fused']} norms, and the dynamo exporter's own optimizer leaves "
        f"{s['bn_nodes_dynamo']} of {s['bn_nodes_unfolded']} BatchNormalization nodes (normfold "
        f"{s['bn_nodes_normfold']})" + (f": see [{link}]({link})." if link else ".")
    )


def _clip(text: str, n: int = 220) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def environment() -> dict:
    import onnxruntime
    import onnxscript
    import timm
    import torchvision

    return {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "torchvision": torchvision.__version__, "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


if __name__ == "__main__":
    sys.exit(main())
