"""Time normfold.fold on a zoo model (default: ResNet-50 with BatchNorm), median of repeats.

    .venv/bin/python scripts/time_fold.py [--model resnet50-bn] [--repeats 5]

Prints the fold's wall time next to one eager fp32 forward pass, for scale.
Speed is measured here, never asserted in a test.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import normfold
from normfold import zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50-bn")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = zoo.build(args.model)
    x = torch.randn(zoo.ZOO[args.model].input_shape)
    params = sum(p.numel() for p in model.parameters())
    normfold.fold(model, x)  # warm-up: imports, allocator
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = normfold.fold(model, x)
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        start = time.perf_counter()
        model(x)
        forward = time.perf_counter() - start
    print(f"{args.model}: {params / 1e6:.1f}M parameters, {len(result.report.folded)} folded, "
          f"{len(result.report.skipped)} skipped, torch threads {torch.get_num_threads()}")
    print(f"fold: median {statistics.median(times):.3f} s over {args.repeats} "
          f"(min {min(times):.3f}, max {max(times):.3f}); one eager fp32 forward at {tuple(x.shape)}: {forward:.3f} s")


if __name__ == "__main__":
    main()
