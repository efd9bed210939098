"""`normfold inspect MODEL [--json]`: every norm layer with its outcome and reason, no export."""
from __future__ import annotations

import json
import textwrap

import pytest

from normfold.cli import main

MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.BatchNorm2d(4), nn.GroupNorm(2, 4))
        model.train()
        with torch.no_grad():
            model(torch.randn(8, 3, 6, 6))
        return model.eval()
''')


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(MODEL)
    return f"{path}:build"


def test_inspect_lists_every_norm_with_outcome_and_reason(spec, capsys, tmp_path):
    assert main(["inspect", spec, "--input-shape", "1,3,6,6"]) == 0
    out = capsys.readouterr().out
    assert "3: 1 folded, 2 skipped" in out
    assert "folded  1 -> 0 (backward" in out
    assert "skipped 3: backward: its input comes from 2 (ReLU)" in out
    assert "skipped 4: GroupNorm is not foldable" in out
    assert not list(tmp_path.glob("*.onnx"))


def test_inspect_json_on_stdout_and_to_a_file(spec, capsys, tmp_path):
    assert main(["inspect", spec, "--input-shape", "1,3,6,6", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [f["norm"] for f in data["folded"]] == ["1"] and data["folded"][0]["into"] == "0"
    assert {s["norm"] for s in data["skipped"]} == {"3", "4"}
    assert all(s["reason"] for s in data["skipped"])

    out = tmp_path / "report.json"
    assert main(["inspect", spec, "--input-shape", "1,3,6,6", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["skipped"] == data["skipped"]


@pytest.mark.parametrize("bad, message", [
    ("no-such-model", "unknown model 'no-such-model'"),
    ("missing.py:build", "does not exist"),
])
def test_inspect_bad_model_spec_exits_2(bad, message, capsys):
    assert main(["inspect", bad]) == 2
    assert message in capsys.readouterr().err


def test_inspect_bad_input_shape_exits_2(spec, capsys):
    assert main(["inspect", spec, "--input-shape", "1,5,6,6"]) == 2
    assert "rejects input shape 1,5,6,6" in capsys.readouterr().err


ODD_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    class BNAct(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    class Gate(nn.Module):
        def forward(self, y):
            return y if y.mean() > 0 else -y

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), BNAct(4))
            self.gate = Gate()

        def forward(self, x):
            return self.gate(self.body(x))

    def build():
        torch.manual_seed(0)
        model = Odd().train()
        with torch.no_grad():
            model(torch.randn(8, 3, 6, 6))
        return model.eval()
''')


def test_inspect_shows_the_probe_and_trace_reasons(tmp_path, capsys):
    path = tmp_path / "odd.py"
    path.write_text(ODD_MODEL)
    assert main(["inspect", f"{path}:build", "--input-shape", "1,3,6,6"]) == 0
    out = capsys.readouterr().out
    assert "norms  2: 1 folded, 1 skipped" in out
    assert "parts  1 torch.fx could not trace: what they call is folded where it traces" in out
    assert "folded  body.1 -> body.0 (backward" in out
    assert "skipped body.3: BNAct.forward differs from its batch-norm map by" in out
    assert "untraced gate: TraceError" in out and "if y.mean() > 0" in out
