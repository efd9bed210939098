"""Why normfold bench turns onnxruntime's thread-pool spinning off.

Two sessions of the *same* ONNX file, run interleaved as normfold bench runs
its variants: their per-round latency ratio should be 1. With spinning on, the
pool of the session that just ran keeps spinning and competes with the next
one for the cores; with it off, the ratio is tight.

    .venv/bin/python scripts/bench_spinning.py MODEL.onnx [--rounds 30] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for spin in ("1", "0"):
        sessions = []
        for _ in range(2):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
            sessions.append(ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"]))
        meta = sessions[0].get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        feed = {meta.name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        for s in sessions:
            for _ in range(5):
                s.run(None, feed)
        times = [[], []]
        for r in range(args.rounds):
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                sessions[i].run(None, feed)
                times[i].append(time.perf_counter() - start)
        ratio = np.array(times[0]) / np.array(times[1])
        print(f"spinning={spin}: p50 A {np.median(times[0]) * 1e3:.2f} ms, B {np.median(times[1]) * 1e3:.2f} ms, "
              f"per-round ratio median {np.median(ratio):.3f}, IQR {np.percentile(ratio, 25):.3f}-{np.percentile(ratio, 75):.3f}")


if __name__ == "__main__":
    main()
