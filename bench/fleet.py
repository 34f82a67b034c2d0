"""Fleet views at scale: the fleet queries against a naive full scan, on generated data.

    python -m bench.fleet [--devices 10000] [--rows 100000000] [--days 30] [--out DIR]

Generates, in a DuckDB file under ``--out`` (default: a temporary folder, removed after):
``--devices`` registered devices with their ``device_health`` rows (states spread over ok,
late, failing, silent, never seen), a status history of one report per device per day for
``--days`` days, ``landed_daily`` aggregates whose predictions add up to ``--rows``, and, for
the reference, a model table of ``--rows`` rows (device, version, received time) — what the
fleet view had to scan before the aggregates. Then times, each the median of 3 runs through
the same checked read-only path the CLI uses (the allow-list included):

    fleet_overview (every device), one page of it (50), fleet_summary, fleet --silent,
    device_detail, versions   vs   the naive queries over the model table

and prints each in ms with the ratio to the naive query it replaces. One repetition: run it
on a quiet machine for figures to quote.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeloop.ingest.admin import LocalAdmin
from edgeloop.ingest.config import FleetSettings
from edgeloop.ingest.connection import connect
from edgeloop.ingest.fleet import device_detail, fleet_overview, fleet_summary, versions

__all__ = ["generate", "main", "measure"]

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
VERSIONS = ("2.0.0", "2.1.0", "2.2.0")
TARGET_S = 1.0  # issue 12: every page and endpoint answers in under 1 s


def generate(path: Path, *, devices: int, rows: int, days: int) -> dict[str, Any]:
    """Write the generated fleet into a new database at ``path``; what was made, and how long it took."""
    started = time.perf_counter()
    con = connect(path, read_only=False)
    now = NOW.isoformat()
    con.execute(
        "INSERT INTO devices SELECT printf('dev-%05d', i), sha256(i::VARCHAR), ?::TIMESTAMPTZ - INTERVAL 90 DAY, "
        "CASE WHEN i % 500 = 0 THEN ?::TIMESTAMPTZ - INTERVAL 2 DAY END FROM range(?) AS t(i)",
        [now, now, devices],
    )
    # Seen last: most within the day; 1 in 50 late (1-3 days), 1 in 100 silent (a week), 1 in 200 never.
    con.execute(
        f"""
        INSERT INTO device_health (device, first_seen_at, last_seen_at, statuses, last_status_at, last_status_sent_at,
            last_status_id, agent_version, window_s, last_outcome, last_error, last_sync_at, last_success_at,
            failures_in_a_row, backlog_batches, backlog_records, backlog_bytes, oldest_record_age_s, free_disk_bytes,
            disk_full, clock_offset_s, clock_synchronized, dropped, last_upload_at, batches, rows, refused)
        SELECT printf('dev-%05d', i), ?::TIMESTAMPTZ - INTERVAL {days} DAY, seen, {days}, seen, seen,
               uuid()::VARCHAR, '0.1.0', 86400.0,
               CASE WHEN i % 37 = 0 THEN 'failed' ELSE 'ok' END,
               CASE WHEN i % 37 = 0 THEN 'ingest unreachable: connection refused' END,
               seen, seen, CASE WHEN i % 37 = 0 THEN 2 ELSE 0 END,
               i % 5, (i % 5) * 1000, (i % 5) * 65536, CASE WHEN i % 5 > 0 THEN 3600.0 END,
               40 * 1024 * 1024 * 1024::BIGINT, false, (i % 7) - 3.0, true, i % 100, seen, {days}, ?, i % 3
        FROM (SELECT i, ?::TIMESTAMPTZ - to_seconds(CASE WHEN i % 100 = 1 THEN 7 * 86400
                                                          WHEN i % 50 = 2 THEN 2 * 86400
                                                          ELSE (i * 7919) % 80000 END) AS seen
              FROM range(?) AS t(i) WHERE i % 200 <> 3)
        """,
        [now, rows // devices, now, devices],
    )
    con.execute(
        f"""
        INSERT INTO device_status
        SELECT uuid()::VARCHAR, printf('dev-%05d', i), sent, sent, 0.2, 'x', '0.1.0', 'ok', NULL, 86400.0, 1, 1000, 65536,
               60.0, 3, 40 * 1024 * 1024 * 1024::BIGINT, false, '{{}}'
        FROM (SELECT i, ?::TIMESTAMPTZ - to_days(d) AS sent FROM range(?) AS t(i), range({days}) AS s(d))
        """,
        [now, devices],
    )
    per_cell = max(1, rows // (devices * days))
    con.execute(
        f"""
        INSERT INTO landed_daily
        SELECT (?::TIMESTAMPTZ - to_days(d))::DATE, 'vibration', ['2.0.0', '2.1.0', '2.2.0'][1 + (i + d // 10) % 3],
               'server:' || (1 + d // 10), printf('dev-%05d', i), {per_cell}, {per_cell // 10}, ?::TIMESTAMPTZ - to_days(d), ?::TIMESTAMPTZ - to_days(d)
        FROM range(?) AS t(i), range({days}) AS s(d)
        """,
        [now, now, now, devices],
    )
    aggregates_s = time.perf_counter() - started
    # The reference: the rows themselves, which the fleet view used to scan (device, version, receive time).
    con.execute("CREATE TABLE vibration_rows (device VARCHAR, model_version VARCHAR, received_at TIMESTAMPTZ)")
    con.execute(
        "INSERT INTO vibration_rows SELECT printf('dev-%05d', i % ?), ['2.0.0', '2.1.0', '2.2.0'][1 + (i // 1000) % 3], "
        "?::TIMESTAMPTZ - to_seconds(i % (86400 * 30)) FROM range(?) AS t(i)",
        [devices, now, rows],
    )
    con.execute("CHECKPOINT")
    con.close()
    return {"devices": devices, "rows": rows, "days": days, "statuses": devices * days,
            "landed_daily": devices * days, "aggregates_s": aggregates_s, "total_s": time.perf_counter() - started}


def _timed(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, result


def measure(path: Path) -> list[dict[str, Any]]:
    """Each fleet query next to the naive query it replaces; ms and their ratio."""
    admin = LocalAdmin(path, read_only=True)
    settings = FleetSettings()
    naive_devices = (
        "SELECT d.name, max(r.received_at) AS last_seen, count(r.device) AS rows FROM devices AS d "
        "LEFT JOIN vibration_rows AS r ON r.device = d.name GROUP BY d.name ORDER BY d.name"
    )
    naive_versions = (
        "SELECT model_version, count(DISTINCT device) AS devices, count(*) AS predictions, min(received_at), "
        "max(received_at) FROM vibration_rows GROUP BY model_version"
    )
    naive_device = "SELECT model_version, count(*), max(received_at) FROM vibration_rows WHERE device = ? GROUP BY 1"
    cases = [
        ("fleet_overview, every device", lambda: fleet_overview(admin, NOW, settings), naive_devices, []),
        ("fleet_overview, a page of 50", lambda: fleet_overview(admin, NOW, settings, limit=50, offset=5000),
         naive_devices, []),
        ("fleet_summary (devices per state)", lambda: fleet_summary(admin, NOW, settings), naive_devices, []),
        ("fleet --silent", lambda: fleet_overview(admin, NOW, settings, states=["silent"]), naive_devices, []),
        ("device_detail", lambda: device_detail(admin, "dev-04242", NOW, settings), naive_device, ["dev-04242"]),
        ("versions (devices per model version)", lambda: versions(admin), naive_versions, []),
    ]
    results = []
    try:
        for name, fast, naive_sql, params in cases:
            fast_ms, answer = _timed(fast)
            naive_ms, _ = _timed(lambda sql=naive_sql, p=params: admin.query(sql, p))
            size = answer.num_rows if hasattr(answer, "num_rows") else len(answer) if answer is not None else 0
            results.append({"query": name, "ms": fast_ms, "naive_ms": naive_ms, "ratio": naive_ms / fast_ms,
                            "rows": size})
    finally:
        admin.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=100_000_000, help="rows landed (the naive query scans them)")
    parser.add_argument("--days", type=int, default=30, help="days of status history and daily aggregates")
    parser.add_argument("--out", type=Path, help="keep the database in this folder")
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="edgeloop-bench-fleet-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fleet.duckdb"
    path.unlink(missing_ok=True)
    try:
        made = generate(path, devices=args.devices, rows=args.rows, days=args.days)
        print(f"generated {made['devices']:,} devices, {made['statuses']:,} statuses, {made['landed_daily']:,} "
              f"daily aggregates standing in for {made['rows']:,} rows, and those rows for the naive scan "
              f"({made['total_s']:.0f} s)")
        print(f"{'query':40} {'ms':>9} {'naive ms':>10} {'naive/ours':>11} {'< 1 s':>6}")
        for row in measure(path):
            ok = "yes" if row["ms"] < TARGET_S * 1000 else "NO"
            print(f"{row['query']:40} {row['ms']:9.1f} {row['naive_ms']:10.1f} {row['ratio']:10.1f}x {ok:>6}")
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
