"""scripts/ocr_data.py (rendered, labelled OCR data) and scripts/ocr_metric.py (its metrics).

Expected values are written out by hand here, not computed with the code under test.
"""
from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import third_party_file

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


data = _load("ocr_data")
metric = _load("ocr_metric")

TABLE = ("blank", "a", "b", "c", " ")          # index 0 blank, the last a space, as rapidocr builds it


def _steps(indices, classes=len(TABLE)) -> np.ndarray:
    """(T, C) one-hot-ish scores whose argmax per step is ``indices``."""
    out = np.full((len(indices), classes), 0.01, dtype=np.float32)
    out[np.arange(len(indices)), indices] = 0.9
    return out


def _batch(*rows, classes=len(TABLE)) -> np.ndarray:
    t = max(len(r) for r in rows)
    return np.stack([_steps(list(r) + [0] * (t - len(r)), classes) for r in rows])


# ---- CTC greedy decoding -------------------------------------------------------------------------

def test_ctc_collapses_repeats_and_drops_blanks():
    # a a _ a b b ' ' _ c c  ->  a, a (after a blank: a new a), b, ' ', c
    probs = _batch([1, 1, 0, 1, 2, 2, 4, 0, 3, 3], [0, 0, 0], [3, 0, 3, 3, 0, 0, 1], [4, 2, 2, 2, 4])
    assert metric.ctc_greedy(probs, TABLE) == ["aab c", "", "cca", " b "]


def test_ctc_refuses_a_table_of_another_size():
    with pytest.raises(ValueError, match="classes"):
        metric.ctc_greedy(np.zeros((1, 3, 7), np.float32), TABLE)


def test_rec_metrics_on_hand_built_scores(monkeypatch):
    monkeypatch.setattr(metric, "characters", lambda model=None: TABLE)
    probs = _batch([1, 0, 2, 3],                 # "abc"
                   [4, 1, 2, 2, 4],              # " ab " : outer spaces are dropped -> "ab"
                   [1, 2, 0, 2],                 # "abb"
                   [0, 0],                       # ""
                   [3, 0, 3, 0, 3, 0, 3])        # "cccc"
    labels = ["abc", "ab", "abc", "abc", "a"]
    np.testing.assert_array_equal(metric.rec_exact([probs], labels), [1, 1, 0, 0, 0])
    np.testing.assert_allclose(metric.rec_char_accuracy([probs], labels), [1, 1, 2 / 3, 0, 0])


@pytest.mark.parametrize("a, b, distance", [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3),
    ("same", "same", 0), ("ab", "ba", 2), ("Hello World", "HelloWorld", 1), ("5%", "S%", 1),
])
def test_levenshtein(a, b, distance):
    assert metric.levenshtein(a, b) == distance


# ---- detection -----------------------------------------------------------------------------------

def test_iou_of_hand_made_boxes():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(metric.iou(a, b), [[50 / 150, 1.0, 0.0, 25 / 100]])


def test_matching_is_one_to_one_at_iou_half():
    gt = np.array([[0, 0, 100, 20], [0, 40, 100, 60]])
    # two predictions on the first line: only one of them counts; none on the second
    pred = np.array([[0, 0, 100, 22], [2, 0, 100, 20], [0, 70, 100, 90]])
    assert metric.match(pred, gt) == 1
    # IoU exactly 0.5 matches, just under does not
    assert metric.match(np.array([[0, 0, 50, 20]]), np.array([[0, 0, 100, 20]])) == 1
    assert metric.match(np.array([[0, 0, 49, 20]]), np.array([[0, 0, 100, 20]])) == 0


def test_components_are_8_connected():
    m = np.zeros((8, 10), bool)
    m[1, 1:4] = True           # a bar ...
    m[2, 4] = True             # ... touching this pixel only diagonally: one component
    m[5:7, 0:2] = True         # a block
    m[5, 8] = m[6, 8] = m[6, 9] = True   # an L
    assert sorted(metric.components(m)) == [(0, 5, 1, 6), (1, 1, 4, 2), (8, 5, 9, 6)]
    assert metric.components(np.zeros((4, 4), bool)) == []


def _prob_map() -> np.ndarray:
    p = np.zeros((1, 1, 64, 128), np.float32)
    p[0, 0, 10:20, 20:80] = 0.9        # a line: rows 10..19, columns 20..79
    p[0, 0, 40:50, 10:30] = 0.35       # above thresh 0.3 but a box score under 0.5: dropped
    return p


def test_db_boxes_by_hand():
    # dilated 2x2 (one pixel down and right): rows 10..20, columns 20..80 -> w 60, h 10;
    # unclip distance 60*10*1.6 / (2*(60+10)) = 6.857...; box rounded: 13 3 87 27
    np.testing.assert_array_equal(metric.db_boxes(_prob_map()[0, 0]), [[13, 3, 87, 27]])


def test_det_recall_and_precision():
    p = np.concatenate([_prob_map()] * 4)
    labels = ["13 3 87 27",                    # found: recall 1, precision 1
              "14 4 86 26;10 40 30 50",        # one of two found: recall 0.5, precision 1
              "",                              # no ground truth, one box: recall 1, precision 0
              "100 50 120 60"]                 # a miss and a false box: 0 and 0
    np.testing.assert_allclose(metric.det_recall([p], labels), [1, 0.5, 1, 0])
    np.testing.assert_allclose(metric.det_precision([p], labels), [1, 1, 0, 0])
    blank = np.zeros((2, 1, 32, 32), np.float32)
    np.testing.assert_allclose(metric.det_precision([blank], ["", "1 1 9 9"]), [1, 0])
    np.testing.assert_allclose(metric.det_recall([blank], ["", "1 1 9 9"]), [1, 0])


# ---- rendering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", data.KINDS)
def test_rendering_is_deterministic_and_preprocessed(kind):
    x, labels = data.make(kind, 6, seed=7)
    x2, labels2 = data.make(kind, 6, seed=7)
    np.testing.assert_array_equal(x, x2)
    assert labels == labels2
    h, w = data.SHAPES[kind]
    assert x.shape == (6, 3, h, w) and x.dtype == np.float32 and len(labels) == 6
    assert x.min() >= -1.0 and x.max() <= 1.0          # (x/255 - 0.5)/0.5 with mean = std = 0.5
    x3, labels3 = data.make(kind, 6, seed=8)
    assert labels3 != labels or not np.array_equal(x3, x)


@pytest.mark.parametrize("kind", ["rec", "det"])
def test_rows_follow_the_seed_one_by_one(kind):
    """Row i is the same whatever n: a label cannot drift off its row."""
    x5, l5 = data.make(kind, 5, seed=3)
    x8, l8 = data.make(kind, 8, seed=3)
    np.testing.assert_array_equal(x5, x8[:5])
    assert l5 == l8[:5]


def test_rec_labels_are_clean_strings():
    _, labels = data.make("rec", 60, seed=11)
    for t in labels:
        assert t == t.strip() and "  " not in t and t
        assert set(t) <= set(data.ALPHABET), t
        assert 1 <= len(t.split(" ")) <= 4


def test_cls_rotates_exactly_half_the_rows():
    for n in (10, 7):
        _, labels = data.make("cls", n, seed=2)
        assert sorted(labels) == [0] * (n - n // 2) + [1] * (n // 2)


def test_det_boxes_hold_the_ink_and_nothing_else():
    x, labels = data.make("det", 8, seed=5)
    for page, label in zip(x, labels):
        grey = (page * 0.5 + 0.5).mean(axis=0)          # back to [0, 1]
        boxes = metric.parse_boxes(label).astype(int)
        assert 2 <= len(boxes) <= 6
        inside = np.zeros(grey.shape, bool)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= grey.shape[1] and 0 <= y0 < y1 <= grey.shape[0]
            assert grey[y0:y1, x0:x1].min() < 0.4       # dark text in every box
            inside[y0:y1, x0:x1] = True
        assert not np.any(grey[~inside] < 0.5)          # and none outside them
        for a in range(len(boxes)):                     # lines never share a row (DB would join them)
            for b in range(a + 1, len(boxes)):
                assert boxes[a][3] <= boxes[b][1] or boxes[b][3] <= boxes[a][1]


def test_write_gives_an_npz_keyed_by_input_name_and_a_name_label_csv(tmp_path):
    npz, table = data.write("det", 3, 4, tmp_path)
    x, labels = data.make("det", 3, 4)
    with np.load(npz) as z:
        assert list(z.keys()) == ["x"]
        np.testing.assert_array_equal(z["x"], x)
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["name", "label"]] + [[str(i), t] for i, t in enumerate(labels)]
    assert data.main(["rec", "--n", "2", "--seed", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "rec.npz").is_file() and (tmp_path / "rec.csv").is_file()


def test_resize_matches_cv2():
    import cv2  # opencv-python: a requirement of ultralytics, a test extra
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)
    for w, h in [(200, 48), (40, 48), (91, 37), (13, 5)]:
        diff = np.abs(data.resize_linear(img, w, h).astype(int) - cv2.resize(img, (w, h)))
        assert diff.max() <= 1


# ---- the real files ------------------------------------------------------------------------------

def _session(path: Path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_dictionary_is_the_rec_files_and_holds_the_rendered_characters():
    rec = third_party_file("ppocr-rec")
    table = metric.characters()
    assert table[0] == "blank" and table[-1] == " " and len(table) == 6625
    assert set(data.ALPHABET) <= set(table)
    out = _session(rec).get_outputs()[0]
    assert out.shape[-1] == len(table)


def test_the_fp32_recognizer_reads_rendered_lines():
    sess = _session(third_party_file("ppocr-rec"))
    assert [i.name for i in sess.get_inputs()] == [data.INPUT]
    x, labels = data.make("rec", 20, seed=123)
    outputs = sess.run(None, {data.INPUT: x})
    exact = metric.rec_exact(outputs, labels)
    got = metric.rec_text(outputs)
    assert exact.mean() >= 0.9, [(t, g) for t, g in zip(labels, got) if t != g]
    assert metric.rec_char_accuracy(outputs, labels).mean() >= 0.97


def test_the_fp32_classifier_tells_rotated_lines():
    sess = _session(third_party_file("ppocr-cls"))
    x, labels = data.make("cls", 20, seed=9)
    (out,) = sess.run(None, {data.INPUT: x})
    assert out.shape == (20, 2)                       # class 0 = '0', 1 = '180' (rapidocr's label_list)
    assert (out.argmax(1) == np.array(labels)).mean() >= 0.9
