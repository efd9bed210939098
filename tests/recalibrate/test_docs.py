"""docs/recalibrate.md is what scripts/recalibrate_digits.py wrote from docs/recalibrate.json, and says it."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_markdown_tables_are_the_measured_numbers():
    data = json.loads((ROOT / "docs" / "recalibrate.json").read_text())
    markdown = (ROOT / "docs" / "recalibrate.md").read_text()
    assert f"`{data['command']}`" in markdown and (ROOT / data["command"].split()[1]).is_file()
    for norm in {r["norm"] for r in data["lag"]}:
        rows = [r for r in data["lag"] if r["norm"] == norm]
        values = [r["after"] for r in rows]
        after = f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"
        assert f"| {norm} | " in markdown and after in markdown
    for r in data["shifted"]:
        assert f"{100 * r['before']:.1f} | {100 * r['after']:.1f}" in markdown
    for r in data["adabn_verified"]:
        assert r["verify_ok"] and r["mismatches"] == 0 and r["torch_acc"] == r["onnx_acc"]
    far_before = sum(h["before"]["far"] for h in data["health"].values())
    far_after = sum(h["after"]["far"] for h in data["health"].values())
    assert markdown.count("**far**") == far_before + far_after


def test_the_readme_quotes_the_measured_numbers():
    data = json.loads((ROOT / "docs" / "recalibrate.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    lag = {n: [r for r in data["lag"] if r["norm"] == n] for n in ("bn", "zca", "iternorm")}
    mean = {n: (100 * statistics.mean(r["before"] for r in rows), 100 * statistics.mean(r["after"] for r in rows))
            for n, rows in lag.items()}
    assert f"ZCA whitening goes from {mean['zca'][0]:.1f} % to {mean['zca'][1]:.1f} %" in readme
    assert f"BN {mean['bn'][0]:.1f} → {mean['bn'][1]:.1f} %" in readme
    assert f"IterNorm {mean['iternorm'][0]:.1f} → {mean['iternorm'][1]:.1f} %" in readme
    shift = {r["norm"]: r for r in data["shifted"] if r["shift"] == "low contrast, bright"}
    assert f"BN from {100 * shift['bn']['before']:.1f} % to {100 * shift['bn']['after']:.1f} %" in readme
    assert f"ZCA {100 * shift['zca']['before']:.1f} → {100 * shift['zca']['after']:.1f} %" in readme
