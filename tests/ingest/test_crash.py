"""Crash safety: a server killed with SIGKILL mid-upload loses nothing and duplicates nothing."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from edgeloop.ingest.admin import LocalAdmin
from tests.ingest.conftest import BASE_TIME, cli, free_port, make_table, put_batch, seal, spawn_server, write_config

BATCHES = 48
ROWS = 1500


def _kill_once_landed(server, batches: list[tuple[str, bytes]], upload, *, landed: int, workers: int) -> None:
    """Upload ``batches`` from ``workers`` threads (``upload`` returns the status) and SIGKILL the server once
    ``landed`` of them have had their 201, the rest still in flight; returns when every upload has ended."""
    created = 0
    enough = threading.Event()
    lock = threading.Lock()

    def counted(item: tuple[str, bytes]) -> None:
        nonlocal created
        status = upload(item)
        with lock:
            created += status == 201
            if created >= landed:
                enough.set()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(counted, item) for item in batches]
        assert enough.wait(30), "nothing landed"
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        for future in futures:
            future.result()


def test_sigkill_mid_upload_then_retry_lands_each_batch_once(tmp_path, vibration):
    """After SIGKILL with many uploads in flight and a restart, retrying every upload lands each batch exactly once."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    batches = [seal(tmp_path / "spool", vibration, make_table(vibration, predictions=ROWS)[0]) for _ in range(BATCHES)]
    server = spawn_server(config, tmp_path / "server.log")
    results: list[int | None] = []

    def upload(item: tuple[str, bytes]) -> int | None:
        status = put_batch(port, *item, token)
        results.append(status)
        return status

    _kill_once_landed(server, batches, upload, landed=3, workers=24)
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


def _put(port: int, batch_id: str, body: bytes, token: str) -> tuple[int | None, dict]:
    """PUT a batch; (status, receipt), or (None, {}) if the connection died."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batches/{batch_id}", data=body, method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return None, {}


def test_sigkill_keeps_each_acknowledged_batch_with_its_receipt_time_and_feedback_sent_before_its_prediction(tmp_path, vibration):
    """Every batch answered 201 before a SIGKILL (group commits, feedback sent before its prediction) is stored once
    with the received_at of its receipt, its retry answers 200 with that same time, and the others land once."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    batches = []
    for index in range(BATCHES // 2):
        predictions, ids = make_table(vibration, predictions=ROWS)
        feedback, _ = make_table(vibration, feedback=[(record_id, "normal", BASE_TIME) for record_id in ids[:100]])
        # The feedback goes first: it lands before the prediction it labels.
        batches += [seal(tmp_path / f"f{index}", vibration, feedback), seal(tmp_path / f"p{index}", vibration, predictions)]
    server = spawn_server(config, tmp_path / "server.log")
    receipts: dict[str, tuple[int | None, dict]] = {}

    def upload(item: tuple[str, bytes]) -> int | None:
        receipts[item[0]] = _put(port, *item, token)
        return receipts[item[0]][0]

    _kill_once_landed(server, batches, upload, landed=6, workers=16)
    acknowledged = {batch_id: receipt["received_at"] for batch_id, (status, receipt) in receipts.items() if status == 201}
    assert len(acknowledged) < len(batches), "the kill came too late: every upload was answered"
    server = spawn_server(config, tmp_path / "server2.log")
    try:
        for batch_id, body in batches:
            status, receipt = _put(port, batch_id, body, token)
            if batch_id in acknowledged:
                assert (status, receipt["received_at"]) == (200, acknowledged[batch_id]), receipt
            else:
                assert status in (200, 201), receipt
    finally:
        server.terminate()
        server.wait(20)
    admin = LocalAdmin(tmp_path / "ingest.duckdb", read_only=True)
    try:
        stored = {row["batch_id"]: row["received_at"] for row in admin.query("SELECT batch_id, received_at FROM batches").to_pylist()}
        assert len(stored) == len(batches)
        for batch_id, received_at in acknowledged.items():
            assert stored[batch_id] == datetime.fromisoformat(received_at), batch_id
        counts = admin.query(
            "SELECT (SELECT count(*) FROM vibration) AS p, (SELECT count(DISTINCT record_id) FROM vibration) AS pi, "
            "(SELECT count(*) FROM vibration_feedback) AS f, (SELECT count(DISTINCT record_id) FROM vibration_feedback) AS fi, "
            "(SELECT count(*) FROM vibration_training WHERE feedback_id IS NOT NULL) AS labelled"
        ).to_pylist()
        half = BATCHES // 2
        assert counts == [{"p": half * ROWS, "pi": half * ROWS, "f": half * 100, "fi": half * 100, "labelled": half * 100}]
    finally:
        admin.close()
