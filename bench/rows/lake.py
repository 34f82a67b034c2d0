"""Row 13, lake: rows/s landed by 1, 2 and 3 replicas into one DuckLake against one DuckDB-backed server; files before and after compact; the catalog's commit rate.

The load is the scaling row's generator: every device PUTs its batches one after another,
all at once; here 200 devices with 1,000-row batches (``--quick``: 20 devices, 20 rows),
shared out among the replicas as a TCP load balancer would (device i → replica i mod N).
PostgreSQL is a throw-away cluster started for the row (``tests/postgres.py``). On a 2-core
machine every replica shares the same cores, so the curve shows the cost of the lake, not a
cluster's scaling: the catalog's commits/s (one DuckLake commit vs one plain PostgreSQL
commit, measured in the same run) is the figure that bounds a real cluster, with each commit
landing a group of batches.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, IngestServer, Row, Unavailable, console_script
from bench.records import parquet_bodies
from bench.rows.scaling import upload_all

NUMBERS = (13,)
TITLE = "lake"


def _cluster():
    try:
        from tests.postgres import PostgresCluster, postgres_bin
    except ImportError as exc:
        raise Unavailable(f"tests/postgres.py is not importable ({exc})") from None
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise Unavailable("no PostgreSQL binaries (Debian's postgresql package)")
    try:
        import edgeloop.ingest.lake  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"the lake extra is not installed ({exc})") from None
    return PostgresCluster(bin_dir)


def _store(catalog: str, data_path: Path) -> str:
    return f'backend = "ducklake"\ncatalog = {json.dumps(catalog)}\ndata_path = "{data_path}"\n'


def _replicas(bench: Bench, name: str, count: int, catalog: str, data_path: Path) -> list[IngestServer]:
    """``count`` replicas of one lake sharing one admin token; the first one creates the lake."""
    servers: list[IngestServer] = []
    try:
        for index in range(count):
            server = IngestServer(bench, f"{name}-{index}", store=_store(catalog, data_path), start=False)
            if servers:
                token_file = server.folder / "admin.token"
                token_file.write_text(servers[0].admin + "\n")
                token_file.chmod(0o600)
            server.start()
            servers.append(server)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _run_load(servers: list[IngestServer], tokens: list[str], bodies: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Every device's batches to its replica (device i → replica i mod N), all devices at once."""
    devices = len(tokens)
    plans = [[] for _ in servers]
    for device, token in enumerate(tokens):
        plans[device % len(servers)].append((token, bodies[device::devices]))

    async def everyone() -> list[dict[str, Any]]:
        return await asyncio.gather(*(upload_all(server.url, plan) for server, plan in zip(servers, plans)))

    started = time.perf_counter()
    found = asyncio.run(everyone())
    elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "uploads": sum(len(f["accepted_s"]) for f in found)}


def _wait_for_tokens(servers: list[IngestServer], tokens: list[str]) -> None:
    """Replicas re-read tokens every lake_refresh_s: wait until the last one is taken everywhere."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    for server in servers:
        while True:
            request = urllib.request.Request(
                f"{server.url}/v1/batches/00000000-0000-7000-8000-000000000000", data=b"x", method="PUT",
                headers={"Authorization": f"Bearer {tokens[-1]}", "Content-Type": "text/plain"},
            )
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 415:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.url} never took the new device tokens")
            time.sleep(0.1)


def _commit_rates(catalog: str, data_path: Path, seconds: float) -> tuple[float, float]:
    """(DuckLake commits/s, plain PostgreSQL commits/s) of one writer inserting one small row per commit."""
    import psycopg

    from edgeloop.ingest.config import StoreSettings
    from edgeloop.ingest.lake import connect_lake

    settings = StoreSettings(backend="ducklake", catalog=catalog, data_path=str(data_path))
    con = connect_lake(settings, read_only=False)
    try:
        con.execute("CREATE TABLE IF NOT EXISTS bench_commits (n BIGINT, stamped TIMESTAMPTZ)")
        lake_commits, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            con.execute("INSERT INTO bench_commits VALUES (?, now())", [lake_commits])
            lake_commits += 1
        lake_rate = lake_commits / (time.perf_counter() - started)
    finally:
        con.close()
    with psycopg.connect(catalog, autocommit=True) as pg:
        pg.execute("CREATE TABLE IF NOT EXISTS bench_commits (n bigint, stamped timestamptz)")
        pg_commits, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            pg.execute("INSERT INTO bench_commits VALUES (%s, now())", [pg_commits])
            pg_commits += 1
        pg_rate = pg_commits / (time.perf_counter() - started)
    return lake_rate, pg_rate


def _files(catalog: str, data_path: Path) -> int:
    from edgeloop.ingest.config import StoreSettings
    from edgeloop.ingest.lake import connect_lake, files_in_lake

    con = connect_lake(StoreSettings(backend="ducklake", catalog=catalog, data_path=str(data_path)), read_only=True)
    try:
        return files_in_lake(con)
    finally:
        con.close()


def measure(bench: Bench) -> list[Row]:
    import subprocess

    devices = 20 if bench.quick else 200
    rows_per_upload = 20 if bench.quick else 1000
    uploads = 40 if bench.quick else 600
    cluster = _cluster()
    figures: dict[str, Any] = {"devices": devices, "rows_per_upload": rows_per_upload, "uploads": uploads}
    try:
        # The reference: one DuckDB-backed server, the same load.
        duck = IngestServer(bench, "lake-duckdb")
        try:
            tokens = duck.add_devices([f"sim-{i:04d}" for i in range(devices)])
            bodies = parquet_bodies(bench, "vibration", rows_per_upload, uploads, seed=300)
            run = _run_load([duck], tokens, bodies)
            figures["duckdb"] = {**run, "rows_per_s": duck.rows_landed() / run["elapsed_s"]}
        finally:
            duck.stop()
        levels = (1, 2) if bench.quick else (1, 2, 3)  # --quick is the suite's smoke test: fewer server starts
        for count in levels:
            catalog = cluster.database()
            data_path = bench.folder(f"lake-data-{count}")
            servers = _replicas(bench, f"lake-{count}", count, catalog, data_path)
            try:
                tokens = servers[0].add_devices([f"sim-{i:04d}" for i in range(devices)])
                _wait_for_tokens(servers, tokens)
                bodies = parquet_bodies(bench, "vibration", rows_per_upload, uploads, seed=310 + count)
                run = _run_load(servers, tokens, bodies)
                batches, rows = servers[0].landed()
                figures[f"replicas_{count}"] = {**run, "rows_per_s": rows / run["elapsed_s"],
                                                "batches_per_s": batches / run["elapsed_s"]}
                if count == levels[-1]:
                    before = _files(catalog, data_path)
                    done = subprocess.run(
                        [console_script("edgeloop-ingest"), "compact", "--keep-s", "0", "--config", str(servers[0].config)],
                        capture_output=True, text=True, timeout=600,
                    )
                    if done.returncode != 0:
                        raise RuntimeError(f"edgeloop-ingest compact failed: {done.stderr[-500:]}")
                    figures["files"] = {"before": before, "after": _files(catalog, data_path)}
            finally:
                for server in servers:
                    server.stop()
        lake_rate, pg_rate = _commit_rates(cluster.database(), bench.folder("lake-commits"), 1.0 if bench.quick else 10.0)
        figures["commits_per_s"] = {"ducklake": lake_rate, "postgres": pg_rate}
    finally:
        cluster.stop()
    bench.details.update(figures)
    duck_rate = figures["duckdb"]["rows_per_s"]
    load = f"{devices} devices, {rows_per_upload:,}-row batches, {uploads} uploads; replicas share this machine's cores"
    rows = [
        Row(13, f"lake rows/s, {count} replica{'s' * (count > 1)}", "/s", figures[f"replicas_{count}"]["rows_per_s"],
            "one DuckDB-backed server", duck_rate, note=load)
        for count in levels
    ]
    most = levels[-1]
    rows.append(Row(13, f"lake batches/s, {most} replicas, {devices} devices", "/s", figures[f"replicas_{most}"]["batches_per_s"],
                    "one DuckDB-backed server", figures["duckdb"]["uploads"] / figures["duckdb"]["elapsed_s"], note=load))
    rows.append(Row(13, "files in the lake after compact", "files", figures["files"]["after"],
                    "before compact", figures["files"]["before"]))
    rows.append(Row(13, "catalog commits/s (one DuckLake commit, 1 row)", "/s", figures["commits_per_s"]["ducklake"],
                    "plain PostgreSQL INSERT commits/s", figures["commits_per_s"]["postgres"],
                    note="each landing commit carries a group of up to store.lake_group_commit_max_batches batches"))
    return rows
