"""Crash safety: a server killed with SIGKILL mid-upload loses nothing and duplicates nothing."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from edgeloop.ingest.admin import LocalAdmin
from tests.ingest.conftest import cli, free_port, make_table, put_batch, seal, spawn_server, write_config

BATCHES = 48
ROWS = 1500


def test_sigkill_mid_upload_then_retry_lands_each_batch_once(tmp_path, vibration):
    """After SIGKILL with many uploads in flight and a restart, retrying every upload lands each batch exactly once."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    batches = [seal(tmp_path / "spool", vibration, make_table(vibration, predictions=ROWS)[0]) for _ in range(BATCHES)]
    server = spawn_server(config, tmp_path / "server.log")
    landed = threading.Event()
    results: list[int | None] = []

    def upload(item: tuple[str, bytes]) -> None:
        status = put_batch(port, *item, token)
        results.append(status)
        if status == 201 and len([r for r in results if r == 201]) >= 3:
            landed.set()

    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(upload, item) for item in batches]
        assert landed.wait(30), f"nothing landed: {results}"
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        for future in futures:
            future.result()
    assert None in results, "the kill came too late: no upload was in flight"
    server = spawn_server(config, tmp_path / "server2.log")
    try:
        statuses = [put_batch(port, batch_id, body, token) for batch_id, body in batches]
        assert set(statuses) <= {200, 201}, statuses
        assert 200 in statuses and 201 in statuses
        again = [put_batch(port, batch_id, body, token) for batch_id, body in batches[:5]]
        assert again == [200] * 5
    finally:
        server.terminate()
        server.wait(20)
    admin = LocalAdmin(tmp_path / "ingest.duckdb", read_only=True)
    try:
        ledger = admin.query("SELECT count(*) AS n, count(DISTINCT batch_id) AS ids, sum(rows)::BIGINT AS rows FROM batches")
        assert ledger.to_pylist() == [{"n": BATCHES, "ids": BATCHES, "rows": BATCHES * ROWS}]
        table = admin.query("SELECT count(*) AS n, count(DISTINCT record_id) AS ids, count(DISTINCT batch_id) AS batches FROM vibration")
        assert table.to_pylist() == [{"n": BATCHES * ROWS, "ids": BATCHES * ROWS, "batches": BATCHES}]
    finally:
        admin.close()
