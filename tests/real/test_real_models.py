"""Architectures no one here wrote (timm, torchvision) fold right.

Each model comes from ``normfold.zoo.external``: the smallest variant of its
family, built without weights, its statistics randomized to plausible values
(fresh ones would make any fold exact). Per model, built, folded and exported
once:

* the folded eager model, and the folded ONNX file on onnxruntime CPU, are as
  close to the ORIGINAL model run in float64 as the original fp32 model is
  (the rule of tests/conftest.py: K * e32 + floor);
* every norm module (``normfold.nn.is_norm``, or any module that holds running
  statistics: timm's BatchNormAct2d and FrozenBatchNormAct2d, torchvision's
  FrozenBatchNorm2d) is reported folded or skipped with a reason;
* the fold removed what it reports: the folded file, exported with the
  exporter's own BatchNorm fusions off, keeps no more BatchNormalization nodes
  than normfold skipped norms, and a network with batch norms has some folded;
  a frozen batch norm exports as a Mul and an Add, and each folded one takes
  its two nodes out of the file;
* normfold folds at least as many norms as docs/real_models.json records for
  the model, and skips none that it records folded (a floor per architecture);
* normfold folds every norm that torch.fx's own fuser fuses, where the fuser's
  model is right (an independent lower bound).

Marked ``real`` (minutes): ``pytest -m "not real"`` leaves them out.
"""
from __future__ import annotations

import collections
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import normfold
from normfold.export import ExportError
from normfold.nn import is_norm
from normfold.zoo import external
from normfold.zoo.peers import fx_fuse
from normfold.zoo.randomize import has_running_stats

from ..conftest import fp32_budget, run_eager, run_onnx
from ..test_docs import table

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("one_torch_thread")]

CALL_SITE = re.compile(r"\[call \d+\]$")
RECORDED = {m["name"]: m for m in table()["models"]}   # tests/test_docs.py: it covers every model


@dataclass
class Case:
    spec: external.ExternalModel
    model: torch.nn.Module
    x: torch.Tensor
    oracle: np.ndarray
    allowed: float
    result: normfold.FoldResult
    onnx_path: Path | None
    export_failure: str = ""        # why the folded model did not export
    exporter_fails_anyway: bool = False   # ... and the original does not export either

    def max_error(self, output: np.ndarray) -> float:
        return float(np.abs(output - self.oracle).max())


@pytest.fixture(scope="module", params=list(external.EXTERNAL))
def case(request, tmp_path_factory) -> Case:
    spec = external.EXTERNAL[request.param]
    model = external.build(spec.name)
    x = external.example_input(spec.name)
    oracle, allowed = fp32_budget(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = normfold.fold(model, x)
    path = tmp_path_factory.mktemp(spec.name.replace("/", "-")) / "folded.onnx"
    try:
        export(result.model, x, path)
    except ExportError as exc:
        try:
            export(model, x, path.with_name("original.onnx"))
        except ExportError as original:
            return Case(spec, model, x, oracle, allowed, result, None,
                        f"the exporter fails on the original model too: {original}", exporter_fails_anyway=True)
        return Case(spec, model, x, oracle, allowed, result, None, f"the folded model does not export: {exc}")
    return Case(spec, model, x, oracle, allowed, result, path)


def export(model, x, path: Path) -> None:
    """normfold's export without its fold (the file holds normfold's fold alone), at x's static shape
    (a third faster to export than a dynamic batch axis)."""
    normfold.export(model, x, path, fold=False, dynamic_batch=False)


def exported(case: Case) -> Path:
    """The folded ONNX file; a skip when the exporter fails on the original model too, else a failure."""
    if case.onnx_path is None and case.exporter_fails_anyway:
        pytest.skip(case.export_failure)
    if case.onnx_path is None:
        pytest.fail(case.export_failure)
    return case.onnx_path


def norm_modules(model: torch.nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if is_norm(m) or has_running_stats(m)}


def test_every_norm_is_folded_or_skipped_with_a_reason(case):
    report = case.result.report
    reported = [CALL_SITE.sub("", f.norm) for f in report.folded] + [CALL_SITE.sub("", s.norm) for s in report.skipped]
    assert set(reported) == norm_modules(case.model), "\n".join(report.lines())
    assert all(s.reason.strip() for s in report.skipped), "\n".join(report.lines())


def test_folded_model_equals_the_float64_original(case):
    err = case.max_error(run_eager(case.result.model, case.x))
    assert err <= case.allowed, (
        f"{case.spec.name}: folded eager max error {err:.3g} > allowed {case.allowed:.3g} "
        f"(max|oracle| {np.abs(case.oracle).max():.3g})\n" + "\n".join(case.result.report.lines())
    )


def test_folded_onnx_on_onnxruntime_equals_the_float64_original(case):
    onnx_path = exported(case)
    err = case.max_error(run_onnx(onnx_path, case.x))
    assert err <= case.allowed, f"{case.spec.name}: ONNX max error {err:.3g} > allowed {case.allowed:.3g}"


def test_the_fold_removes_the_norms_it_reports(case):
    report = case.result.report
    batch_norms = [n for n, m in case.model.named_modules() if has_running_stats(m)]
    if batch_norms:
        assert report.folded, f"{case.spec.name} has {len(batch_norms)} batch norms and none folded:\n" + "\n".join(
            report.lines()
        )
    ops = node_counts(exported(case))
    assert ops["BatchNormalization"] <= len(report.skipped), (
        f"{ops['BatchNormalization']} BatchNormalization nodes left, {len(report.skipped)} norms skipped"
    )
    if case.spec.frozen:   # a frozen batch norm is x * scale + shift in the file: one Mul and one Add
        original = exported(case).with_name("original.onnx")
        export(case.model, case.x, original)
        before, folded = node_counts(original), len(report.folded)
        assert (ops["Mul"], ops["Add"]) == (before["Mul"] - folded, before["Add"] - folded), (
            f"{case.spec.name}: {folded} frozen batch norms folded; Mul {before['Mul']} -> {ops['Mul']}, "
            f"Add {before['Add']} -> {ops['Add']}"
        )


def node_counts(path: Path) -> collections.Counter:
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_folds_at_least_what_docs_real_models_json_records(case):
    recorded = RECORDED[case.spec.name]["normfold"]
    report = case.result.report
    was_skipped = {s["norm"] for s in recorded["skip_reasons"]}
    newly_skipped = [f"{s.norm}: {s.reason}" for s in report.skipped if s.norm not in was_skipped]
    assert len(report.folded) >= recorded["folded"] and not newly_skipped, (
        f"{case.spec.name}: {len(report.folded)} norms folded, docs/real_models.json records "
        f"{recorded['folded']}; newly skipped:\n" + "\n".join(newly_skipped)
    )


def test_folds_every_norm_torch_fx_fuse_fuses(case):
    try:
        fused, names = fx_fuse(case.model)
    except Exception as exc:  # the peer's limit, not normfold's
        pytest.skip(f"torch.fx.symbolic_trace fails on {case.spec.name}: {type(exc).__name__}")
    err = case.max_error(run_eager(fused, case.x))
    if err > case.allowed:
        pytest.skip(f"torch.fx fuse returns a wrong model here ({err:.3g} > {case.allowed:.3g}): no lower bound")
    folded = {CALL_SITE.sub("", f.norm) for f in case.result.report.folded}
    assert set(names) <= folded, f"fused by torch.fx, not folded by normfold: {sorted(set(names) - folded)}"
