#!/usr/bin/env python3
"""Benchmark the ingest service on loopback; prints two comparisons and exits.

(a) rows/s landed through the HTTP API by many concurrent uploaders sending large batches,
    next to DuckDB's own ``INSERT INTO ... SELECT * FROM read_parquet(...)`` of the same
    files in one process (target: ratio >= 0.7).
(b) batches/s landed from 200 concurrent uploaders sending 1,000-row batches with group
    commits, next to the same server committing each batch in its own transaction
    (group_commit_max_batches = 1) (target: ratio >= 3).

    .venv/bin/python scripts/bench_ingest.py [--quick] [--json]

Everything lives in a temporary folder and a server subprocess on 127.0.0.1; both go away at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import duckdb
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgeloop.collector.config import SpoolSettings  # noqa: E402
from edgeloop.collector.spool import Spool  # noqa: E402
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry  # noqa: E402

SCHEMA = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]
START = datetime(2025, 6, 1, tzinfo=UTC)


def _table(rows: int, rng: np.random.Generator) -> pa.Table:
    """Realistic vibration predictions, built column-wise (no per-row Python)."""
    created = pa.array([START + timedelta(milliseconds=int(i)) for i in range(0, rows)], pa.timestamp("us", tz="UTC"))
    ids = pa.array([uuid.uuid4().bytes for _ in range(rows)], pa.uuid())
    columns = {
        "record_id": ids,
        "kind": pa.array(["prediction"] * rows),
        "model": pa.array(["vibration"] * rows),
        "model_version": pa.array(rng.choice(["1.4.0", "1.5.0"], rows)),
        "created_at": created,
        "sample_weight": pa.array(np.full(rows, 1.0)),
        "prediction_id": pa.nulls(rows, pa.uuid()),
        "source": pa.nulls(rows, pa.string()),
        "temperature_c": pa.array(rng.normal(60, 5, rows).astype(np.float32)),
        "rpm": pa.array(rng.integers(900, 3000, rows, dtype=np.int32)),
        "spectrum": pa.FixedSizeListArray.from_arrays(pa.array(rng.random(rows * 16, dtype=np.float32)), 16),
        "operator_email": pa.array([f"{h:016x}" for h in rng.integers(0, 40, rows)]),
        "note": pa.array(rng.choice(["", "noisy bearing", "after maintenance"], rows)),
        "lat": pa.array(np.round(rng.uniform(47, 48, rows), 2)),
        "lon": pa.array(np.round(rng.uniform(8, 9, rows), 2)),
        "measured_at": created,
        "predicted_class": pa.array(rng.choice(["ok", "bearing_wear", "imbalance"], rows)),
        "confidence": pa.array(rng.random(rows, dtype=np.float32)),
        "anomaly_score": pa.array(rng.random(rows, dtype=np.float32)),
        "true_class": pa.nulls(rows, pa.string()),
        "repair_cost_eur": pa.nulls(rows, pa.float64()),
    }
    return pa.table(columns).cast(SCHEMA.arrow_schema)


def _make_batches(folder: Path, count: int, rows: int) -> list[tuple[str, Path]]:
    spool = Spool(folder, SpoolSettings(), agent_version="bench")
    rng = np.random.default_rng(7)
    template = _table(rows, rng)
    batches = []
    for _ in range(count):
        ids = pa.array([uuid.uuid4().bytes for _ in range(rows)], pa.uuid())
        table = template.set_column(0, template.schema.field(0), ids)
        batch = spool.write_batch(table, schema=SCHEMA)
        batches.append((batch.batch_id, batch.path))
    return batches


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``edgeloop-ingest serve`` in a subprocess with its own database; stopped on exit."""

    def __init__(self, folder: Path, *, group_commit_max_batches: int, queue_depth: int) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.port = _free_port()
        self.config = folder / "ingest.toml"
        self.config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nadmin_token_file = "{folder / "admin.token"}"\n'
            f'log_level = "warning"\n'
            f'[store]\ndb_path = "{folder / "ingest.duckdb"}"\nqueue_depth = {queue_depth}\n'
            f"group_commit_max_batches = {group_commit_max_batches}\ngroup_commit_delay_s = 0.002\n"
            f"[limits]\nmax_body_bytes = 268435456\n"
        )
        command = [sys.executable, "-m", "edgeloop.ingest.cli"]
        self.token = subprocess.run(
            [*command, "devices", "add", "bench", "--config", str(self.config)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        ).stdout.strip()
        self.log = open(folder / "server.log", "wb")
        self.process = subprocess.Popen([*command, "serve", "--config", str(self.config)], stdout=self.log, stderr=self.log, cwd=ROOT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench: server did not start, see {folder / 'server.log'}")
                time.sleep(0.1)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stop_s = time.perf_counter() - started  # includes the final checkpoint of the WAL
        self.log.close()


async def _upload_all(port: int, token: str, batches: list[tuple[str, bytes]], concurrency: int) -> dict[str, float]:
    """Upload every batch with ``concurrency`` uploaders; 429s are retried after a short pause."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)
    retries = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}

    async def uploader(session: aiohttp.ClientSession) -> None:
        nonlocal retries
        while True:
            try:
                batch_id, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            while True:
                async with session.put(f"http://127.0.0.1:{port}/v1/batches/{batch_id}", data=body, headers=headers) as response:
                    await response.read()
                    if response.status in (200, 201):
                        break
                    if response.status in (429, 503):
                        retries += 1
                        await asyncio.sleep(0.05)
                        continue
                    raise SystemExit(f"bench: upload failed with {response.status}: {await response.text()}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(uploader(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "retries_429": retries}


def _landed_rows(server: ServerProcess) -> tuple[int, int]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/v1/sql",
        data=json.dumps({"sql": "SELECT count(*)::BIGINT AS batches, coalesce(sum(rows), 0)::BIGINT AS rows FROM batches"}).encode(),
        headers={"Authorization": f"Bearer {(server.folder / 'admin.token').read_text().strip()}", "Accept": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        row = json.loads(response.read())["rows"][0]
    return row["batches"], row["rows"]


def _http_run(folder: Path, batches: list[tuple[str, Path]], *, concurrency: int, group: int) -> dict[str, float]:
    """Land ``batches`` through a fresh server; the first one alone, untimed, creates the tables."""
    bodies = [(batch_id, path.read_bytes()) for batch_id, path in batches]
    with ServerProcess(folder, group_commit_max_batches=group, queue_depth=max(256, concurrency + 8)) as server:
        asyncio.run(_upload_all(server.port, server.token, bodies[:1], 1))
        warm_batches, warm_rows = _landed_rows(server)
        result = asyncio.run(_upload_all(server.port, server.token, bodies[1:], concurrency))
        landed_batches, landed_rows = _landed_rows(server)
    if landed_batches != len(batches):
        raise SystemExit(f"bench: {landed_batches} of {len(batches)} batches landed")
    timed_batches, timed_rows = landed_batches - warm_batches, landed_rows - warm_rows
    result.update(batches=timed_batches, rows=timed_rows)
    result["rows_per_s"] = timed_rows / result["seconds"]
    result["batches_per_s"] = timed_batches / result["seconds"]
    # Committed rows sit in the WAL until a checkpoint compresses them; charge that work too.
    with_checkpoint_s = result["seconds"] + server.stop_s
    result["rows_per_s_incl_checkpoint"] = timed_rows / with_checkpoint_s
    result["batches_per_s_incl_checkpoint"] = timed_batches / with_checkpoint_s
    return result


def _duckdb_baseline(folder: Path, batches: list[tuple[str, Path]]) -> dict[str, float]:
    """DuckDB alone: one INSERT ... SELECT * FROM read_parquet over the same files, one process."""
    con = duckdb.connect(str(folder / "baseline.duckdb"))
    files = [str(path) for _, path in batches]
    con.execute("CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 0", [files[:1]])
    started = time.perf_counter()
    con.execute("INSERT INTO t SELECT * FROM read_parquet(?)", [files])
    elapsed = time.perf_counter() - started
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    return {"seconds": elapsed, "rows": rows, "rows_per_s": rows / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, well under 20 s")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    large_count, large_rows, large_uploaders = (9, 10_000, 8) if args.quick else (41, 10_000, 16)
    small_count, small_uploaders = (201, 200) if args.quick else (1_201, 200)

    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as tmp:
        folder = Path(tmp)
        large = _make_batches(folder / "large", large_count, large_rows)
        small = _make_batches(folder / "small", small_count, 1_000)
        http_large = _http_run(folder / "a-http", large, concurrency=large_uploaders, group=32)
        baseline = _duckdb_baseline(folder, large[1:])  # the same files the HTTP run timed
        grouped = _http_run(folder / "b-grouped", small, concurrency=small_uploaders, group=32)
        single = _http_run(folder / "b-single", small, concurrency=small_uploaders, group=1)

    results = {
        "quick": args.quick,
        "cores": os.cpu_count(),
        "large_batches": {
            "batches": large_count - 1, "rows_per_batch": large_rows, "uploaders": large_uploaders,
            "http_rows_per_s": round(http_large["rows_per_s"]),
            "duckdb_read_parquet_rows_per_s": round(baseline["rows_per_s"]),
            "ratio": round(http_large["rows_per_s"] / baseline["rows_per_s"], 2),
            "target": 0.7,
            "http_rows_per_s_incl_checkpoint": round(http_large["rows_per_s_incl_checkpoint"]),
            "ratio_incl_checkpoint": round(http_large["rows_per_s_incl_checkpoint"] / baseline["rows_per_s"], 2),
        },
        "group_commit": {
            "batches": small_count - 1, "rows_per_batch": 1_000, "uploaders": small_uploaders,
            "grouped_batches_per_s": round(grouped["batches_per_s"], 1),
            "one_txn_per_batch_batches_per_s": round(single["batches_per_s"], 1),
            "ratio": round(grouped["batches_per_s"] / single["batches_per_s"], 2),
            "target": 3.0,
            "ratio_incl_checkpoint": round(
                grouped["batches_per_s_incl_checkpoint"] / single["batches_per_s_incl_checkpoint"], 2
            ),
            "retries_429": {"grouped": grouped["retries_429"], "single": single["retries_429"]},
        },
    }
    if args.json:
        print(json.dumps(results))
        return 0
    a, b = results["large_batches"], results["group_commit"]
    print(f"edgeloop ingest bench ({'quick' if args.quick else 'full'}, {results['cores']} cores, loopback)")
    print(f"(a) {a['batches']} x {a['rows_per_batch']}-row batches, {a['uploaders']} uploaders")
    print(f"    HTTP API landing            {a['http_rows_per_s']:>12,} rows/s")
    print(f"    DuckDB read_parquet insert  {a['duckdb_read_parquet_rows_per_s']:>12,} rows/s")
    print(f"    ratio {a['ratio']:.2f}  (target >= {a['target']})  {'OK' if a['ratio'] >= a['target'] else 'BELOW TARGET'}")
    print(f"    counting the server's final checkpoint: {a['http_rows_per_s_incl_checkpoint']:,} rows/s, ratio {a['ratio_incl_checkpoint']:.2f}")
    print(f"(b) {b['batches']} x 1,000-row batches, {b['uploaders']} concurrent uploaders")
    print(f"    group commits               {b['grouped_batches_per_s']:>12,} batches/s")
    print(f"    one transaction per batch   {b['one_txn_per_batch_batches_per_s']:>12,} batches/s")
    print(f"    ratio {b['ratio']:.2f}  (target >= {b['target']})  {'OK' if b['ratio'] >= b['target'] else 'BELOW TARGET'}")
    print(f"    counting each server's final checkpoint: ratio {b['ratio_incl_checkpoint']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
