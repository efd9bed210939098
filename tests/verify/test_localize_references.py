"""Localization compares a folded layer with the output of the norm it absorbed, never with its own pre-norm output.

The reference of each ONNX candidate is checked against an independent
computation: the original module's output (torch hooks, float64) and the
checked file's intermediate (onnxruntime) must agree for the right reference,
and a folded conv must be far from its own pre-norm output.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import torch

from normfold.fold import FoldReport
from normfold.verify.localize import module_outputs, onnx_candidates
from normfold.verify.oracle import with_outputs
from normfold.verify.session import open_session, run_session


def _onnx_value(proto, name: str, x: torch.Tensor) -> np.ndarray:
    session = open_session(with_outputs(proto, [name]).SerializeToString(), "cpu")
    return np.asarray(run_session(session, (x.numpy(),), [name])[0], dtype=np.float64)


def test_each_candidate_is_compared_with_what_it_computes(bn):
    model, x, path, result = bn
    proto = onnx.load(str(path))
    candidates = {c.module: c for c in onnx_candidates(proto, result.fold_report, model)}
    assert candidates["stem"].reference == "bn1" and candidates["conv2"].reference == "bn2"
    assert candidates["fc"].reference == "fc"   # untouched: its own output
    truth = module_outputs(model, (x,), [c.reference for c in candidates.values()], torch.float64)
    compared = []
    for c in candidates.values():
        got = _onnx_value(proto, c.key, x)
        if got.size == truth[c.reference].size:   # localization skips a value of another size the same way
            assert np.allclose(got.reshape(truth[c.reference].shape), truth[c.reference], rtol=1e-4, atol=1e-4), c
            compared.append(c.module)
    assert {"stem", "conv2"} <= set(compared)


def test_a_rewritten_layer_the_report_does_not_name_is_not_compared_with_its_pre_norm_output(bn):
    """A report whose names miss the file's modules (a prefix, a copy) must not turn into stem vs stem."""
    model, x, path, result = bn
    proto = onnx.load(str(path))
    renamed = FoldReport(folded=[replace(f, into="model.0." + f.into) for f in result.fold_report.folded])
    for report in (None, renamed):
        candidates = {c.module: c for c in onnx_candidates(proto, report, model)}
        assert "stem" not in candidates and "conv2" not in candidates, candidates
        assert candidates["fc"].reference == "fc"
    # and the pre-norm comparison it avoids would have blamed a correct fold
    pre_norm = module_outputs(model, (x,), ["stem"], torch.float64)["stem"]
    stem_out = next(c.key for c in onnx_candidates(proto, result.fold_report, model) if c.module == "stem")
    assert np.abs(_onnx_value(proto, stem_out, x).reshape(pre_norm.shape) - pre_norm).max() > 1e-2
