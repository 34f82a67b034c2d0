"""What the page-header walk (``ingest/pages.py``) costs on a normal batch, against pyarrow's plain read of it.

``.venv/bin/python -m bench.pages_walk [--rows 10000] [--rounds 20]``: seals a vibration
batch of ``--rows`` simulated records with the agent's own spool, then times, on the same
bytes, the footer read plus the walk over every page header (what the server adds before
decoding) and ``pyarrow.parquet.read_table`` (the read it guards), and prints both medians and
their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import Bench
from bench.records import sealed_table, simulated
from edgeloop.collector.config import SpoolSettings
from edgeloop.collector.spool import Spool
from edgeloop.ingest.config import LimitSettings
from edgeloop.ingest.pages import scan_pages


def sealed_batch(rows: int, folder: Path) -> bytes:
    """A vibration batch of ``rows`` simulated records, through the agent's pipeline and sealed by its spool."""
    bench = Bench(quick=True, work=folder / "bench")
    table = sealed_table(bench, "vibration", simulated("vibration", rows, feedback_ratio=0.0))
    batch = Spool(folder / "spool", SpoolSettings(), agent_version="bench").write_batch(table, schema=bench.registry["vibration"])
    return batch.path.read_bytes()


def median_s(work, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        body = sealed_batch(args.rows, Path(folder))
    max_pages = LimitSettings().max_pages_per_batch

    def walk() -> None:
        scan_pages(body, pq.read_metadata(pa.BufferReader(body)), max_pages=max_pages)

    def read() -> None:
        pq.read_table(pa.BufferReader(body), use_threads=False)

    meta = pq.read_metadata(pa.BufferReader(body))
    pages = sum(column.pages for column in scan_pages(body, meta, max_pages=max_pages))
    walk_s, read_s = median_s(walk, args.rounds), median_s(read, args.rounds)
    print(f"batch: {args.rows:,} rows, {len(body):,} bytes, {meta.num_row_groups} row groups, {meta.num_columns} columns, {pages} pages")
    print(f"page-header walk (footer + every header): {walk_s * 1e3:8.2f} ms")
    print(f"pyarrow read_table (reference):           {read_s * 1e3:8.2f} ms")
    print(f"walk / read: {walk_s / read_s:.3f}")


if __name__ == "__main__":
    main()
