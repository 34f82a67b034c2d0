"""Where a server's time goes during a row: py-spy samples its threads, folded into a few named parts.

Used by the rows whose targets are missed, so the README shows the profile next to the
miss. py-spy (in the bench extra) attaches by pid, which needs ptrace rights (root, or
``kernel.yama.ptrace_scope = 0``); without them the row says so and measures on.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# (part, a function in the sample's stack or its thread's name), tried in this order.
PARTS = (
    ("checking uploads (Parquet decode, bounds, schema)", "read_batch"),
    ("the writer: DuckDB INSERT and commit", "Store._insert"),
    ("the writer: receipts, landing columns, grouping", "Store.land_group"),
    ("the writer: waiting for the next group", "Store._run"),
    ("handing results to the event loop (call_soon_threadsafe)", "BaseEventLoop.call_soon_threadsafe"),
    ("HTTP and the event loop", "MainThread"),
)


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def sampled(pid: int, out: Path, rate_hz: int = 50) -> Iterator[dict[str, Any]]:
    """Sample ``pid`` while the block runs; the dict gets ``parts`` (share of busy samples) or ``unavailable``."""
    result: dict[str, Any] = {}
    binary = py_spy()
    if binary is None:
        result["unavailable"] = "py-spy is not installed (pip install 'edgeloop[bench]')"
        yield result
        return
    spy = subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--threads", "--nonblocking", "--format", "raw", "--rate", str(rate_hz), "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield result
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        try:
            _, err = spy.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if out.exists() and out.stat().st_size:
            result.update(fold(out.read_text()))
        else:
            result["unavailable"] = f"py-spy recorded nothing: {err.decode(errors='replace').strip()[-300:]}"


def fold(raw: str) -> dict[str, Any]:
    """Collapsed stacks ("thread;frame;frame count") → each part's share of the busy samples."""
    parts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        frames = stack.split(";")
        for part, marker in PARTS:
            if any(frame.startswith(f"{marker} ") for frame in frames[1:]) or marker in frames[0]:
                parts[part] += int(count)
                break
        else:
            parts["other"] += int(count)
    return {"samples": total, "parts": {part: n / total for part, n in parts.most_common()} if total else {}}
