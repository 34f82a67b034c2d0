"""Durable file writes, done one way: temp file → fsync → rename → fsync the directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_dir", "move_durably", "write_durably"]


def fsync_dir(path: str | Path) -> None:
    """Make a rename or unlink inside ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str | Path, write: bytes | Callable[[BinaryIO], None], *, mode: int | None = None) -> Path:
    """Write ``path`` so that after a crash it is either absent or complete.

    ``write`` is the bytes or a callback that writes into the open temp file; ``mode``, if
    given, is set before anything is written (whatever the umask).
    """
    path = Path(path)
    # Write to a temporary file next to the destination so the rename is atomic.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            if isinstance(write, (bytes, bytearray, memoryview)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def move_durably(src: str | Path, dst: str | Path) -> Path:
    """Rename ``src`` to ``dst`` (same filesystem) and fsync both directories."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
    return dst
