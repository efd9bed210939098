"""Build an ONNX model over 2 GB (weights in external data), fold it with normfold, and measure peak memory.

    .venv/bin/python scripts/fold_large.py [--dir DIR] [--layers 9] [--channels 8192] [--keep]

The model is ``layers`` blocks of Conv(1x1, channels -> channels) ->
BatchNormalization (random statistics) -> Relu: 9 x 8192 x 8192 float32
weights are 2.42 GB, beyond protobuf's 2 GB limit, so the .onnx keeps them in
``large.onnx.data``, written one tensor at a time with numpy (never held
twice). Each step runs in a child process of its own, whose peak resident
memory (``ru_maxrss``) is reported next to the model's size:

* ``fold``: ``normfold.fold_onnx(path)`` (which reads the external data) and
  ``normfold.export.write_checked``, which writes ``model.onnx`` with its
  weights in ``model.onnx.data`` (the folded model is over 2 GB too);
* ``check``: the original and the folded file on onnxruntime (each in its own
  child, from its path) against a float64 evaluation of the original in numpy
  (the weights read from the data file, a block of rows at a time), at a
  1x1 spatial size, batch 2: the folded file must be within 8x the original's
  own float32 error of float64, plus 64 ulps of the output scale (the rule of
  the test suite).

Prints one JSON object; the files are deleted afterwards unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EPS = 1e-5
BATCH = 2


def build(d: Path, layers: int, channels: int, seed: int = 0) -> Path:
    """Write ``d/large.onnx`` and ``d/large.onnx.data``; every tensor goes to the data file as it is made."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    path, data = d / "large.onnx", d / "large.onnx.data"
    initializers, nodes, offset = [], [], 0
    with open(data, "wb") as f:
        def put(name: str, value: np.ndarray) -> None:
            nonlocal offset
            t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape,
                                 data_location=TensorProto.EXTERNAL)
            for key, v in (("location", data.name), ("offset", str(offset)), ("length", str(value.nbytes))):
                t.external_data.add(key=key, value=v)
            f.write(value.tobytes())
            offset += value.nbytes
            initializers.append(t)

        x = "x"
        for i in range(layers):
            c = channels
            put(f"w{i}", rng.standard_normal((c, c, 1, 1), dtype=np.float32) * np.float32(c ** -0.5))
            put(f"b{i}", rng.standard_normal(c, dtype=np.float32) * np.float32(0.1))
            put(f"gamma{i}", rng.uniform(0.5, 1.5, c).astype(np.float32))
            put(f"beta{i}", rng.standard_normal(c, dtype=np.float32) * np.float32(0.1))
            put(f"mean{i}", rng.standard_normal(c, dtype=np.float32) * np.float32(0.3))
            put(f"var{i}", rng.uniform(0.5, 2.0, c).astype(np.float32))
            nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"conv{i}"], name=f"conv{i}"),
                      helper.make_node("BatchNormalization", [f"conv{i}", f"gamma{i}", f"beta{i}", f"mean{i}",
                                                              f"var{i}"], [f"bn{i}"], name=f"bn{i}", epsilon=EPS),
                      helper.make_node("Relu", [f"bn{i}"], [f"relu{i}" if i < layers - 1 else "y"], name=f"relu{i}")]
            x = f"relu{i}"
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", channels, 1, 1])], initializers)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
                     .SerializeToString())
    return path


def fold(src: Path, out: Path) -> dict:
    """Fold ``src`` with the API and write it into ``out``: seconds, the files written and their sizes."""
    import normfold
    from normfold.export import write_checked

    imported = _rss()
    start = time.perf_counter()
    proto, report = normfold.fold_onnx(src)
    folded_s = time.perf_counter() - start
    fold_peak = _peak()
    result = write_checked(proto, out / "model.onnx", report)
    return {"rss_after_import_gb": round(imported / 1e9, 2), "peak_rss_after_fold_gb": round(fold_peak / 1e9, 2),
            "folded": len(report.folded), "skipped": len(report.skipped), "fold_s": round(folded_s, 1),
            "write_s": round(time.perf_counter() - start - folded_s, 1),
            "files": {p.name: p.stat().st_size for p in result.files}}


def _peak() -> int:
    """This process's peak resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def run_ort(path: Path, x_file: Path) -> dict:
    """``path`` on onnxruntime's CPU provider, loaded from its path (with its external data); saves y."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.load(x_file)})[0]
    np.save(x_file.with_name(path.stem + ".y.npy"), y)
    return {"shape": list(y.shape)}


def reference(src: Path, x: np.ndarray, layers: int, rows: int = 1024) -> np.ndarray:
    """The original model in float64 (numpy), its weights read from the data file ``rows`` at a time."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    proto = onnx.load(str(src), load_external_data=False)
    blob = np.memmap(src.with_name(src.name + ".data"), dtype=np.uint8, mode="r")
    tensors = {}
    for t in proto.graph.initializer:
        info = ExternalDataInfo(t)
        tensors[t.name] = np.frombuffer(blob, np.float32, int(np.prod(t.dims)), info.offset).reshape(t.dims)
    h = x[:, :, 0, 0].astype(np.float64)
    for i in range(layers):
        w = tensors[f"w{i}"][:, :, 0, 0]
        y = np.concatenate([h @ w[r:r + rows].astype(np.float64).T for r in range(0, len(w), rows)], axis=1)
        y += tensors[f"b{i}"]
        y = (y - tensors[f"mean{i}"]) / np.sqrt(tensors[f"var{i}"].astype(np.float64) + np.float32(EPS))
        h = np.maximum(y * tensors[f"gamma{i}"] + tensors[f"beta{i}"], 0)
    return h[:, :, None, None]


def child(step: str, *args: str) -> dict:
    """Run ``step`` of this script in a child process: its result, seconds and peak RSS."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--step", step, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "wall_s": round(time.perf_counter() - start, 1)}


def _step(args) -> None:
    step, rest = args.step, [Path(a) for a in args.rest]
    if step == "build":
        result = {"path": str(build(rest[0], args.layers, args.channels))}
    elif step == "fold":
        result = fold(*rest)
    else:
        result = run_ort(*rest)
    print(json.dumps({**result, "peak_rss_gb": round(_peak() / 1e9, 2)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--channels", type=int, default=8192)
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return _step(args)
    d = Path(tempfile.mkdtemp(prefix="normfold-large-", dir=args.dir))
    try:
        sizes = ["--layers", str(args.layers), "--channels", str(args.channels)]
        built = child("build", *sizes, str(d))
        src = Path(built["path"])
        model_bytes = src.stat().st_size + src.with_name(src.name + ".data").stat().st_size
        (d / "out").mkdir()
        folded = child("fold", str(src), str(d / "out"))
        x = np.random.default_rng(1).standard_normal((BATCH, args.channels, 1, 1)).astype(np.float32)
        np.save(d / "x.npy", x)
        original = child("ort", str(src), str(d / "x.npy"))
        on_folded = child("ort", str(d / "out" / "model.onnx"), str(d / "x.npy"))
        oracle = reference(src, x, args.layers)
        e_ref = float(np.abs(np.load(d / "large.y.npy") - oracle).max())
        e_folded = float(np.abs(np.load(d / "model.y.npy") - oracle).max())
        allowed = 8 * e_ref + 64 * float(np.finfo(np.float32).eps) * float(np.abs(oracle).max())
        print(json.dumps({
            "model_gb": round(model_bytes / 1e9, 3), "layers": args.layers, "channels": args.channels,
            "build": built, "fold": folded,
            "fold_peak_over_model": round(folded["peak_rss_gb"] * 1e9 / model_bytes, 2),
            "fold_peak_above_import_over_model":
                round((folded["peak_rss_gb"] - folded["rss_after_import_gb"]) * 1e9 / model_bytes, 2),
            "ort_original": original, "ort_folded": on_folded,
            "check": {"original_max_abs": e_ref, "folded_max_abs": e_folded, "allowed": allowed,
                      "ok": e_folded <= allowed},
        }, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
