"""Row 10, the training export: ``edgeloop-ingest export`` next to DuckDB's own ``COPY`` of the same query.

The database is a real server's file (one batch uploaded through the API creates the model's
tables, its training view and its ``models`` row), grown in place to the row count by
doubling. Both sides then run as their own process on the stopped server's file: edgeloop's
CLI (allow-list check, streamed rows, our COPY wrapper, the footer metadata, the durable
rename) and a Python process running DuckDB's ``COPY (<the same SELECT>) TO`` alone. Each
figure is rows/s and the process's peak RSS, sampled every 50 ms.

Both sides write the same file: the same query with its UUID columns as text (what every
edgeloop export writes: Spark 4.0 refuses Parquet's 16-byte UUID type, readers that do not
map it give raw bytes), with the same COPY options (``copy_options``: zstd, DuckDB's default row
group size). The extra Parquet row, without a goal, is DuckDB's COPY writing native 16-byte
UUIDs: what the text costs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, Goal, IngestServer, ProcessWatch, Row, console_script
from bench.records import parquet_bodies

NUMBERS = (10,)
TITLE = "training export"
MODEL = "vibration"
SPEED = (Goal("ratio", ">=", 0.8),)
MEMORY = (Goal("ratio", "<=", 1.5),)

REFERENCE = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
con.execute(sys.argv[2])
"""


def build(bench: Bench, rows: int) -> Path:
    """A real server's database with ``rows`` predictions of the model (grown by doubling)."""
    import duckdb

    with IngestServer(bench, "export-db") as server:
        (token,) = server.add_devices(["bench"])
        import asyncio

        from bench.rows.ingest import upload_all

        asyncio.run(upload_all(server.url, token, parquet_bodies(bench, MODEL, 1_000, 1, seed=8), 1))
        db = server.folder / "edgeloop.duckdb"
    con = duckdb.connect(str(db))
    try:
        while (have := con.execute(f"SELECT count(*) FROM {MODEL}").fetchone()[0]) < rows:
            take = min(have, rows - have)
            con.execute(
                f"INSERT INTO {MODEL} SELECT * REPLACE (uuid() AS record_id, "
                f"created_at + INTERVAL (1 + {have}) SECOND AS created_at) FROM {MODEL} LIMIT {take}"
            )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return db


def same_query(db: Path, sql: str) -> str:
    """The query as edgeloop's export runs it: UUID columns as text (and 128-bit integers as exported)."""
    import duckdb

    from edgeloop.ingest.export import exported_select

    con = duckdb.connect(str(db), read_only=True)
    try:
        return exported_select(con, sql, parquet=True)
    finally:
        con.close()


def timed(args: list[str]) -> dict[str, Any]:
    """Run a process to its end; its wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watch = ProcessWatch(proc.pid)
    _, stderr = proc.communicate(timeout=1800)
    seconds = time.perf_counter() - started
    watch.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {proc.returncode}: {stderr.decode(errors='replace')[-400:]}")
    return {"seconds": seconds, "peak_rss": watch.peak_rss}


def measure(bench: Bench) -> list[Row]:
    from edgeloop.ingest.export import copy_options, training_query

    rows = 20_000 if bench.quick else 2_000_000
    db = build(bench, rows)
    sql, _ = training_query(MODEL)
    text_sql = same_query(db, sql)
    out = bench.folder("export")
    result: list[Row] = []
    for fmt in ("csv", "parquet"):
        ours = timed([console_script("edgeloop-ingest"), "export", "--db", str(db), "--model", MODEL,
                      "--format", fmt, "--out", str(out / f"edgeloop.{fmt}")])
        copy = f"COPY ({text_sql}) TO '{out / f'duckdb.{fmt}'}' ({copy_options(fmt, None)})"  # type: ignore[arg-type]
        reference = timed([sys.executable, "-c", REFERENCE, str(db), copy])
        bench.details[f"export_{fmt}"] = {"rows": rows, "edgeloop": ours, "duckdb_copy": reference}
        label = fmt.upper() if fmt == "csv" else "Parquet"
        result += [
            Row(10, f"export rows/s, {rows:,} rows to {label}", "/s", rows / ours["seconds"],
                "DuckDB COPY, same query and file", rows / reference["seconds"], SPEED),
            Row(10, f"export peak RSS, {rows:,} rows to {label}", "MB", ours["peak_rss"] / 1e6,
                "DuckDB COPY, same query and file", reference["peak_rss"] / 1e6, MEMORY),
        ]
    native_copy = f"COPY ({sql}) TO '{out / 'duckdb-native-uuids.parquet'}' ({copy_options('parquet', None)})"
    native = timed([sys.executable, "-c", REFERENCE, str(db), native_copy])
    bench.details["export_parquet"]["duckdb_copy_native_uuids"] = native
    ours = bench.details["export_parquet"]["edgeloop"]
    result.append(Row(10, f"export rows/s, {rows:,} rows to Parquet, against 16-byte UUIDs", "/s",
                      rows / ours["seconds"], "DuckDB COPY, native UUIDs", rows / native["seconds"],
                      note="not the same file: what writing UUIDs as text costs"))
    return result
