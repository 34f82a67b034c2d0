"""The agent's memory footprint, bounded by design before pyarrow loads.

What made the agent's RSS depend on the machine rather than on its work:

- glibc gives each thread that allocates its own malloc arena, up to 8 per core, and an
  arena keeps its freed pages: more cores, more arenas, more resident memory that is free.
  The agent caps them (``agent.malloc_arenas``).
- pyarrow loads numpy if it is installed (about 16 MB), and pyarrow.fs loads the S3, GCS,
  Azure and HDFS filesystems it can find (about 8 MB); the agent uses none of them, so it
  keeps them out of its process whether or not the environment has them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["UNUSED_MODULES", "bound_allocator", "keep_out_unused_modules"]

# Imported by pyarrow when present, never used by the agent.
UNUSED_MODULES = ("numpy", "pandas", "pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs")
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def keep_out_unused_modules() -> None:
    """Make ``import`` of the unused modules fail in this process, so pyarrow skips them; before pyarrow loads."""
    if "pyarrow" in sys.modules:
        raise RuntimeError("keep_out_unused_modules() must run before pyarrow is imported")
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None in sys.modules: ImportError on import


def bound_allocator(malloc_arenas: int) -> bool:
    """Cap glibc's malloc arenas (whatever the core count); False where glibc is not the C library."""
    name = ctypes.util.find_library("c")
    if name is None or "libc.so" not in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, malloc_arenas))
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
