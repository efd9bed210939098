"""normfold.atomic: the target holds the old content or the new, and no temporary file is left."""
from __future__ import annotations

import pytest

from normfold.atomic import atomic_path, write_bytes, write_text


def test_success_replaces_the_target_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    write_text(target, "new")
    write_bytes(tmp_path / "m.onnx", b"\x08\x07")
    assert target.read_text() == "new"
    assert (tmp_path / "m.onnx").read_bytes() == b"\x08\x07"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "report.json"]


def test_failure_keeps_the_old_content_and_removes_the_temporary_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target, suffix=".png") as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".png"
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_unwritable_directory_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        write_text(tmp_path / "missing-dir" / "x.json", "{}")


def test_write_png_saves_a_png_and_closes_the_figure(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from normfold.atomic import write_png

    fig = plt.figure()
    fig.gca().plot([0, 1], [1, 0])
    write_png(tmp_path / "p.png", fig)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]
