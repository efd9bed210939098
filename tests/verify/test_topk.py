"""Top-k agreement with tied logits: the oracle table (ErrorStats) and the stream table (verify_dataset's
tallies) give the same numbers, those of a ranking computed here: by value, a tie to the lower class."""
from __future__ import annotations

import numpy as np
import pytest

from normfold.verify.metrics import ErrorStats
from normfold.verify.stream import _Tally
from normfold.verify.tolerance import Tolerance


def _top(row, k):
    return set(sorted(range(len(row)), key=lambda j: (-row[j], j))[:k])


def _expected(ref, got):
    """(top-1 agreement, top-5 overlap), each a mean over rows, by Python's sort."""
    top1 = np.mean([_top(r, 1) == _top(g, 1) for r, g in zip(ref.tolist(), got.tolist())])
    top5 = np.mean([len(_top(r, 5) & _top(g, 5)) / 5 for r, g in zip(ref.tolist(), got.tolist())])
    return top1, top5


TIES = {
    # six classes tie for the top five: the lower five win in the original, class 10 moves up in the run
    "six_tie_for_five": ([0, 1, 2, 1, 1, 2, 2, 2, 1, 2, 2, 1], {10: 1e-9}),
    "all_equal": ([1.0] * 12, {11: 1e-9}),
    "tie_for_first": ([3, 3, 0, 1, 2, 2, 2, 0, 0, 0, 0, 0], {1: 1e-9}),
    "no_change": ([0, 0, 2, 0, 1, 2, 2, 1, 1, 2, 2, 1], {}),
}


@pytest.mark.parametrize("row, bumps", TIES.values(), ids=TIES.keys())
def test_tied_logits_give_the_same_topk_in_the_oracle_and_the_stream(row, bumps):
    rng = np.random.default_rng(0)
    ref = np.array([row] * 3, dtype=np.float64)
    ref[1] = ref[1][rng.permutation(12)]    # the tie at other classes
    got = ref.copy()
    for j, v in bumps.items():
        got[:, j] += v
    top1, top5 = _expected(ref, got)
    stats = ErrorStats.of(ref, got)
    assert (stats.top1, stats.top5, stats.classes) == (pytest.approx(top1), pytest.approx(top5), 12)
    tally = _Tally("onnx_cpu", "logits", {"e_ref": 0.0, "scale": 3.0, "classifier": True, "classes": 12},
                   Tolerance(atol=1.0), np.dtype(np.float32))
    tally.add([0, 1, 2], ref, got)
    stream = tally.row(["a", "b", "c"])
    assert stream.top1_agree / 3 == pytest.approx(top1) and stream.top5 == pytest.approx(top5)
    assert stream.disagree == [i for i in range(3) if _top(ref[i], 1) != _top(got[i], 1)]


def test_a_nan_ranks_first_as_argmax_takes_it():
    from normfold.verify.metrics import topk

    x = np.array([[1.0, np.nan, 3.0, np.inf], [2.0, 2.0, -np.inf, 0.0], [np.inf, -1.0, np.inf, np.nan]])
    assert topk(x, 1)[:, 0].tolist() == x.argmax(1).tolist() == [1, 0, 3]
    assert topk(x, 3).tolist() == [[1, 3, 2], [0, 1, 3], [3, 0, 2]]
