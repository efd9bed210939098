"""`normfold zoo` lists every registered model, as a table and as JSON."""
from __future__ import annotations

import json

from normfold.cli import main
from normfold.nn import is_norm
from normfold.zoo import DEFAULT, ZOO


def test_table_lists_every_name(capsys):
    assert main(["zoo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == list(ZOO)
    assert "(default)" in next(line for line in lines if line.startswith(DEFAULT + " "))


def test_json_matches_the_registry_and_counts_norm_layers(capsys, small_model):
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(ZOO)
    for row in rows:
        assert row["input_shape"] == list(ZOO[row["name"]].input_shape)
        assert row["default"] == (row["name"] == DEFAULT)
    # The listing counts on the meta device; count again on a real (small) model.
    for name in ("resnet18-bn", "resnet50-bn", "mobilenetv2-bn", "convnext-ln"):
        real = sum(1 for m in small_model(name).modules() if is_norm(m))
        assert next(r for r in rows if r["name"] == name)["norm_layers"] == real
