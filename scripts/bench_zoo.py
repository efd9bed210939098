"""Benchmark the zoo's ResNet-18 norm variants and write docs/bench_zoo.{md,png,json}.

For each model: unfolded vs folded vs norm-free twin on onnxruntime (CPU, and
CUDA when it really works), DISABLE_ALL and ENABLE_ALL, interleaved. The
markdown starts with the command that reproduces it, states the machine and
thread settings, and checks the issue's targets against the measurements:

* CPU ENABLE_ALL: folded within 2% of the twin (folded/twin <= 1.02);
* whitening models (IterNorm, ZCA, Cholesky, PCA, decorrelation): folded at
  least 1.15x faster than unfolded at batch 1 (CPU ENABLE_ALL);
* session creation of the folded model no slower than the unfolded one.

    .venv/bin/python scripts/bench_zoo.py [--models a,b] [--batch-sizes 1,8] [--rounds 20]
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

import normfold
from normfold import zoo
from normfold.atomic import write_text
from normfold.bench.plot import plot_png
from normfold.cli._common import parse_shape, write_json_atomic

DEFAULT_MODELS = ("resnet18-bn", "resnet18-center", "resnet18-iternorm", "resnet18-zca", "resnet18-cholesky")
WHITENING = ("iternorm", "zca", "cholesky", "pca", "decorr")
TWIN_TOLERANCE, WHITENING_SPEEDUP = 1.02, 1.15


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo names")
    p.add_argument("--input-shape", type=parse_shape, default=(1, 3, 224, 224))
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--opt-levels", default="disable,all")
    p.add_argument("--providers", default=None, help="default: cpu, plus cuda when it really works")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--runs-per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--creation-repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("docs"), help="directory for bench_zoo.{md,png,json}")
    args = p.parse_args(argv)

    names = [n for n in args.models.split(",") if n]
    missing = [n for n in names if n not in zoo.ZOO]
    names = [n for n in names if n in zoo.ZOO]
    if not names:
        print(f"none of the models exist in the zoo: {', '.join(missing)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    providers = tuple(args.providers.split(",")) if args.providers else None

    reports, started, load_before = [], time.time(), os.getloadavg()
    for name in names:
        print(f"== {name}", file=sys.stderr)
        model = zoo.build(name)
        x = torch.randn(args.input_shape, generator=torch.Generator().manual_seed(0))
        reports.append(normfold.bench(
            model, x, name=name, providers=providers, batch_sizes=batch_sizes,
            optimizations=tuple(args.opt_levels.split(",")), threads=args.threads, rounds=args.rounds,
            runs_per_round=args.runs_per_round, warmup=args.warmup,
            creation_repeats=args.creation_repeats,
            log=lambda msg: print(f"   {msg}", file=sys.stderr)))
    elapsed, load_after = time.time() - started, os.getloadavg()

    command = "python scripts/bench_zoo.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    png = plot_png(reports, args.out / "bench_zoo.png", title="onnxruntime latency per sample: unfolded vs folded vs norm-free twin")
    write_json_atomic({"command": command, "missing_models": missing, "reports": [r.to_dict() for r in reports]},
                      args.out / "bench_zoo.json")
    text = markdown(reports, command.strip(), missing, elapsed, load_before, load_after, png.name)
    write_text(args.out / "bench_zoo.md", text)
    print(text)
    return 0


def markdown(reports, command, missing, elapsed, load_before, load_after, png_name) -> str:
    env, cfg = reports[0].environment, reports[0].config
    lines = [
        "# Latency: unfolded vs folded vs norm-free twin (zoo)",
        "",
        "Reproduce (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {env['processor']}, {env['cpu_count']} CPUs, affinity {env['affinity']}; "
        f"onnxruntime {env['onnxruntime']}, torch {env['torch']}, {env['platform']}.",
        f"Sessions: intra-op threads {cfg['intra_op_threads']}, inter-op {cfg['inter_op_threads']}, "
        f"{cfg['execution_mode']}; providers {', '.join(cfg['providers'])}; input (B, "
        f"{', '.join(map(str, reports[0].sample_shape))}); {cfg['rounds']} interleaved rounds x "
        f"{cfg['runs_per_round']} runs per variant, {cfg['warmup']} warm-up runs, "
        f"{cfg['creation_repeats']} timed session creations.",
        f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {elapsed / 60:.1f} minutes. "
        "Absolute numbers move with the load; the ratios are paired round by round (the variants ran "
        "interleaved), which is what makes them comparable on a shared machine.",
        "",
    ]
    skipped = {(s["what"], s["reason"]) for rep in reports for s in rep.skipped}
    lines += [f"Skipped {what}: {reason}." for what, reason in sorted(skipped)]
    if missing:
        lines.append(f"Not in the zoo (not benchmarked): {', '.join(missing)}.")
    lines += ["", f"![latency per sample]({png_name})", "", "## Ratios", "",
              "Latency ratio = median over rounds of the per-round median ratio; < 1 means folded is faster.", "",
              "| model | provider | opt | batch | folded/unfolded | speed-up | folded/twin | folded p50 ms | unfolded p50 ms | twin p50 ms |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for rep in reports:
        p50 = {(m.setting, m.variant): m.stats.p50_ms for m in rep.measurements}
        rs = {(r.provider, r.optimization, r.batch_size, r.denominator): r for r in rep.ratios()}
        for setting in sorted({m.setting for m in rep.measurements}):
            fu, ft = rs.get((*setting, "unfolded")), rs.get((*setting, "twin"))
            lines.append(
                f"| {rep.model} | {setting[0]} | {setting[1]} | {setting[2]} | {fu.latency_ratio:.3f} | "
                f"{fu.speedup:.2f}x | {ft.latency_ratio:.3f} | {p50[(setting, 'folded')]:.2f} | "
                f"{p50[(setting, 'unfolded')]:.2f} | {p50[(setting, 'twin')]:.2f} |")
    lines += ["", "## Session creation (ms, median)", "", "| model | provider | opt | unfolded | folded | twin |",
              "|---|---|---|---:|---:|---:|"]
    for rep in reports:
        create = {(s.provider, s.optimization, s.variant): s.median_ms for s in rep.sessions}
        for prov, opt in sorted({(s.provider, s.optimization) for s in rep.sessions}):
            lines.append(f"| {rep.model} | {prov} | {opt} | {create[(prov, opt, 'unfolded')]:.1f} | "
                         f"{create[(prov, opt, 'folded')]:.1f} | {create[(prov, opt, 'twin')]:.1f} |")
    lines += ["", "## Targets", ""] + targets(reports)
    return "\n".join(lines) + "\n"


def targets(reports) -> list[str]:
    out = []
    for rep in reports:
        rs = [r for r in rep.ratios() if r.provider == "cpu" and r.optimization == "all"]
        for r in (r for r in rs if r.denominator == "twin"):
            ok = r.latency_ratio <= TWIN_TOLERANCE
            out.append(f"- {'met' if ok else 'MISSED'}: {rep.model} cpu/all batch {r.batch_size}: "
                       f"folded/twin {r.latency_ratio:.3f} (target <= {TWIN_TOLERANCE})")
        if any(w in rep.model for w in WHITENING):
            for r in (r for r in rs if r.denominator == "unfolded" and r.batch_size == 1):
                ok = r.speedup >= WHITENING_SPEEDUP
                out.append(f"- {'met' if ok else 'MISSED'}: {rep.model} cpu/all batch 1: folded "
                           f"{r.speedup:.2f}x faster than unfolded (target >= {WHITENING_SPEEDUP}x)")
        create = {(s.provider, s.optimization, s.variant): s.median_ms for s in rep.sessions}
        for prov, opt in sorted({(s.provider, s.optimization) for s in rep.sessions}):
            f, u = create[(prov, opt, "folded")], create[(prov, opt, "unfolded")]
            out.append(f"- {'met' if f <= u else 'MISSED'}: {rep.model} {prov}/{opt}: session creation folded "
                       f"{f:.1f} ms vs unfolded {u:.1f} ms (target: no slower)")
    return out


if __name__ == "__main__":
    sys.exit(main())
