"""``normfold.bench``: export the variants, then time them on onnxruntime, interleaved.

For each provider and optimization level, one session per variant is created
(``creation_repeats`` times, interleaved, creation timed separately) and kept
for every batch size; for each batch size each variant is warmed up at that
shape, then all variants are timed in ``rounds`` rotating rounds of
``runs_per_round`` runs each.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..atomic import same_file
from ..fold import as_input_tuple
from ..verify.session import SessionError
from .report import BenchReport, Measurement, SessionTiming, check_budget
from .schedule import measure_interleaved, round_robin, warm_up
from .session import (
    SessionConfig, batch_mismatch, cuda_unavailable_reason, default_threads,
    make_feed, make_runner, open_timed,
)
from .stats import summarize
from .variants import VARIANT_FILES, Variant, export_variants, file_variants


class BenchError(ValueError):
    """Bad benchmark arguments, or a provider that was asked for and is unavailable."""


def bench(
    model: nn.Module | None = None,
    example_inputs=None,
    *,
    onnx_files: Sequence[str | os.PathLike] = (),
    sample_shape: Sequence[int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
    providers: Sequence[str] | None = None,
    batch_sizes: Sequence[int] | None = None,
    optimizations: Sequence[str] = ("disable", "all"),
    threads: int | None = None,
    inter_op_threads: int = 1,
    rounds: int = 20,
    runs_per_round: int = 5,
    warmup: int = 5,
    creation_repeats: int = 3,
    cudnn_conv_algo_search: str = "EXHAUSTIVE",
    spinning: bool = False,
    budget_ms: float | None = None,
    budget_percentile: float = 90.0,
    name: str | None = None,
    export_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> BenchReport:
    """Benchmark ``model`` (unfolded, folded, norm-free twin) and/or ONNX files.

    ``example_inputs``: one tensor; its shape minus the batch axis is the
    per-sample shape and its batch size the default ``batch_sizes``. With only
    ``onnx_files``, give ``sample_shape`` (without batch) instead, or for files
    with several inputs ``input_shapes`` ({input name: shape}, the first
    input's batch the default ``batch_sizes``; inputs whose leading axis the
    file declares symbolic are fed at each batch size, the others as given).
    ``feeds``: arrays to feed instead of seeded ones ({input name: array}), their
    rows repeated or cut to each batch size.
    ``providers=None`` means cpu, plus cuda when a CUDA session really works;
    naming "cuda" explicitly when it does not raises BenchError.
    ``threads``: intra-op threads, default the CPUs in this process's affinity.
    ``spinning``: let onnxruntime's thread pools spin-wait between runs (off by
    default: interleaved sessions would steal each other's cores; session.py).
    """
    log = log or (lambda _msg: None)
    if model is None and not onnx_files:
        raise BenchError("nothing to benchmark: give a model, ONNX files, or both")
    if model is not None:
        if not isinstance(model, nn.Module):
            raise BenchError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        inputs = as_input_tuple(example_inputs) if example_inputs is not None else ()
        if len(inputs) != 1:
            raise BenchError(f"bench needs exactly one example input tensor, got {len(inputs)}")
        example = inputs[0]
        sample_shape = tuple(example.shape[1:])
        batch_sizes = tuple(batch_sizes) if batch_sizes else (int(example.shape[0]),)
    else:
        if input_shapes:
            first = tuple(int(d) for d in next(iter(input_shapes.values())))
            sample_shape, batch_sizes = first[1:], batch_sizes or first[:1]
        if sample_shape is None:
            raise BenchError("with ONNX files only, give sample_shape (the input shape without the batch axis)")
        if export_dir is not None:
            raise BenchError(f"export_dir={str(export_dir)!r} is where a model's variants are exported; "
                             "with ONNX files only there is nothing to export")
        sample_shape = tuple(int(d) for d in sample_shape)
        batch_sizes = tuple(batch_sizes) if batch_sizes else (1,)
    if any(int(b) < 1 for b in batch_sizes):
        raise BenchError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    for what, value in (("rounds", rounds), ("runs_per_round", runs_per_round), ("warmup", warmup),
                        ("creation_repeats", creation_repeats)):
        if value < 1:
            raise BenchError(f"{what} must be >= 1, got {value}")
    threads = threads or default_threads()

    skipped: list[dict] = []
    providers = _resolve_providers(providers, skipped, log)
    configs = [SessionConfig(p, o, threads, inter_op_threads, cudnn_conv_algo_search, spinning)
               for p in providers for o in optimizations]

    with tempfile.TemporaryDirectory(prefix="normfold-bench-") as tmp:
        directory = Path(export_dir) if export_dir is not None else Path(tmp)
        if not directory.is_dir():
            raise BenchError(f"export directory {directory} does not exist")
        variants: list[Variant] = []
        fold_report = twin_report = None
        if model is not None and export_dir is not None:
            for target in (directory / f for f in VARIANT_FILES):
                clash = next((f for f in onnx_files if same_file(target, f)), None)
                if clash is not None:
                    raise BenchError(f"exporting into {directory} would overwrite {clash}, an ONNX file to time")
        if model is not None:
            log("exporting unfolded, folded and norm-free twin ...")
            variants, fold_report, twin_report = export_variants(model, example, directory)
        try:
            variants += file_variants(list(onnx_files), {v.name for v in variants})
        except FileNotFoundError as exc:
            raise BenchError(str(exc)) from None

        report = BenchReport(
            model=name or (type(model).__name__ if model is not None else ", ".join(v.name for v in variants)),
            sample_shape=sample_shape,
            variants=variants,
            config={"intra_op_threads": threads, "inter_op_threads": inter_op_threads,
                    "execution_mode": "ORT_SEQUENTIAL", "providers": list(providers),
                    "optimizations": [c.ort_level for c in configs[: len(optimizations)]],
                    "batch_sizes": [int(b) for b in batch_sizes], "rounds": rounds,
                    "runs_per_round": runs_per_round, "warmup": warmup, "creation_repeats": creation_repeats,
                    "sessions": [c.to_dict() for c in configs],
                    "input_shapes": {k: [int(d) for d in v] for k, v in (input_shapes or {}).items()} or None},
            environment=_environment(),
            skipped=skipped,
            fold=None if fold_report is None else fold_report.to_dict(),
            twin=None if twin_report is None else twin_report.to_dict(),
        )
        for config in configs:
            _bench_config(report, variants, config, batch_sizes, rounds, runs_per_round, warmup,
                          creation_repeats, log, dict(input_shapes) if input_shapes else sample_shape,
                          dict(feeds) if feeds else None)
    if export_dir is None:  # the exports lived in a temporary directory, now gone
        report.variants = [v if v.kind == "file" else dataclasses.replace(v, path=None) for v in variants]
    if budget_ms is not None:
        report.budget = check_budget(report.measurements, budget_ms, budget_percentile)
    return report


def _resolve_providers(providers, skipped: list[dict], log) -> tuple[str, ...]:
    if providers is None:
        reason = cuda_unavailable_reason()
        if reason is None:
            return ("cpu", "cuda")
        skipped.append({"what": "provider cuda", "reason": reason})
        log(f"cuda: skipped ({reason})")
        return ("cpu",)
    providers = tuple(dict.fromkeys(providers))
    for p in providers:
        if p not in ("cpu", "cuda"):
            raise BenchError(f"unknown provider {p!r}; choose from cpu, cuda")
    if "cuda" in providers:
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BenchError(f"provider cuda was requested but is unavailable: {reason}")
    return providers


def _bench_config(report, variants, config, batch_sizes, rounds, runs_per_round, warmup, creation_repeats, log,
                  shapes, feeds):
    setting = f"{config.provider}/{config.optimization}"
    log(f"{setting}: creating sessions ...")
    sessions: dict[str, object] = {}
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for order in round_robin(len(variants), creation_repeats):
        for i in order:
            v = variants[i]
            sessions.pop(v.name, None)
            try:
                sessions[v.name], ms = open_timed(v.path, config)
            except SessionError as exc:
                raise BenchError(str(exc)) from exc
            times[v.name].append(ms)
    report.sessions += [SessionTiming(v.name, config.provider, config.optimization, times[v.name]) for v in variants]

    for batch in batch_sizes:
        active, runners = [], []
        for v in variants:
            session = sessions[v.name]
            reason = batch_mismatch(session, batch)
            if reason is not None:
                report.skipped.append({"what": f"{v.name} {setting}/b{batch}", "reason": reason})
                continue
            try:
                feed = make_feed(session, shapes, batch, arrays=feeds)
            except SessionError as exc:
                raise BenchError(f"{v.path}: {exc}") from exc
            active.append(v)
            runners.append(make_runner(session, config.provider, feed))
        if not active:
            continue
        log(f"{setting}/b{batch}: warm-up, then {rounds} rounds x {runs_per_round} runs of {len(active)} variants")
        first = [warm_up(r, warmup) for r in runners]
        samples = measure_interleaved(runners, rounds, runs_per_round)
        for v, first_ms, rounds_ms in zip(active, first, samples):
            flat = [t for burst in rounds_ms for t in burst]
            report.measurements.append(Measurement(
                v.name, v.kind, config.provider, config.optimization, int(batch),
                summarize(flat, int(batch)), first_ms, rounds_ms))
    sessions.clear()


def _environment() -> dict:
    import onnxruntime as ort

    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
