"""The agent's memory footprint, bounded by design before pyarrow loads.

What made the agent's RSS depend on the machine rather than on its work:

- glibc gives each thread that allocates its own malloc arena, up to 8 per core, and an
  arena keeps its freed pages: more cores, more arenas, more resident memory that is free.
  The agent caps them (``agent.malloc_arenas``).
- glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
  large blocks (request bodies, Arrow buffers) come from the heap and stay there, fragmented,
  after they are freed. The agent fixes the threshold at 128 KiB: a large block is mapped on
  its own and goes back to the OS when freed.
- Arrow sizes its CPU and I/O thread pools by the core count; the agent's Arrow work (IPC
  frames, one Parquet writer) runs in its own single seal thread, so both pools get one thread.
- Loading Arrow's libraries runs their static initializers, which fault in (and the kernel's
  fault-around maps) some 60 MB of their code, most of it never run again: RSS counted it for
  the agent's life. Once serving, the agent drops those pages from its page tables
  (``madvise(MADV_DONTNEED)`` on read-only file mappings that hold no private copy); what it
  runs again faults back from the page cache, so RSS then shows the
  code the agent actually uses (Android compacts idle apps' file pages the same way).
- What "faults back" costs depended on the machine: a fault maps the whole page-cache folio
  the page sits in, and the kernel fills the cache in folios as large as the block device's
  read-ahead (``read_ahead_kb``: 8 MiB on this machine's virtual disk, 128 KiB on an SD
  card) on kernels with large folios for the filesystem (ext4 since 6.16). One
  ``pc.unique`` faulted 10 MB of libarrow back on this machine. So the agent also marks
  the mappings ``MADV_RANDOM`` (no read-around: a fault reads the page it needs) and drops
  their files' pages no process maps from the page cache (``POSIX_FADV_DONTNEED``): the
  code it runs again comes back page by page, whatever the kernel and disk; 28 → 13 MB for
  Arrow's three libraries in row 2's steady state. The price: code run for the first time
  later (the first seal, the first sync) is read from disk a page per fault, not in
  read-ahead chunks; other processes mapping the same files keep their pages.
- pyarrow loads numpy if it is installed (about 16 MB), and pyarrow.fs loads the S3, GCS,
  Azure and HDFS filesystems it can find (about 8 MB), and cloudpickle for its pickling (0.7 MB);
  the agent uses none of them, so it keeps them out of its process whether or not the
  environment has them.
- Python modules are private memory for the process's life. What only some work needs is
  imported at that work: ``pyarrow.compute`` (4 MB) at the first record or computed privacy
  rule, never by an idle agent; ``pyarrow.dataset`` and Acero (3 MB) not at all (Parquet
  files are read with ``ParquetFile``, which needs neither).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import sys

__all__ = [
    "UNUSED_MODULES",
    "bound_allocator",
    "bound_arrow",
    "keep_out_unused_modules",
    "release_startup_code",
    "trim_heap",
]

# Imported by pyarrow when present, never used by the agent.
UNUSED_MODULES = ("numpy", "pandas", "cloudpickle", "pyarrow._s3fs", "pyarrow._gcsfs", "pyarrow._azurefs", "pyarrow._hdfs")
_M_ARENA_MAX = -8  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
_MADV_RANDOM = 1
_MADV_DONTNEED = 4
MMAP_THRESHOLD_BYTES = 128 * 1024


def keep_out_unused_modules() -> None:
    """Make ``import`` of the unused modules fail in this process, so pyarrow skips them; before pyarrow loads."""
    if "pyarrow" in sys.modules:
        raise RuntimeError("keep_out_unused_modules() must run before pyarrow is imported")
    for name in UNUSED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None in sys.modules: ImportError on import


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None or "libc.so" not in name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def bound_allocator(malloc_arenas: int) -> bool:
    """Cap glibc's malloc arenas (whatever the core count) and fix its mmap threshold; False where glibc is not the C library."""
    libc = _libc()
    try:
        return libc is not None and bool(
            libc.mallopt(_M_ARENA_MAX, malloc_arenas) and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        )
    except AttributeError:  # musl and others have no mallopt
        return False


def trim_heap() -> None:
    """Free cyclic garbage, then hand the heap's free pages back to the OS (glibc's malloc_trim); after a seal.

    The agent collects its youngest generation only every 50,000 allocations and its oldest
    almost never, so request objects that lived through two collections (a request in
    flight) and died in a cycle piled up in the oldest one for the agent's life (private
    memory 64 MB at a million records with a collection per seal, 88 MB without). A full
    collection per seal bounds them by what one seal's worth of requests leaves behind.
    """
    gc.collect()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def bound_arrow() -> None:
    """Arrow on the system allocator (freed memory goes back through malloc) with one CPU and one I/O thread."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def release_startup_code(smaps: str = "/proc/self/smaps") -> int:
    """Drop this process's resident library code pages (they fault back, page by page, when run); returns the bytes released.

    Only read-only file mappings (code, constants) with no anonymous (copied-on-write) page
    are touched, so relocated data is kept: dropping a page loses nothing the file does not hold.
    """
    libc = _libc()
    if libc is None:
        return 0
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    files: set[str] = set()
    for start, end, rss_kib, path in _clean_code_mappings(smaps):
        madvise(start, end - start, _MADV_RANDOM)  # a later fault reads its own page, not the device's read-ahead
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += rss_kib * 1024
            files.add(path)
    for path in files:
        _drop_cached_pages(path)
    return released


def _drop_cached_pages(path: str) -> None:
    """Evict the file's pages no process maps from the page cache, so a fault maps a page, not a large folio."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass  # only a cache hint
    finally:
        os.close(fd)


def _clean_code_mappings(smaps: str) -> list[tuple[int, int, int, str]]:
    """(start, end, Rss KiB, path) of each resident read-only file mapping whose pages are all the file's own."""
    mappings: list[tuple[int, int, dict[str, str]]] = []
    try:
        with open(smaps) as handle:
            for line in handle:
                head, _, rest = line.partition(" ")
                if head.endswith(":"):  # "Rss:   1234 kB" and the like, about the mapping above
                    if mappings:
                        mappings[-1][2][head[:-1]] = rest.split()[0] if rest.split() else ""
                    continue
                fields = rest.split()  # perms offset dev inode [path]
                low, high = head.split("-")
                path = fields[4] if len(fields) >= 5 else ""
                mappings.append((int(low, 16), int(high, 16), {"perms": fields[0], "path": path}))
    except OSError:
        return []
    return [
        (start, end, int(info["Rss"]), info["path"])
        for start, end, info in mappings
        if info["perms"] in ("r-xp", "r--p") and info["path"].startswith("/") and info.get("Anonymous") == "0"
        and int(info.get("Rss", "0")) > 0
    ]
