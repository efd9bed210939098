"""The ``normfold`` console script: SIGINT and SIGTERM are in hand before anything heavy is imported.

``import normfold`` takes seconds (torch). This module imports only the
standard library, turns SIGINT (Ctrl-C) and SIGTERM (what ``timeout``, CI
runners and ``kill`` send) into an exception, and only then imports and runs
``normfold.cli.main``. An interrupt at any moment, even while torch is still
importing, ends the same way: ``finally`` blocks and normfold.atomic remove
what was half written (a staging directory, a temporary file; earlier outputs
stay as they were), stderr gets one line, ``normfold: interrupted (SIGTERM)``,
and the exit code is 128 + the signal number, as a shell reports a process
killed by it: 130 for Ctrl-C, 143 for SIGTERM. Output piped into a reader
that stops early (``normfold zoo | head -1``) ends quietly with 141 (SIGPIPE).

A second signal while the first unwinds gets its default action (the process
ends at once): an impatient user is never stuck waiting for the cleanup.

It is a top-level module, not part of the ``normfold`` package, because
importing anything under ``normfold`` runs ``normfold/__init__.py``, which
imports torch.
"""
from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM raised as an exception; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, _frame):
    for s in SIGNALS:   # the next one ends the process
        signal.signal(s, signal.SIG_DFL)
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        from normfold.cli import main as run

        return run(argv)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"normfold: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:   # `normfold zoo | head`: the reader has gone, there is no one to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit's flush
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
