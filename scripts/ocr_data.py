"""Labelled OCR data rendered here, preprocessed for PaddleOCR's trained ONNX files.

    .venv/bin/python scripts/ocr_data.py rec --n 300 --seed 1 --out DIR
    .venv/bin/python scripts/ocr_data.py cls --n 200 --seed 1 --out DIR
    .venv/bin/python scripts/ocr_data.py det --n 100 --seed 1 --out DIR

Writes ``DIR/<kind>.npz`` (one key, ``x``: the input name of all three files)
holding ``(N, 3, H, W)`` float32 already preprocessed as rapidocr-onnxruntime
1.4.4 preprocesses for each model, and ``DIR/<kind>.csv`` with a ``name,label``
header and one row per sample, ``name`` the row number (the names normfold gives
the rows of an .npz keyed by an input name). Nothing is downloaded: the text is
drawn with PIL's ``ImageFont.load_default(size)`` (Aileron Regular, a TrueType
font bundled with Pillow), strings and layout from ``numpy.random.default_rng(seed)``,
so one seed gives the same arrays and labels (on the same Pillow/FreeType).

Images are drawn in RGB and handed to the models in BGR, as rapidocr does
(``LoadImage`` turns a PIL/file image into BGR; every model sees BGR).

* ``rec`` (ch_PP-OCRv4_rec_infer, 3x48x320): a line of 1-4 words, font
  24-36 px, cropped with a jittered margin; rapidocr's ``resize_norm_img``:
  resized (bilinear, cv2's INTER_LINEAR) to height 48 keeping the aspect ratio,
  ``(x / 255 - 0.5) / 0.5``, right-padded with 0 to width 320 (lines are drawn
  so they fit: rapidocr widens the batch instead for longer ones). Label: the
  string (ASCII letters, digits, ``. - : / % $ # & ! ? ( )``, single spaces).
* ``cls`` (ch_ppocr_mobile_v2.0_cls_infer, 3x48x192): a line of 1-3 words the
  same way, resized to height 48 and to at most width 192 (squeezed if wider, as
  rapidocr does), same normalization, padded to 192; exactly ``n // 2`` rows,
  at random, are rotated 180 degrees before preprocessing. Label: the class
  index in rapidocr's ``label_list: ['0', '180']``: 0 upright, 1 rotated.
* ``det`` (ch_PP-OCRv4_det_infer, 3x320x320): a 320x320 page with 2-6 lines
  of 1-3 words (at least 4 characters), font 20-32 px, at random positions but
  never two on the same rows (a gap of half a line at least: DB joins words side
  by side into one line); rapidocr's det normalization ``(x / 255 - mean) / std``
  with its config's mean = std = 0.5 on the three BGR channels, no resize (320
  is a multiple of 32: PaddleOCR's own default, limit_type ``max`` 960, keeps
  it; rapidocr 1.4.4's config, limit_type ``min`` 736, would first upscale the
  page to 736). Label: each line's box in page pixels,
  ``"x0 y0 x1 y1;x0 y0 x1 y1;..."`` (x1, y1 exclusive, in drawing order): the
  ink's x extent and, in y, the ink's extent widened to a capital's top and a
  descender's bottom (``_line_box``), the box drawn round a line whatever its
  letters; the detector's boxes are that tall for "are" as for "Age".
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("rec", "cls", "det")
INPUT = "x"                                    # the input name of the three PaddleOCR files
SHAPES = {"rec": (48, 320), "cls": (48, 192), "det": (320, 320)}
PUNCT = ".-:/%$#&!?()"
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + PUNCT + " "

WORDS = """
the of and to in is it you that was for on are with as his they be at one have this from or had by
word but what some we can out other were all there when up use your how said an each she which do
their time if will way about many then them write would like so these her long make thing see him two
has look more day could go come did number sound no most people my over know water than call first who
may down side been now find any new work part take get place made live where after back little only
round man year came show every good me give our under name very through just form sentence great think
say help low line differ turn cause much mean before move right boy old too same tell does set three
want air well also play small end put home read hand port large spell add even land here must big high
such follow act why ask men change went light kind off need house picture try us again animal point
mother world near build self earth father head stand own page should country found answer school grow
study still learn plant cover food sun four between state keep eye never last let thought city tree
cross farm hard start might story saw far sea draw left late run while press close night real life few
north open seem together next white children begin got walk example ease paper group always music those
both mark often letter until mile river car feet care second book carry took science eat room friend
began idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl
usual young ready above ever red list though feel talk bird soon body dog family direct pose leave song
measure door product black short numeral class wind question happen complete ship area half rock order
fire south problem piece told knew pass since top whole king space heard best hour better true during
hundred five remember step early hold west ground interest reach fast verb sing listen six table travel
less morning ten simple several vowel toward war lay against pattern slow center love person money serve
appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry
dark machine note wait plan figure star box noun field rest correct able pound done beauty drive stood
contain front teach week final gave green quick develop ocean warm free minute strong special mind behind
clear tail produce fact street inch multiply nothing course stay wheel full force blue object decide
surface deep moon island foot system busy test record boat common gold possible plane stead dry wonder
laugh thousand ago ran check game shape equate miss brought heat snow tire bring yes distant fill east
paint language among invoice total price order receipt account balance amount date due paid ticket
""".split()


def make(kind: str, n: int, seed: int, **options) -> tuple[np.ndarray, list]:
    """``n`` rendered samples of ``kind``: ``(x, labels)``, x (n, 3, H, W) float32 preprocessed,
    labels a list of n (str for rec and det, int for cls), row i labelling x[i]."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    rng = np.random.default_rng(seed)
    return {"rec": _rec, "cls": _cls, "det": _det}[kind](n, rng, **options)


def write(kind: str, n: int, seed: int, out_dir) -> tuple[Path, Path]:
    """Render with ``make`` and write ``out_dir/<kind>.npz`` (key ``x``) and ``out_dir/<kind>.csv``."""
    x, labels = make(kind, n, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz, table = out / f"{kind}.npz", out / f"{kind}.csv"
    tmp = out / f".{kind}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **{INPUT: x})
    os.replace(tmp, npz)
    tmp = out / f".{kind}.{os.getpid()}.tmp.csv"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "label"])
        w.writerows([str(i), label] for i, label in enumerate(labels))
    os.replace(tmp, table)
    return npz, table


# ---- text ----------------------------------------------------------------------------------------

def _token(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.62:
        w = WORDS[rng.integers(len(WORDS))]
        c = rng.random()
        w = w.capitalize() if c < 0.3 else (w.upper() if c < 0.42 else w)
        if rng.random() < 0.12:
            w += "!?.:"[rng.integers(4)]
        return w
    if r < 0.72:
        return str(rng.integers(0, 10 ** int(rng.integers(1, 6))))
    if r < 0.77:
        return f"{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}"
    if r < 0.81:
        return f"${rng.integers(1, 500)}.{rng.integers(0, 100):02d}"
    if r < 0.85:
        return f"{rng.integers(1990, 2031)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    if r < 0.88:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d}"
    if r < 0.91:
        return f"{rng.integers(1, 100)}%"
    if r < 0.94:
        a, b = (chr(ord("A") + int(i)) for i in rng.integers(0, 26, 2))
        return f"{a}{b}-{rng.integers(10, 1000)}"
    if r < 0.96:
        return f"#{rng.integers(1, 1000)}"
    if r < 0.98:
        return f"({WORDS[rng.integers(len(WORDS))]})"
    return f"{rng.integers(1, 13)}/{rng.integers(1, 29)}"


def _text(rng: np.random.Generator, most: int) -> str:
    return " ".join(_token(rng) for _ in range(int(rng.integers(1, most + 1))))


# ---- drawing -------------------------------------------------------------------------------------

_FONTS: dict[int, ImageFont.FreeTypeFont] = {}


def _font(size: int):
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size)
    return _FONTS[size]


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    base = int(rng.integers(205, 256))
    bg = tuple(int(np.clip(base + rng.integers(-12, 13), 0, 255)) for _ in range(3))
    ink = int(rng.integers(0, 70))
    fg = tuple(int(np.clip(ink + rng.integers(-15, 16), 0, 255)) for _ in range(3))
    return bg, fg


def _ink_box(text: str, font) -> tuple[int, int, int, int]:
    """The ink's box of ``text`` drawn at (0, 0): (x0, y0, x1, y1), x1/y1 exclusive."""
    mask = font.getmask(text)            # the ink, anti-aliased, at the offset getbbox reports
    left, top, _, _ = font.getbbox(text)
    box = mask.getbbox()
    if box is None:
        return left, top, left + 1, top + 1
    return left + box[0], top + box[1], left + box[2], top + box[3]


def _line_box(text: str, font) -> tuple[int, int, int, int]:
    """The line's box: the ink's x extent, and from the top of a capital to the bottom of a
    descender ('Hg' on the same baseline) or the ink's own, whichever is wider, in y: the box an
    annotator draws round a line, whatever letters it holds ('are' is as tall as 'Age')."""
    x0, y0, x1, y1 = _ink_box(text, font)
    _, r0, _, r1 = _ink_box("Hg", font)
    return x0, min(y0, r0), x1, max(y1, r1)


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(0.0, 6.0)
    out = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _line(text: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A cropped text line (h, w, 3) uint8 RGB: the ink plus a jittered margin."""
    font = _font(size)
    x0, y0, x1, y1 = _ink_box(text, font)
    th = y1 - y0
    top, bottom = (int(round(th * rng.uniform(0.12, 0.4))) + 1 for _ in range(2))
    left, right = (int(rng.integers(2, max(3, size // 2))) for _ in range(2))
    bg, fg = _colours(rng)
    img = Image.new("RGB", (x1 - x0 + left + right, th + top + bottom), bg)
    ImageDraw.Draw(img).text((left - x0, top - y0), text, font=font, fill=fg)
    return _noise(np.asarray(img), rng)


def resize_linear(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height))`` (INTER_LINEAR) in numpy: half-pixel centres, no
    antialiasing, edges clamped; uint8 in, uint8 out (cv2's fixed point may differ by 1)."""
    def axis(n_out: int, n_in: int):
        f = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        i0 = np.floor(f).astype(np.int64)
        w = f - i0
        w[i0 < 0] = 0.0
        i0 = np.clip(i0, 0, n_in - 1)
        i1 = np.clip(i0 + 1, 0, n_in - 1)
        return i0, i1, w
    h, w_in = img.shape[:2]
    y0, y1, wy = axis(height, h)
    x0, x1, wx = axis(width, w_in)
    a = img.astype(np.float64)
    rows = a[y0] * (1 - wy)[:, None, None] + a[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def norm_line(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's rec/cls ``resize_norm_img`` on an RGB line: BGR, height ``height`` keeping the
    aspect ratio (at most ``width`` wide), (x / 255 - 0.5) / 0.5, zero-padded on the right."""
    bgr = rgb[:, :, ::-1]
    h, w = bgr.shape[:2]
    rw = min(width, int(math.ceil(height * w / float(h))))
    img = resize_linear(bgr, rw, height).astype(np.float32).transpose(2, 0, 1) / 255
    img -= 0.5
    img /= 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :rw] = img
    return out


def norm_page(rgb: np.ndarray, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> np.ndarray:
    """rapidocr's det ``DetPreProcess`` normalize + permute on an RGB page (BGR, no resize)."""
    bgr = rgb[:, :, ::-1].astype(np.float32)
    img = (bgr * np.float32(1 / 255.0) - np.asarray(mean)) / np.asarray(std)
    return img.transpose(2, 0, 1).astype(np.float32)


# ---- the three kinds -----------------------------------------------------------------------------

def _fitting_line(rng, height: int, width: int, most_words: int, sizes=(24, 36)):
    """A text and its line image whose resize to ``height`` fits ``width`` (words dropped until it does)."""
    text = _text(rng, most_words)
    size = int(rng.integers(sizes[0], sizes[1] + 1))
    while True:
        img = _line(text, size, rng)
        h, w = img.shape[:2]
        if math.ceil(height * w / float(h)) <= width or " " not in text:
            return text, img
        text = text.rsplit(" ", 1)[0]


def _rec(n: int, rng) -> tuple[np.ndarray, list]:
    h, w = SHAPES["rec"]
    x = np.zeros((n, 3, h, w), dtype=np.float32)
    labels = []
    for i in range(n):
        text, img = _fitting_line(rng, h, w, 4)
        while math.ceil(h * img.shape[1] / img.shape[0]) > w:   # one word too wide: another
            text, img = _fitting_line(rng, h, w, 4)
        x[i] = norm_line(img, h, w)
        labels.append(text)
    return x, labels


def _cls(n: int, rng) -> tuple[np.ndarray, list]:
    h, w = SHAPES["cls"]
    x = np.zeros((n, 3, h, w), dtype=np.float32)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.permutation(n)[: n // 2]] = True
    for i in range(n):
        _, img = _fitting_line(rng, h, w, 3)
        if flipped[i]:
            img = img[::-1, ::-1]
        x[i] = norm_line(np.ascontiguousarray(img), h, w)
    return x, [int(f) for f in flipped]


def _det(n: int, rng, size: int = SHAPES["det"][0]) -> tuple[np.ndarray, list]:
    if size % 32:
        raise ValueError(f"the det page size must be a multiple of 32, not {size}")
    x = np.zeros((n, 3, size, size), dtype=np.float32)
    labels = []
    for i in range(n):
        page, boxes = _page(rng, size)
        x[i] = norm_page(page)
        labels.append(";".join(" ".join(str(v) for v in b) for b in boxes))
    return x, labels


def _page(rng, size: int) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    bg, _ = _colours(rng)
    img = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(img)
    want = int(rng.integers(2, 7))
    boxes: list[tuple[int, int, int, int]] = []
    tries = 0
    while len(boxes) < want and tries < 400:
        tries += 1
        font = _font(int(rng.integers(20, 33)))
        text = _text(rng, 3)
        if len(text) < 4:                    # a lone "7" or "at": its box is a few pixels wide,
            continue                         # where one pixel moves IoU by 0.1
        ix0, iy0, ix1, iy1 = _line_box(text, font)
        bw, bh = ix1 - ix0, iy1 - iy0
        if bw > size - 16:
            continue
        bx = int(rng.integers(8, size - 8 - bw + 1))
        by = int(rng.integers(8, size - 8 - bh + 1))
        box = (bx, by, bx + bw, by + bh)
        gap = max(8, bh // 2)                # lines, one above another: never side by side (DB
        if any(box[1] < b[3] + gap and b[1] < box[3] + gap for b in boxes):   # joins those)
            continue
        ink = int(np.clip(rng.integers(0, 70), 0, 255))
        fg = tuple(int(np.clip(ink + rng.integers(-15, 16), 0, 255)) for _ in range(3))
        draw.text((bx - ix0, by - iy0), text, font=font, fill=fg)
        boxes.append(box)
    if len(boxes) < 2:                       # cannot happen at 320 with these sizes; kept honest
        raise RuntimeError("could not place two lines on the page")
    return _noise(np.asarray(img), rng), boxes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--n", type=int, required=True, help="samples to render")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for <kind>.npz and <kind>.csv")
    a = p.parse_args(argv)
    npz, table = write(a.kind, a.n, a.seed, a.out)
    print(f"wrote {npz} ({a.n} rows of input {INPUT!r}) and {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
