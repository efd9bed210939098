"""How `normfold verify --inputs` scales: peak memory over 1,000 vs 10,000 images, and the ONNX side's
throughput against a bare onnxruntime loop over the same batches.

    .venv/bin/python scripts/verify_scale.py rss          # peak RSS, 1,000 and 10,000 images at 224x224
    .venv/bin/python scripts/verify_scale.py throughput   # 1,000 images, interleaved rounds
    .venv/bin/python scripts/verify_scale.py all --json docs/verify_scale.json

Images are generated once (seeded, smooth random content with noise, JPEG
quality 90) under --data (default /tmp/normfold-verify-scale). The model is
``model()`` below: --model (a zoo name) at ``small=True`` width unless --full,
exported folded once.

rss: each size runs `normfold verify MODEL model.onnx --inputs DIR` in a fresh
process (the command line a user runs, default batch size and oracle sample)
and reports that process's peak RSS (getrusage ru_maxrss) and its exit code;
for scale, the peak of a process that only imports normfold, torch and
onnxruntime and builds the model, and of one that reads the 1,000 images
into a single array (normfold.verify.dataset.load_samples), as the verify
command did before it streamed.

throughput: in one process, --rounds rounds, each running verify_dataset over
the 1,000 images (the ONNX side's time is what its onnx_cpu stage spent in
onnxruntime calls, as recorded in the report), bracketed by two bare loops
``session.run`` over the same batches, already decoded in memory, on a session
with the same options (normfold.verify.session.open_session), whose mean is
the round's bare time. Reports the medians and the per-round ratio bare time /
ONNX-side time (>= 0.8 is the goal). Speed is measured here, never asserted in
a test.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1000, 10000)
MODEL = os.environ.get("NORMFOLD_SCALE_MODEL", "resnet18-bn")
FULL = os.environ.get("NORMFOLD_SCALE_FULL") == "1"


def model():
    """The model every measurement uses (a factory for `normfold verify scripts/verify_scale.py:model`)."""
    from normfold import zoo

    return zoo.build(MODEL, small=not FULL)


def make_images(root: Path, count: int, size: int = 224, seed: int = 0) -> Path:
    """``count`` seeded JPEGs in root/<count>/ (kept between runs; made only when missing)."""
    from PIL import Image

    folder = root / str(count)
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for i in range(count):
        coarse = rng.random((8, 8, 3))
        smooth = np.kron(coarse, np.ones((size // 8, size // 8, 1)))          # blocks of colour
        pixels = np.clip(255 * (0.8 * smooth + 0.2 * rng.random((size, size, 3))), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    done.write_text(f"{count} images in {time.perf_counter() - start:.1f} s\n")
    return folder


def export_model(root: Path) -> Path:
    import torch

    from normfold import export

    path = root / f"{MODEL}{'' if FULL else '-small'}.onnx"
    if not path.exists():
        export(model(), torch.randn(2, 3, 224, 224), path)
    return path


def _child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line, to which its peak RSS is added."""
    wrapper = ("import json, resource, sys\n" + code +
               "\nout['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024"
               "\nprint('RESULT ' + json.dumps(out))\n")
    env = dict(os.environ, NORMFOLD_SCALE_MODEL=MODEL, NORMFOLD_SCALE_FULL="1" if FULL else "0")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def rss(root: Path) -> dict:
    onnx_path = export_model(root)
    folders = {n: make_images(root, n) for n in SIZES}
    factory = f"{Path(__file__).resolve()}:model"
    out = {"baseline": _child("import torch, onnxruntime, normfold.cli, normfold.verify\n"
                              "sys.path.insert(0, 'scripts'); import verify_scale; verify_scale.model()\nout = {}")}
    out["load_samples_1000"] = _child(
        "from normfold.verify.dataset import load_samples\nx = load_samples(sys.argv[1], 4)\n"
        "out = {'array_mib': x.nbytes / 2**20}", str(folders[1000]))
    for n, folder in folders.items():
        report = root / f"verify_{n}.json"
        out[f"verify_{n}"] = _child(
            "from normfold.cli import main\nrc = main(sys.argv[1:])\n"
            "d = json.load(open(sys.argv[-1]))['dataset']\n"
            "out = {'exit_code': rc, 'samples': d['samples'], 'batch_size': d['batch_size'], "
            "'samples_per_s': d['samples_per_s'], 'timing': d['timing']}",
            "verify", factory, str(onnx_path), "--inputs", str(folder), "--json", str(report))
    out["ratio_10000_to_1000"] = out["verify_10000"]["peak_rss_mib"] / out["verify_1000"]["peak_rss_mib"]
    return out


def throughput(root: Path, rounds: int) -> dict:
    import onnxruntime

    from normfold.verify import open_dataset, read_onnx, verify_dataset
    from normfold.verify.session import open_session

    onnx_path = export_model(root)
    folder = make_images(root, 1000)
    net = model()
    sig = read_onnx(onnx_path)
    data = open_dataset(folder, list(zip(sig.names, sig.shapes)))
    rows = []
    session = open_session(onnx_path, "cpu")           # the options verify_dataset's sessions have
    name = session.get_inputs()[0].name

    def bare_loop(batches) -> float:
        session.run(None, {name: batches[0]})           # warm-up (verify's first batch is not spared it)
        start = time.perf_counter()
        for x in batches:
            session.run(None, {name: x})
        return time.perf_counter() - start

    batches = None
    for r in range(rounds):
        if batches is not None:
            before = bare_loop(batches)
        report = verify_dataset(net, onnx_path, data, oracle_samples=64)
        if batches is None:        # the batches verify ran, decoded once and kept in memory for the loop
            batch = report.batch_size
            batches = [data.read(range(i, min(i + batch, len(data))))[1][0] for i in range(0, len(data), batch)]
            before = bare_loop(batches)
        bare = (before + bare_loop(batches)) / 2        # bracketing the verify run in time
        onnx_side = report.timing["onnx_cpu"]
        rows.append({"round": r, "onnx_side_s": onnx_side, "bare_loop_s": bare, "ratio": bare / onnx_side,
                     "verify_wall_s": report.timing["wall"], "timing": report.timing,
                     "batch_size": report.batch_size})
        print(f"round {r}: ONNX side {onnx_side:.2f} s ({len(data) / onnx_side:.0f} samples/s), bare loop "
              f"{bare:.2f} s ({len(data) / bare:.0f} samples/s), ratio {bare / onnx_side:.3f}; "
              f"whole check {report.timing['wall']:.1f} s", flush=True)
    data.close()
    ratios = [r["ratio"] for r in rows]
    return {
        "samples": 1000, "rounds": rows, "onnxruntime": onnxruntime.__version__,
        "median_onnx_side_samples_per_s": 1000 / statistics.median(r["onnx_side_s"] for r in rows),
        "median_bare_samples_per_s": 1000 / statistics.median(r["bare_loop_s"] for r in rows),
        "median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("rss", "throughput", "all"))
    p.add_argument("--data", type=Path, default=Path("/tmp/normfold-verify-scale"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    out = {"model": f"{MODEL}{'' if FULL else ' (small=True: width 1/4)'}", "input": [3, 224, 224],
           "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg()}
    if args.what in ("rss", "all"):
        out["rss"] = rss(args.data)
        for k, v in out["rss"].items():
            print(f"{k}: {v}")
    if args.what in ("throughput", "all"):
        out["throughput"] = throughput(args.data, args.rounds)
        t = out["throughput"]
        print(f"median ONNX side {t['median_onnx_side_samples_per_s']:.0f} samples/s, bare loop "
              f"{t['median_bare_samples_per_s']:.0f} samples/s; ratio bare/ONNX side median {t['median_ratio']:.3f} "
              f"(min {t['min_ratio']:.3f}, max {t['max_ratio']:.3f}) over {args.rounds} rounds")
    if args.json:
        from normfold.atomic import write_text

        write_text(args.json, json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
