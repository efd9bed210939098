"""Outputs computed through a discrete selection, compared so that near-tied elements may exchange places.

A detector's final output is built by a selection: ``TopK`` over scores
(``torch.topk``, and ``torch.sort``, which exports as TopK), or
``NonMaxSuppression``. Two candidates whose keys are equal to within float
round-off come out in either order, so a correct fold can swap two rows of
``(N, K, ...)`` and fail an element-wise comparison by the full difference
between the rows. The raw tensors before the selection are compared as usual;
the selected output is compared after its rows are matched:

    row j of the checked output takes the place of row i of the oracle's
    where it is closer to oracle row i than to its own (max |difference|),

matched greedily, closest pairs first, among the rows some other row is
closer to; rows that match in place stay. The matched output is then judged
by the same element-wise rule as every output: a row may only move where all
its values (its key included, when the output holds it) agree with the row it
replaces within the tolerance. A fold that changes a key changes the order by
more than a tie and still fails. Rows are along axis 1 for a rank >= 2 output
(axis 0 at rank 1), every later axis flattened into the row.

ArgMax/ArgMin outputs are not matched: the keys they selected from are not in
the output, so a near-tied flip there is still a failure (compare the scores
before the ArgMax instead).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import onnx

SELECTIONS = ("TopK", "NonMaxSuppression")


def selected_outputs(proto: onnx.ModelProto) -> dict[int, str]:
    """Output index -> the selection ops upstream of it (e.g. "TopK"), for outputs computed through one."""
    producer = {out: node for node in proto.graph.node for out in node.output if out}
    found: dict[int, str] = {}
    for k, output in enumerate(proto.graph.output):
        ops, seen, todo = set(), set(), deque([output.name])
        while todo:
            name = todo.popleft()
            node = producer.get(name)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in SELECTIONS:
                ops.add(node.op_type)
            todo.extend(i for i in node.input if i)
        if ops:
            found[k] = "+".join(sorted(ops))
    return found


def matched(oracle: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, int]:
    """``got`` with its rows moved to the oracle rows they match (module docstring), and how many moved."""
    if got.shape != oracle.shape or got.ndim == 0 or got.size == 0:
        return got, 0
    if got.ndim == 1:
        out, moved = _match_rows(oracle.reshape(-1, 1), got.reshape(-1, 1))
        return out.reshape(got.shape), moved
    o = oracle.reshape(oracle.shape[0], oracle.shape[1], -1)
    g = got.reshape(o.shape)
    out, moved = np.empty_like(g), 0
    for b in range(o.shape[0]):
        out[b], m = _match_rows(o[b], g[b])
        moved += m
    return out.reshape(got.shape), moved


def _match_rows(o: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of ``g`` (K, D) placed at the rows of ``o`` they match; how many moved."""
    if not (np.isfinite(o).all() and np.isfinite(g).all()):
        return g, 0
    cost = np.abs(o[:, None, :] - g[None, :, :]).max(axis=2)     # cost[i, j] = max |o_i - g_j|
    loose = np.flatnonzero(cost.min(axis=1) < np.diagonal(cost))   # some other row is closer than its own
    if loose.size == 0:
        return g, 0
    loose = np.union1d(loose, cost[loose].argmin(axis=1))          # and the rows that are closer
    sub = cost[np.ix_(loose, loose)]
    order = np.dstack(np.unravel_index(np.argsort(sub, axis=None, kind="stable"), sub.shape))[0]
    place: dict[int, int] = {}
    used: set[int] = set()
    for i, j in order:
        if i not in place and j not in used:
            place[i] = j
            used.add(j)
            if len(place) == len(loose):
                break
    out = g.copy()
    for i, j in place.items():
        out[loose[i]] = g[loose[j]]
    return out, sum(1 for i, j in place.items() if i != j)


class SelectedRows:
    """``verify``'s comparison of the selected outputs of one checked file, and what it moved."""

    def __init__(self, proto: onnx.ModelProto):
        self.selected = selected_outputs(proto)
        self.moved: dict[tuple[int, str], list[str]] = {}   # (output index, name) -> "run at batch b: n rows"

    def compared(self, k: int, name: str, oracle: np.ndarray, got, run: str, batch: int) -> np.ndarray:
        """``got`` as compared with ``oracle``: its rows matched when output ``k`` is a selection's."""
        got = np.asarray(got)
        if k not in self.selected or not np.issubdtype(got.dtype, np.number):
            return got
        out, moved = matched(np.asarray(oracle, dtype=np.float64), got.astype(np.float64))
        where = self.moved.setdefault((k, name), [])
        if moved:
            where.append(f"{run} at batch {batch}: {moved} rows")
        return out

    def notes(self) -> list[str]:
        """One line per selected output: how it was compared, and where rows moved."""
        return [f"output {name!r} is computed through {self.selected[k]}: compared after matching its rows to the "
                f"oracle's (near-tied rows may exchange places); moved: {', '.join(where) or 'none'}"
                for (k, name), where in self.moved.items()]
