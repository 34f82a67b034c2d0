"""The upload API against a real server: every status, idempotency, landing columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.ingest.conftest import make_table, seal


async def test_land_then_replay(server, tmp_path, vibration):
    """A new batch lands with 201 and the same upload again gets 200 with the original receipt."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=5)
    batch_id, body = seal(tmp_path, vibration, table)
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201, receipt
    assert receipt["rows"] == 5 and receipt["device"] == "pump-1" and receipt["status"] == "landed"
    status, again, _ = await server.put(batch_id, body, token)
    assert status == 200
    assert again["landed_at"] == receipt["landed_at"] and again["status"] == "already_landed"
    rows = await server.sql("SELECT count(*) AS n FROM vibration")
    assert rows == [{"n": 5}]
