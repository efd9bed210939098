"""normfold.atomic: the target holds the old content or the new, and no temporary file is left."""
from __future__ import annotations

import matplotlib
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
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from normfold.atomic import write_png

    fig = plt.figure()
    fig.gca().plot([0, 1], [1, 0])
    write_png(tmp_path / "p.png", fig)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]


# ---- issue 12: what a plain open() would leave (mode, symlinks, devices), and staged sets of files --------

@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    import os

    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask-022", "umask-002", "umask-077"])
@pytest.mark.parametrize("writer", ["write_text", "write_bytes", "write_png", "staged"])
def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask, mask, mode, writer):
    import os

    umask(mask)
    reference = tmp_path / "plain.txt"
    with open(reference, "w"):
        pass
    target = tmp_path / "new.out"
    _write(writer, target)
    assert os.stat(target).st_mode & 0o777 == os.stat(reference).st_mode & 0o777 == mode


@pytest.mark.parametrize("writer", ["write_text", "staged"])
def test_an_existing_file_keeps_its_mode(tmp_path, umask, writer):
    import os

    umask(0o022)
    target = tmp_path / "report.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    _write(writer, target)
    assert target.read_bytes() != b"old" and os.stat(target).st_mode & 0o777 == 0o640


def test_a_symlink_is_written_through_and_kept(tmp_path):
    real = tmp_path / "real" / "report.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "report.json"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["report.json"]


def test_a_fifo_is_written_to_not_replaced(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    write_text(fifo, "through the pipe")
    reader.join(timeout=60)
    assert got == ["through the pipe"]
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_staged_moves_every_file_at_commit(tmp_path):
    from normfold.atomic import staged

    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.onnx").write_text("previous a")
    with staged(out) as stage:
        write_text(stage.path("a.onnx"), "new a")
        write_text(stage.path("b.onnx"), "new b")
        assert (out / "a.onnx").read_text() == "previous a" and not (out / "b.onnx").exists()
        assert stage.commit(["a.onnx", "b.onnx"]) == [out / "a.onnx", out / "b.onnx"]
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.onnx": "new a", "b.onnx": "new b"}


@pytest.mark.parametrize("failure", [RuntimeError("export failed"), KeyboardInterrupt()], ids=["error", "interrupt"])
@pytest.mark.parametrize("existed", [True, False], ids=["out-existed", "out-created"])
def test_staged_failure_leaves_no_trace(tmp_path, failure, existed):
    from normfold.atomic import staged

    out = tmp_path / "new" / "out"
    if existed:
        out.mkdir(parents=True)
        (out / "a.onnx").write_text("previous a")
    with pytest.raises(type(failure)):
        with staged(out) as stage:
            write_text(stage.path("a.onnx"), "half of a new set")
            raise failure
    if existed:
        assert {p.name: p.read_text() for p in out.iterdir()} == {"a.onnx": "previous a"}
    else:
        assert list(tmp_path.iterdir()) == []   # the directories staged created are gone too


def test_held_signals_deliver_after_the_block():
    import signal

    from normfold.atomic import held_signals

    order = []
    previous = signal.signal(signal.SIGTERM, lambda *_: order.append("handler"))
    try:
        with held_signals():
            signal.raise_signal(signal.SIGTERM)
            order.append("block done")
        order.append("after")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert order == ["block done", "handler", "after"]


def _write(writer: str, target):
    from normfold.atomic import staged

    if writer == "write_text":
        write_text(target, "text")
    elif writer == "write_bytes":
        write_bytes(target, b"bytes")
    elif writer == "write_png":
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from normfold.atomic import write_png

        write_png(target, plt.figure())
    else:
        with staged(target.parent) as stage:
            write_text(stage.path(target.name), "staged")
            stage.commit([target.name])
