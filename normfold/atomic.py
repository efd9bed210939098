"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything normfold writes (ONNX files, JSON reports, plots, docs) goes through
here: the content is written to a temporary file in the target's directory
(same filesystem), then renamed over the target; on any failure (an exception,
Ctrl-C, or SIGTERM, which the command line turns into an exception) the
temporary file is removed and the target is left as it was.

The result is what a plain ``open(path, "w")`` would leave, only atomic:

* the new file's mode is the existing target's, or ``0o666`` minus the umask
  for a new one (not the temporary file's 0600, which would make a CI artifact
  or a file on a shared volume unreadable to others);
* a symlink is written through: the file it points to is replaced, the link kept;
* a target that exists but is not a regular file (``/dev/stdout``, a FIFO) is
  written directly: renaming over it would replace the device or pipe itself.

``staged(out)`` writes several files that belong together (an export and its
baseline): into a hidden directory inside ``out``, moved into ``out`` one after
the other with SIGINT/SIGTERM held, so an interrupt leaves the previous set or
the new one. On failure the hidden directory is removed, and so is ``out`` if
``staged`` created it and it is still empty.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def written_in_place(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a device or a pipe (/dev/null, /dev/stdout, a FIFO): written to as open()
    does, by the name given (/dev/stdout on a pipe resolves to "/proc/N/fd/pipe:[...]", which no
    open() finds), with no temporary file beside it."""
    given = Path(path)
    return given.exists() and not given.is_file() and not given.is_dir()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds.

    ``suffix`` matters to writers that pick a format from the file name
    (matplotlib's ``savefig``). Raises OSError if the directory cannot be written.
    """
    if written_in_place(path):
        yield Path(path)
        return
    target = Path(os.path.realpath(path))
    mode = file_mode(target)
    tmp = None
    try:
        with held_signals():   # the name is recorded before an interrupt can strike
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
            os.close(fd)
            tmp = Path(name)
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_png(path: str | os.PathLike, figure, *, dpi: int = 110) -> None:
    """Save a matplotlib figure as PNG atomically, and close it either way."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=dpi)
    finally:
        plt.close(figure)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether writing ``a`` would write ``b``: the same path once symlinks are resolved, or hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def file_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, else 0o666 minus the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~umask()


def umask() -> int:
    """This process's umask, read without changing it where the OS tells (Linux), else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the few system calls of the block; deliver them after it.

    Only the main thread receives Python signal handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = [s for s in HELD_SIGNALS if signal.getsignal(s) is not None]   # None: a handler Python did not install
    previous = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)


class Staging:
    """Files written into a hidden directory inside ``out``, then moved into ``out`` together."""

    def __init__(self, out: Path, directory: Path):
        self.out, self.directory = out, directory

    def path(self, name: str) -> Path:
        """Where to write ``name`` (a file of ``out``) before ``commit``."""
        return self.directory / name

    def commit(self, names: list[str]) -> list[Path]:
        """Move the staged ``names`` into ``out`` (each with the mode ``open()`` would give it there)."""
        targets = [Path(os.path.realpath(self.out / n)) for n in names]
        with held_signals():
            for n, target in zip(names, targets):
                os.chmod(self.path(n), file_mode(target))
                os.replace(self.path(n), target)
        return [self.out / n for n in names]


@contextlib.contextmanager
def staged(out: str | os.PathLike) -> Iterator[Staging]:
    """A ``Staging`` for ``out`` (created if missing); see the module docstring."""
    out = Path(out)
    created = [p for p in (out, *out.parents) if not p.exists()]
    directory = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        with held_signals():
            directory = Path(tempfile.mkdtemp(prefix=".normfold-", dir=out))
        yield Staging(out, directory)
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            directory = None
        for p in created:   # innermost first; only what is still empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
