"""normfold.testing.assert_equivalent: the pytest entry point."""
from __future__ import annotations

import pytest
import torch

from normfold import fold
from normfold.testing import NotEquivalent, assert_equivalent

from . import _models


def test_passes_on_a_model_with_groupnorm():
    """GroupNorm normalizes each sample: not folded, exported as is, and still equivalent."""
    model = _models.tiny_gn()
    x = torch.randn(_models.SHAPE, generator=torch.Generator().manual_seed(3))
    report = fold(model, x).report
    assert [f.norm for f in report.folded] == ["bn1"]
    assert [s.norm for s in report.skipped] == ["bn2"] and "GroupNorm" in report.skipped[0].reason
    checked = assert_equivalent(model, x)
    assert checked.ok and not checked.localization
    assert {c.batch for c in checked.checks} == {1, 3}
    assert {c.run for c in checked.checks} == {"original_fp32", "folded_fp32", "onnx_cpu"}


def test_raises_with_the_table_on_a_wrong_fold(wrong_fold):
    """The folded conv2 is off by 1% on one channel: fold and export are both wrong."""
    model = _models.tiny_bn()
    x = torch.randn(_models.SHAPE, generator=torch.Generator().manual_seed(2))
    wrong_fold("conv2.weight", 3, 1.01)
    with pytest.raises(AssertionError) as info:
        assert_equivalent(model, x, batch_sizes=(1,))
    assert isinstance(info.value, NotEquivalent)
    report = info.value.report
    assert {c.run for c in report.failures()} == {"folded_fp32", "onnx_cpu"}
    by_kind = {d.kind: d for d in report.localization}
    assert by_kind["fold site"].fold_site == "bn2 -> conv2"
    assert by_kind["onnx node"].module == "conv2"
    message = str(info.value)
    assert "FAIL" in message and "max abs" in message and "bn2 -> conv2" in message


def test_an_existing_file_is_checked_as_given(bn, tmp_path):
    from .conftest import perturbed

    model, x, path, _ = bn
    bad = perturbed(path, tmp_path / "bad.onnx", "conv2.weight", 1.001)
    assert_equivalent(model, x, onnx_path=path)
    with pytest.raises(NotEquivalent, match="conv2"):
        assert_equivalent(model, x, onnx_path=bad)
