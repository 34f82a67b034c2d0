"""A CLI whose reader went away (``edgeloop-collector status | head -1``) ends quietly, as a Unix tool does."""

from __future__ import annotations

import os
import sys

# What a shell reports for a tool ended by SIGPIPE (Python ignores the signal and raises BrokenPipeError instead).
CLOSED_PIPE_EXIT = 128 + 13


def closed_pipe_exit() -> int:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again, and give the exit code."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return CLOSED_PIPE_EXIT
