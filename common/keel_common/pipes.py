"""A command's output piped into `head` (or a pager the user quits) closes
the pipe early: that is the reader's choice, not an error, so the command
ends quietly instead of printing a traceback."""
from __future__ import annotations

import os
import sys

EXIT_PIPE_CLOSED = 141   # what a shell reports for a writer ended by SIGPIPE


def pipe_closed() -> int:
    """Call on BrokenPipeError: point stdout at /dev/null so Python's own
    flush at exit does not fail a second time, and give the exit code."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return EXIT_PIPE_CLOSED
