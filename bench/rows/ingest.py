"""Rows 4 and 5, the ingest server landing batches, with its checkpoint counted.

Row 4: rows/s landed through the HTTP API by concurrent uploaders sending 10,000-row
batches, next to DuckDB's own ``INSERT INTO … SELECT * FROM read_parquet(…)`` of the same
files in one process. Committed rows sit in the server's WAL until a checkpoint compresses
them into the table, and DuckDB's own INSERT pays for that inside its time, so the headline
counts both: the server's time includes its final checkpoint (the stop), the reference's a
``CHECKPOINT``. The timed-window figure (uploads only) is the second line; the third counts CPU
seconds instead (every thread of the server, or of DuckDB), which other work on a shared
machine moves less than it moves seconds.

Row 5: batches/s from 200 concurrent uploaders sending 1,000-row batches, landed in group
commits, next to the same server committing each batch in its own transaction
(``group_commit_max_batches = 1``); both with their final checkpoint counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, Goal, IngestServer, Row
from bench.profile import py_spy, sampled
from bench.records import parquet_bodies

NUMBERS = (4, 5)
TITLE = "ingest landing"
Bodies = list[tuple[str, bytes]]


async def upload_all(url: str, token: str, bodies: Bodies, concurrency: int) -> dict[str, float]:
    """Upload every batch with ``concurrency`` uploaders; 429s are retried after a short pause."""
    import aiohttp

    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    retries = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}

    async def uploader(session: aiohttp.ClientSession) -> None:
        nonlocal retries
        while not queue.empty():
            batch_id, body = queue.get_nowait()
            while True:
                async with session.put(f"{url}/v1/batches/{batch_id}", data=body, headers=headers) as response:
                    await response.read()
                    if response.status in (200, 201):
                        break
                    if response.status in (429, 503):
                        retries += 1
                        await asyncio.sleep(0.05)
                        continue
                    raise RuntimeError(f"upload failed with {response.status}: {await response.text()}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(uploader(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "retries_429": retries}


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds each live thread of ``pid`` has used so far, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    spent = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        spent[task.name] = (int(fields[11]) + int(fields[12])) / ticks
    return spent


def thread_names(pid: int) -> dict[str, str]:
    """Python's name for each thread id of ``pid`` (py-spy dump; empty without py-spy or ptrace rights)."""
    binary = py_spy()
    if binary is None:
        return {}
    try:
        dump = subprocess.run([binary, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {tid: name for tid, name in re.findall(r'^Thread (\d+) \(\w+\): "([^"]+)"', dump, re.MULTILINE)}


def thread_parts(before: dict[str, float], after: dict[str, float], names: dict[str, str]) -> dict[str, float]:
    """CPU seconds per part of the server between two ``thread_cpu_s`` snapshots: the writer, the checks, the rest."""
    parts = {"writer": 0.0, "upload checks": 0.0, "event loop": 0.0, "other threads": 0.0}
    for tid, spent in after.items():
        name = names.get(tid, "")
        part = ("writer" if name == "edgeloop-store-writer" else "upload checks" if name.startswith("edgeloop-ingest")
                else "event loop" if name == "MainThread" else "other threads")
        parts[part] += spent - before.get(tid, 0.0)
    return {part: round(spent, 3) for part, spent in parts.items()}


def children_cpu_s() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def http_run(bench: Bench, name: str, bodies: Bodies, *, concurrency: int, group: int, profile: bool = False) -> dict[str, Any]:
    """Land ``bodies`` through a fresh server; the first one alone, untimed, creates the tables."""
    server = IngestServer(
        bench, name,
        store=f"queue_depth = {max(256, concurrency + 8)}\ngroup_commit_max_batches = {group}\ngroup_commit_delay_s = 0.002\n",
        limits="max_body_bytes = 268435456\n",
    )
    try:
        (token,) = server.add_devices(["bench"])
        asyncio.run(upload_all(server.url, token, bodies[:1], 1))
        warm_batches, warm_rows = server.landed()
        cpu_at_start = process_cpu_s(server.proc.pid)
        threads_at_start = thread_cpu_s(server.proc.pid)
        with sampled(server.proc.pid, server.folder / "profile.txt") if profile else contextlib.nullcontext({}) as spent:
            result = asyncio.run(upload_all(server.url, token, bodies[1:], concurrency))
        threads = thread_parts(threads_at_start, thread_cpu_s(server.proc.pid), thread_names(server.proc.pid) if profile else {})
        landed_batches, landed_rows = server.landed()
    finally:
        reaped = children_cpu_s()
        stop_s = server.stop()  # includes the final checkpoint of the WAL
    # The server's CPU from the first timed upload to its exit (its whole life is counted once it is reaped).
    cpu_s = children_cpu_s() - reaped - cpu_at_start
    if landed_batches != len(bodies):
        raise RuntimeError(f"{landed_batches} of {len(bodies)} batches landed")
    batches, rows = landed_batches - warm_batches, landed_rows - warm_rows
    return {
        **result,
        "profile": spent,
        "thread_cpu_s": threads,  # over the uploads (the stop's checkpoint runs on the writer after them)
        "stop_s": stop_s,
        "cpu_s": cpu_s,
        "batches": batches,
        "rows": rows,
        "rows_per_s": rows / result["seconds"],
        "batches_per_s": batches / result["seconds"],
        "rows_per_s_with_checkpoint": rows / (result["seconds"] + stop_s),
        "batches_per_s_with_checkpoint": batches / (result["seconds"] + stop_s),
        "rows_per_cpu_s": rows / cpu_s,
    }


def duckdb_alone(folder: Path, bodies: Bodies) -> dict[str, float]:
    """DuckDB alone: one INSERT … SELECT * FROM read_parquet over the same files, then a CHECKPOINT."""
    import duckdb

    files = []
    for batch_id, body in bodies:
        path = folder / f"{batch_id}.parquet"
        path.write_bytes(body)
        files.append(str(path))
    con = duckdb.connect(str(folder / "baseline.duckdb"))
    try:
        con.execute("CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 0", [files[:1]])
        cpu_at_start, started = self_cpu_s(), time.perf_counter()
        con.execute("INSERT INTO t SELECT * FROM read_parquet(?)", [files])
        inserted_s = time.perf_counter() - started
        con.execute("CHECKPOINT")
        total_s = time.perf_counter() - started
        cpu_s = self_cpu_s() - cpu_at_start
        rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    finally:
        con.close()
    return {"rows": rows, "rows_per_s": rows / inserted_s, "rows_per_s_with_checkpoint": rows / total_s, "cpu_s": cpu_s,
            "rows_per_cpu_s": rows / cpu_s}


_BODIES: dict[tuple[bool, int, int], Bodies] = {}


def bodies_for(bench: Bench, rows: int, count: int) -> Bodies:
    """Sealed vibration batches, made once per process: every run lands the same files."""
    key = (bench.quick, rows, count)
    if key not in _BODIES:
        _BODIES[key] = parquet_bodies(bench, "vibration", rows, count, seed=7)
    return _BODIES[key]


def measure(bench: Bench) -> list[Row]:
    large_count, large_uploaders = (9, 8) if bench.quick else (41, 16)
    small_count, small_uploaders = (201, 200) if bench.quick else (1_201, 200)
    large = bodies_for(bench, 10_000, large_count)
    small = bodies_for(bench, 1_000, small_count)
    http = http_run(bench, "ingest-large", large, concurrency=large_uploaders, group=32, profile=True)
    alone = duckdb_alone(bench.folder("duckdb-alone"), large[1:])  # the same files the HTTP run timed
    grouped = http_run(bench, "ingest-grouped", small, concurrency=small_uploaders, group=32, profile=True)
    single = http_run(bench, "ingest-single", small, concurrency=small_uploaders, group=1)
    bench.details.update(large=http, duckdb_alone=alone, grouped=grouped, single=single)
    large_note = f"{large_count - 1} batches, {large_uploaders} uploaders"
    small_note = f"{small_count - 1} batches, {small_uploaders} uploaders"
    return [
        Row(4, "ingest rows/s, 10,000-row batches, checkpoint counted", "/s", http["rows_per_s_with_checkpoint"],
            "DuckDB INSERT … read_parquet + CHECKPOINT", alone["rows_per_s_with_checkpoint"], goals=(Goal("ratio", ">=", 0.7),),
            note=large_note),
        Row(4, "ingest rows/s, 10,000-row batches, uploads only", "/s", http["rows_per_s"],
            "DuckDB INSERT … read_parquet", alone["rows_per_s"], note=f"{large_note}; the server's checkpoint left out"),
        Row(4, "ingest rows per CPU second, 10,000-row batches, checkpoint counted", "/CPU s", http["rows_per_cpu_s"],
            "DuckDB INSERT … read_parquet + CHECKPOINT", alone["rows_per_cpu_s"],
            note=f"{large_note}; every server thread, first timed upload to exit: moved less than seconds by other work"),
        Row(5, "fleet batches/s, 1,000-row batches, checkpoint counted", "/s", grouped["batches_per_s_with_checkpoint"],
            "one transaction per batch", single["batches_per_s_with_checkpoint"], goals=(Goal("ratio", ">=", 3),),
            note=small_note),
        Row(5, "fleet batches/s, 1,000-row batches, uploads only", "/s", grouped["batches_per_s"],
            "one transaction per batch", single["batches_per_s"], note=f"{small_note}; the checkpoints left out"),
    ]


def summarize(details: list[dict[str, Any]], out_dir: Path, machine: str) -> dict[str, Any]:
    """Where the server's busy time went in rows 4 and 5 (py-spy, the median share over the runs)."""
    import statistics

    lines = ["Where the ingest server's busy thread time goes (py-spy, median share over the runs):", ""]
    shares: dict[str, Any] = {}
    for key, title in (("large", "row 4, 10,000-row batches"), ("grouped", "row 5, 1,000-row batches in group commits")):
        profiles = [run[key]["profile"] for run in details if run.get(key, {}).get("profile", {}).get("parts")]
        if not profiles:
            reasons = [run[key]["profile"].get("unavailable") for run in details if run.get(key, {}).get("profile")]
            lines.append(f"{title}: no profile ({next(filter(None, reasons), 'not sampled')})")
            continue
        parts = sorted({part for profile in profiles for part in profile["parts"]})
        median = {part: statistics.median(profile["parts"].get(part, 0.0) for profile in profiles) for part in parts}
        shares[key] = median
        lines.append(f"{title}:")
        lines.extend(f"  {share:6.1%}  {part}" for part, share in sorted(median.items(), key=lambda item: -item[1]))
        measured = [run[key]["thread_cpu_s"] for run in details if run.get(key, {}).get("thread_cpu_s", {}).get("writer")]
        if measured:
            # py-spy counts a thread waiting for the GIL as busy; the threads' own CPU ticks do not.
            lines.append("  CPU seconds over the uploads, each thread's own ticks (median): " + ", ".join(
                f"{part} {statistics.median(run[part] for run in measured):.2f}" for part in measured[0]
            ) + f"; then the stop, its checkpoint on the writer, {statistics.median(run[key]['stop_s'] for run in details if key in run):.2f} s")
    return {"text": "\n".join(lines), "shares": shares}
