"""``./scripts/bench --only dashboard``: the dashboard's pages and JSON endpoints at fleet scale.

Not a row of the table (its figure is a latency against a budget, not a ratio to another
tool). Generates, directly in DuckDB, a fleet of ``--devices`` devices (10,000) that landed
``--rows`` rows (100 million) over ``--days`` days: the batch ledger (one batch per device
per day), the devices, and the tallies the writer keeps as rows land (label coverage, drops
per day, rows per day, each device's version and its changes, the health aggregates) as they
would stand after landing that many rows. The
model table itself gets only ``--scan-rows`` rows, for the naive reference: the same facts
computed by scanning the predictions, as a page would without the tallies. Then it starts
the real server on the file and times each page and endpoint once (the machine is shared),
printing milliseconds against the 1 s budget and the ratio to the naive scan.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb

from bench.harness import ROOT
from edgeloop.schemas import EXAMPLES_DIR

BUDGET_MS = 1000.0
BIN = Path(sys.executable).parent


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(config: Path, log: Path, url: str) -> subprocess.Popen:
    with open(log, "ab") as handle:
        process = subprocess.Popen([str(BIN / "edgeloop-ingest"), "serve", "--config", str(config)], stdout=handle,
                                   stderr=handle)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    process.wait()
    raise RuntimeError("the server did not start")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def generate(db_path: Path, *, devices: int, rows: int, days: int, scan_rows: int) -> dict[str, int]:
    """The fleet as the tables would hold it after landing ``rows`` rows; the model table gets ``scan_rows``."""
    con = duckdb.connect(str(db_path))
    try:
        fingerprint = con.execute("SELECT schema_fingerprint FROM models WHERE model = 'vibration'").fetchone()[0]
        per_batch = max(1, rows // (devices * days))
        start = f"TIMESTAMPTZ '{time.strftime('%Y-%m-%d', time.gmtime(time.time() - days * 86400))} 00:00:00+00'"
        con.execute("BEGIN TRANSACTION")
        con.execute(
            f"INSERT INTO devices SELECT printf('dev-%05d', i), sha256(printf('token-%d', i)), {start}, NULL FROM range({devices}) t(i)"
        )
        # One batch per device per day; a device's version moves from 2.0.3 to 2.1.0 on a day of its own, and a
        # tenth of the fleet never upgrades. Devices 0-49 have a clock hours off.
        con.execute(f"""
            INSERT INTO batches BY NAME
            SELECT printf('%08x-0000-4000-8000-%012x', d, day) AS batch_id, printf('dev-%05d', d) AS device,
                   'vibration' AS model, sha256(printf('%d/%d', d, day)) AS sha256, {per_batch} AS rows,
                   {per_batch} AS predictions, 0 AS feedback, {per_batch * 60} AS bytes,
                   '{fingerprint}' AS schema_fingerprint, '0.1.0' AS agent_version,
                   CASE WHEN d % 3 = 0 THEN '{{"sampled_out": ' || (d % 40) || ', "rate_capped": 3}}' ELSE '{{}}' END AS drops,
                   {start} + to_days(day::INT) + to_seconds(d % 7200) AS sealed_at,
                   {start} + to_days(day::INT) + to_seconds(d % 7200 + 30) AS sent_at,
                   {start} + to_days(day::INT) + to_seconds(d % 7200 + 31) AS received_at,
                   {start} + to_days(day::INT) + to_seconds(d % 7200 + 31) AS landed_at,
                   CASE WHEN d < 50 THEN 3600.0 + d ELSE 0.8 END AS clock_offset_s, 0 AS duplicates
            FROM range({devices}) a(d), range({days}) b(day)
        """)
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        version = f"CASE WHEN d % 10 = 0 OR day < (d % {days}) THEN '2.0.3' ELSE '2.1.0' END"
        if "label_coverage" in tables:
            con.execute(f"""
                INSERT INTO label_coverage
                SELECT 'vibration', v, count(*) * {per_batch}, count(*) * {per_batch} * 2.5, count(*) * {per_batch // 5},
                       count(*) * {per_batch // 5} * 2.5
                FROM (SELECT {version} AS v FROM range({devices}) a(d), range({days}) b(day)) GROUP BY v
            """)
        if "device_versions" in tables:
            # Every device starts on 2.0.3; all but a tenth move to 2.1.0 on a day of their own.
            con.execute(f"""
                INSERT INTO version_changes
                SELECT 'vibration', printf('dev-%05d', d), CAST({start} AS DATE), NULL, '2.0.3', {start} FROM range({devices}) a(d)
                UNION ALL
                SELECT 'vibration', printf('dev-%05d', d), CAST({start} + to_days((d % {days})::INT) AS DATE), '2.0.3', '2.1.0',
                       {start} + to_days((d % {days})::INT) FROM range({devices}) a(d) WHERE d % 10 <> 0
            """)
            con.execute(f"""
                INSERT INTO device_versions
                SELECT 'vibration', printf('dev-%05d', d), CASE WHEN d % 10 = 0 THEN '2.0.3' ELSE '2.1.0' END,
                       {start} + to_days((CASE WHEN d % 10 = 0 THEN 0 ELSE d % {days} END)::INT),
                       now() - to_seconds(d % 3600), now() - to_seconds(d % 3600) FROM range({devices}) a(d)
            """)
        if "drops_daily" in tables:
            con.execute(f"""
                INSERT INTO drops_daily SELECT CAST({start} + to_days(day::INT) AS DATE), 'vibration', reason, 1000 + day
                FROM range({days}) b(day), (VALUES ('sampled_out'), ('rate_capped'), ('spool_full')) r(reason)
            """)
        if "landed_daily" in tables:
            con.execute(f"""
                INSERT INTO landed_daily BY NAME
                SELECT CAST({start} + to_days(day::INT) AS DATE) AS day, 'vibration' AS model, {version} AS model_version,
                       printf('dev-%05d', d) AS device, {per_batch} AS predictions, 0 AS feedback,
                       {start} + to_days(day::INT) + to_seconds(d % 7200 + 31) AS first_at,
                       {start} + to_days(day::INT) + to_seconds(d % 7200 + 31) AS last_at
                FROM range({devices}) a(d), range({days}) b(day)
            """)
        if "device_health" in tables:
            # Devices 50-149 stopped reporting days ago; 150-199 fail to sync.
            con.execute(f"""
                INSERT INTO device_health BY NAME
                SELECT printf('dev-%05d', d) AS device, {start} AS first_seen_at,
                       CASE WHEN d BETWEEN 50 AND 149 THEN {start} + to_days(2) ELSE now() - to_seconds(d % 3600) END AS last_seen_at,
                       {days} AS statuses, now() - to_seconds(d % 3600) AS last_status_at, '0.1.0' AS agent_version,
                       86400.0 AS window_s, CASE WHEN d BETWEEN 150 AND 199 THEN 'failed' ELSE 'ok' END AS last_outcome,
                       CASE WHEN d BETWEEN 150 AND 199 THEN 'connection refused' END AS last_error,
                       d % 5 AS backlog_batches, (d % 5) * 1000 AS backlog_records, (d % 5) * 60000 AS backlog_bytes,
                       CASE WHEN d < 50 THEN 3600.0 + d ELSE 0.8 END AS clock_offset_s, 0 AS dropped,
                       {days} AS batches, {per_batch * days} AS rows, 0 AS refused
                FROM range({devices}) a(d)
            """)
        con.execute("COMMIT")
        # The naive reference's predictions: only the columns the panels' facts are computed from.
        con.execute(f"""
            INSERT INTO vibration BY NAME
            SELECT printf('dev-%05d', i % {devices}) AS device,
                   CASE WHEN i % 10 = 0 THEN '2.0.3' ELSE '2.1.0' END AS model_version,
                   {start} + to_seconds((i * {days} * 86400 // {max(scan_rows, 1)})::BIGINT) AS created_at,
                   {start} + to_seconds((i * {days} * 86400 // {max(scan_rows, 1)})::BIGINT + 3600) AS received_at,
                   2.5 AS sample_weight
            FROM range({scan_rows}) t(i)
        """)
        con.execute("CHECKPOINT")
        return {"devices": devices, "rows": per_batch * devices * days, "batches": devices * days, "scan_rows": scan_rows}
    finally:
        con.close()


NAIVE = {  # the same fact, scanning the predictions
    "rollout": "SELECT device, CAST(created_at AS DATE) AS day, arg_max(model_version, created_at) AS v FROM vibration GROUP BY ALL",
    "data": "SELECT CAST(received_at AS DATE) AS day, model_version, count(*) AS n, sum(sample_weight) AS w FROM vibration GROUP BY ALL",
    "fleet": "SELECT device, max(received_at) AS last_seen, count(*) AS n FROM vibration GROUP BY device",
    "device": "SELECT model_version, count(*), min(created_at), max(created_at) FROM vibration WHERE device = 'dev-00007' GROUP BY 1",
}


def _timed_get(url: str, token: str) -> tuple[float, int]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        size = len(response.read())
    return (time.perf_counter() - started) * 1000, size


def _timed_sql(url: str, token: str, sql: str) -> float:
    request = urllib.request.Request(
        f"{url}/v1/sql", data=json.dumps({"sql": sql}).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def run(out: Path, *, devices: int = 10_000, rows: int = 100_000_000, days: int = 30, scan_rows: int = 2_000_000) -> int:
    """Generate the fleet, serve it, time every page and endpoint; exit 1 if one is over budget."""
    with tempfile.TemporaryDirectory(prefix="edgeloop-dashboard-bench-", dir=out) as work:
        work_dir = Path(work)
        port = _free_port()
        config = work_dir / "ingest.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\nadmin_token_file = "{work_dir / "admin.token"}"\n'
            f'schemas_dir = "{EXAMPLES_DIR}"\nlog_json = true\n[store]\ndb_path = "{work_dir / "edgeloop.duckdb"}"\n'
        )
        url = f"http://127.0.0.1:{port}"
        _stop(_serve(config, work_dir / "server.log", url))  # creates the tables and registers the schemas
        started = time.perf_counter()
        shape = generate(work_dir / "edgeloop.duckdb", devices=devices, rows=rows, days=days, scan_rows=scan_rows)
        print(f"generated {shape['devices']:,} devices, {shape['batches']:,} batches standing for {shape['rows']:,} rows "
              f"(+ {shape['scan_rows']:,} prediction rows for the naive scan) in {time.perf_counter() - started:.0f} s",
              flush=True)
        server = _serve(config, work_dir / "server.log", url)
        try:
            viewer = (work_dir / "viewer.token").read_text().strip()
            admin = (work_dir / "admin.token").read_text().strip()
            endpoints = [
                ("GET /dashboard (overview page)", "/dashboard", "rollout"),
                ("GET /v1/dashboard/overview", "/v1/dashboard/overview", "rollout"),
                ("GET /v1/dashboard/rollout/vibration", "/v1/dashboard/rollout/vibration", "rollout"),
                ("GET /v1/dashboard/data", "/v1/dashboard/data", "data"),
                ("GET /v1/dashboard/fleet", "/v1/dashboard/fleet", "fleet"),
                ("GET /v1/dashboard/devices/dev-00007", "/v1/dashboard/devices/dev-00007", "device"),
                ("GET /dashboard/devices/dev-00007 (page)", "/dashboard/devices/dev-00007", "device"),
            ]
            naive = {name: _timed_sql(url, admin, sql) for name, sql in NAIVE.items()}
            print(f"\n{'page or endpoint':<42} {'ms':>8} {'budget':>8} {'naive scan ms':>14} {'naive / ours':>13}")
            over = 0
            for label, path, fact in endpoints:
                _timed_get(url + path, viewer)  # warm: DuckDB's caches, Python's imports
                ms, size = _timed_get(url + path, viewer)
                over += ms > BUDGET_MS
                print(f"{label:<42} {ms:>8.0f} {'ok' if ms <= BUDGET_MS else 'OVER':>8} {naive[fact]:>14.0f} "
                      f"{naive[fact] / ms:>12.1f}x", flush=True)
            print(f"\nnaive scans read {scan_rows:,} predictions, not {shape['rows']:,}: they grow with the rows "
                  f"(about {rows / max(scan_rows, 1):,.0f}x more at full size); the dashboard's reads do not.")
            return 1 if over else 0
        finally:
            _stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--scan-rows", type=int, default=2_000_000, help="prediction rows for the naive reference")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return run(args.out, devices=args.devices, rows=args.rows, days=args.days, scan_rows=args.scan_rows)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
