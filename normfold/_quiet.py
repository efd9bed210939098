"""Run third-party code without its chatter: the error normfold raises carries the message, nothing else prints.

torch.fx's ShapeProp prints a whole traceback before it re-raises; the dynamo
exporter logs progress, warnings and entire graphs (through torch's logging,
whose handlers hold the terminal's stream); torch.export and onnxscript warn.
Inside ``quiet()``:

* loggers of torch, onnxscript, onnx_ir and onnx are silenced (their own level
  raised above CRITICAL, restored after);
* Python-level writes to ``sys.stdout`` and ``sys.stderr`` are dropped, and so
  are native ones to file descriptors 1 and 2 (onnxsim's C++ prints "WARNING:
  failed to run ..." for every op its constant folder skips);
* warnings are ignored (normfold issues its own before or after such a call).

It affects the whole process for the duration of the call (other threads'
prints too). ``NORMFOLD_VERBOSE=1`` in the environment turns it off, to see
everything when debugging.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from typing import Iterator

LOGGERS = ("torch", "onnxscript", "onnx_ir", "onnx")
SILENT = logging.CRITICAL + 1


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    if os.environ.get("NORMFOLD_VERBOSE"):
        yield
        return
    loggers = [logging.getLogger(n) for n in LOGGERS] + [
        lg for name, lg in list(logging.root.manager.loggerDict.items())
        if isinstance(lg, logging.Logger) and name.split(".", 1)[0] in LOGGERS
    ]
    levels = {lg: lg.level for lg in loggers}
    try:
        for lg in levels:
            lg.setLevel(SILENT)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()), _native_silenced():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in levels.items():
            lg.setLevel(level)


@contextlib.contextmanager
def _native_silenced() -> Iterator[None]:
    """File descriptors 1 and 2 pointed at /dev/null for the block (restored after, whatever happens)."""
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
