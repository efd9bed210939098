"""One line from an error: the root cause, its first line, no terminal colour codes.

Libraries wrap errors (torch.onnx's TorchExportError holds the real
torch.export error as its ``__cause__``) and decorate them: multi-line
advice, colour escapes meant for a terminal. A message normfold shows is one
line of plain text.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

# Allocation failures: numpy's and Python's MemoryError, torch's (CPU: "can't allocate memory", older and
# Windows builds: "not enough memory"; CUDA: "out of memory") and onnxruntime's ("Failed to allocate memory").
_OUT_OF_MEMORY = re.compile(r"can't allocate memory|not enough memory|failed to allocate memory|out of memory"
                            r"|bad_alloc", re.I)


def plain(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text)


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, plain, stripped ('' for none)."""
    return next((line.strip() for line in plain(text).splitlines() if line.strip()), "")


def error_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, plain; its type's name when the message is empty."""
    return first_line(str(exc)) or type(exc).__name__


def typed_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (just ``Type:`` when it is empty)."""
    return f"{type(exc).__name__}: {first_line(str(exc))}"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (MemoryError, or a library's out-of-memory message)."""
    return isinstance(exc, MemoryError) or bool(_OUT_OF_MEMORY.search(str(exc)))


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception along explicit ``raise ... from`` chaining."""
    seen = {id(exc)}
    while exc.__cause__ is not None and id(exc.__cause__) not in seen:
        exc = exc.__cause__
        seen.add(id(exc))
    return exc
