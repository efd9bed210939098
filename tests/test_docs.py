"""The measured table of real architectures (docs/real_models.*) is the one the README cites, over today's list."""
from __future__ import annotations

import json
from pathlib import Path

from normfold.zoo.external import EXTERNAL

ROOT = Path(__file__).resolve().parent.parent


def table() -> dict:
    return json.loads((ROOT / "docs" / "real_models.json").read_text())


def test_readme_states_the_tables_summary_line():
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert table()["summary"]["readme_line"] in readme


def test_table_covers_every_external_model_and_adds_up():
    data = table()
    assert [m["name"] for m in data["models"]] == list(EXTERNAL), "rerun scripts/real_models.py"
    markdown = (ROOT / "docs" / "real_models.md").read_text()
    for m in data["models"]:
        assert f"| `{m['name']}` |" in markdown
    s = data["summary"]
    assert s["normfold_folded"] == sum(m["normfold"]["folded"] for m in data["models"])
    assert s["norms"] == sum(m["norms"] for m in data["models"])
