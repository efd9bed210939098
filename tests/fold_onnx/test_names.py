"""Where the dynamo exporter records the module each node came from (a model torch.fx cannot trace,
exported unfolded and folded as a graph), the report names a norm by its module path and its node."""
from __future__ import annotations

import re
import warnings

import onnx
import torch
from torch import nn

from normfold.export import export_with_baseline

from ..conftest import populate_stats


class Stages(nn.Module):
    """Nested norms, and a Python loop over channels that torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.stages = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())})
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.stages["a"](self.stem(x))
        return self.head(torch.stack([p.relu() for p in y.unbind(1)], 1))


def test_fallback_report_names_each_norm_by_module_path_and_node(tmp_path):
    torch.manual_seed(0)
    model = populate_stats(Stages(), (8, 3, 6, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folded, base = export_with_baseline(model, torch.randn(1, 3, 6, 6), tmp_path / "m.onnx", tmp_path / "base.onnx")
    report = folded.fold_report
    assert report.front_end == "onnx" and not report.skipped
    norms = {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    unfolded = {n.name: n for n in onnx.load(base.path).graph.node}
    named = [re.fullmatch(r"(\S+) \((\S+)\)", f.norm) for f in report.folded]
    assert all(named), [f.norm for f in report.folded]
    assert {m.group(1) for m in named} == norms == {"stem.1", "stages.a.1"}
    for m in named:  # the node is the unfolded file's BatchNormalization: localization by node still finds it
        assert unfolded[m.group(2)].op_type == "BatchNormalization"
