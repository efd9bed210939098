"""The ONNX front end takes over where torch.fx cannot trace a model: export unfolded (dynamo), fold the graph."""
from __future__ import annotations

import os
import warnings

import onnx
import pytest
import torch
from torch import nn

import normfold
from normfold.export import ExportError, export_with_baseline, torch_fx
from normfold.fold import FoldError, FoldReport
from normfold.fold.torch.trace import UntraceableError

from ..conftest import assert_equivalent_outputs, populate_stats, run_onnx


class Loops(nn.Module):
    """A Python loop over a tensor's channels: torch.fx cannot iterate a Proxy, the dynamo exporter unrolls it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return self.head(torch.stack([p.relu() for p in y.unbind(1)], 1))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return populate_stats(Loops(), (8, 3, 6, 6))


def test_untraceable_model_is_exported_unfolded_and_folded_as_a_graph(model, tmp_path):
    x = torch.randn(1, 3, 6, 6)
    with warnings.catch_warnings():   # the premise: torch.fx cannot trace this model's forward
        warnings.simplefilter("ignore")
        _, why, _ = torch_fx(model, lambda: (None, normfold.fold(model, x).report))
    assert "Proxy object cannot be iterated" in why

    folded, base = export_with_baseline(model, x, tmp_path / "model.onnx", tmp_path / "base.onnx")
    report = folded.fold_report
    assert report.front_end == "onnx"
    assert report.front_end_reason.startswith("torch.fx could not trace Loops.forward: TraceError: Proxy object")
    assert "test_fallback.py" in report.untraced[""] and "unbind" in report.untraced[""]
    assert base.fold_report is None and base.op_counts["BatchNormalization"] == 1
    assert "BatchNormalization" not in folded.op_counts and folded.op_counts["Conv"] == 2
    [site] = report.folded
    convs = {n.name for n in onnx.load(folded.path).graph.node if n.op_type == "Conv"}
    assert site.into in convs and report.skipped == []
    x3 = torch.randn(3, 3, 6, 6)   # the batch axis stays dynamic
    for path in (folded.path, base.path):
        onnx.checker.check_model(onnx.load(path), full_check=True)
        assert_equivalent_outputs(model, run_onnx(path, x3), x3)
    # export() alone takes the same route and writes the same graph
    alone = normfold.export(model, x, tmp_path / "alone.onnx")
    assert alone.fold_report.front_end == "onnx"
    assert onnx.load(alone.path).graph == onnx.load(folded.path).graph


def test_fp16_export_of_an_untraceable_model_is_refused_and_writes_nothing(model, tmp_path):
    with pytest.raises(ExportError, match="cannot export at float16: torch.fx could not trace Loops.forward.*float32"):
        normfold.export(model, torch.randn(1, 3, 6, 6), tmp_path / "m.onnx", precision="fp16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("baseline", [
    pytest.param(lambda d: d / "m.onnx", id="same-path"),
    pytest.param(lambda d: os.symlink(d / "m.onnx", d / "link.onnx") or d / "link.onnx", id="symlink"),
    pytest.param(lambda d: os.link(d / "m.onnx", d / "hard.onnx") or d / "hard.onnx", id="hard-link"),
])
def test_baseline_path_must_differ(model, tmp_path, baseline):
    (tmp_path / "m.onnx").write_bytes(b"previous")
    baseline_path = baseline(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ExportError, match="also the baseline's path"):
        export_with_baseline(model, torch.randn(1, 3, 6, 6), tmp_path / "m.onnx", baseline_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert (tmp_path / "m.onnx").read_bytes() == baseline_path.read_bytes() == b"previous"


@pytest.mark.parametrize("outcome, why", [
    ("folded", None),
    ("model itself untraced", "torch.fx could not trace Loops.forward: TraceError: at x.py:3"),
    ("a submodule untraced", None),
    ("fold error", "torch.fx could not trace Loops.forward: TraceError: boom"),
], ids=["folded", "top-level-untraced", "submodule-untraced", "UntraceableError"])
def test_both_signals_hand_over_to_the_onnx_front_end(model, outcome, why):
    """Before and after fold() learned to fold traceable submodules of an untraceable model:
    UntraceableError, or "" in report.untraced, hands over; an untraced submodule alone does not."""
    reports = {
        "folded": FoldReport(),
        "model itself untraced": FoldReport(untraced={"": "TraceError: at x.py:3", "head": "TraceError: y"}),
        "a submodule untraced": FoldReport(untraced={"head": "TraceError: y"}),
    }

    def attempt():
        if outcome == "fold error":
            raise UntraceableError("torch.fx could not trace Loops.forward: TraceError: boom", "TraceError: boom")
        return "folded model", reports[outcome]

    (result, report), got_why, untraced = torch_fx(model, attempt)
    assert got_why == why
    if why is None:
        assert (result, report) == ("folded model", reports[outcome]) and untraced == reports[outcome].untraced
    else:
        assert result is None and report is None and untraced[""] == why.split(": ", 1)[1]


def test_another_fold_error_is_not_taken_for_a_trace_failure(model):
    def attempt():
        raise FoldError("Loops fails on the example inputs: ValueError: no")

    with pytest.raises(FoldError, match="fails on the example inputs"):
        torch_fx(model, attempt)


class _FailsOnOne(nn.Module):
    """Untraceable (a branch on the batch size) and failing on a batch of one."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        if x.shape[0] == 1:
            raise ValueError("needs a batch of 2")
        return self.bn(self.conv(x))


def test_a_model_failing_on_its_examples_is_one_error_without_an_export_attempt(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExportError) as caught:
            normfold.export(_FailsOnOne().eval(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    message = str(caught.value)
    assert "_FailsOnOne fails on the example inputs: ValueError: needs a batch of 2" in message
    assert "exporting it unfolded" not in message and not (tmp_path / "m.onnx").exists()
