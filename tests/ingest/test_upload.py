"""The upload API against a real server on loopback: every status, idempotency, landing columns."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.ingest.app import HELD_CONNECTION_BYTES, STATE, STORE, line_length
from edgeloop.ingest.config import IngestConfig
from edgeloop.ingest.store import Store
from edgeloop.schemas import ModelSchema
from tests.ingest.conftest import make_table, seal


class SlowStore(Store):
    """Fault injection: every group commit takes at least 0.4 s."""

    def land_group(self, group):
        time.sleep(0.4)
        super().land_group(group)


class HeldStore(Store):
    """Fault injection: group commits wait until the test releases them."""

    release = threading.Event()

    def land_group(self, group):
        self.release.wait(60)
        super().land_group(group)


def _assert_error(body, code: str) -> None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


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
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 5}]
    assert await server.sql("SELECT count(*) AS n FROM batches") == [{"n": 1}]


async def test_same_id_other_content_is_409(server, tmp_path, vibration):
    """A batch id that already landed with other content is refused with 409."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    _, other = seal(tmp_path / "b", vibration, make_table(vibration, predictions=3)[0], batch_id=batch_id)
    assert (await server.put(batch_id, body, token))[0] == 201
    status, error, _ = await server.put(batch_id, other, token)
    assert status == 409
    _assert_error(error, "conflict")


async def test_concurrent_uploads_of_one_new_id_land_once(server, tmp_path, vibration):
    """Several simultaneous uploads of the same new batch land it once; the others get 200."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=50)[0])
    results = await asyncio.gather(*(server.put(batch_id, body, token) for _ in range(6)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 5 + [201]
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 50}]


async def test_bad_bodies_and_ids_are_400(server, tmp_path, vibration):
    """Garbage, a truncated Parquet file and a malformed batch id each get 400 with a specific code."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=20)[0])
    status, error, _ = await server.put(batch_id, b"this is not parquet at all", token)
    assert status == 400
    _assert_error(error, "not_parquet")
    status, error, _ = await server.put(batch_id, body[: len(body) // 2], token)
    assert status == 400
    _assert_error(error, "truncated_parquet")
    status, error, _ = await server.put("not-a-uuid", body, token)
    assert status == 400
    _assert_error(error, "bad_batch_id")
    status, error, _ = await server.put(batch_id, body, token, headers={"X-Edgeloop-Sent-At": "yesterday"})
    assert status == 400
    _assert_error(error, "bad_sent_at")


async def test_unknown_and_revoked_tokens_are_401(server, tmp_path, vibration):
    """An unknown token, a missing one and a just-revoked one all get 401."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    status, error, headers = await server.put(batch_id, body, "eld_not-a-real-token")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    _assert_error(error, "unauthorized")
    async with server.session.delete(
        f"{server.url}/v1/devices/pump-1", headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as response:
        assert response.status == 200
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 401
    _assert_error(error, "unauthorized")
    async with server.session.put(f"{server.url}/v1/batches/{batch_id}", data=body) as response:
        assert response.status == 401
    for name, status, code in (("pump-1", 400, "device_error"), ("nobody", 404, "unknown_device")):  # again; never was
        async with server.session.delete(
            f"{server.url}/v1/devices/{name}", headers={"Authorization": f"Bearer {server.admin_token}"}
        ) as response:
            assert response.status == status
            _assert_error(await response.json(), code)


async def test_wrong_content_type_is_415(server, tmp_path, vibration):
    """A body sent as anything but Parquet (or octet-stream) gets 415."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    status, error, _ = await server.put(batch_id, body, token, content_type="text/csv")
    assert status == 415
    _assert_error(error, "unsupported_media_type")
    status, _, _ = await server.put(batch_id, body, token, content_type="application/octet-stream")
    assert status == 201


async def test_body_over_the_compressed_limit_is_413(make_server, tmp_path, vibration):
    """A body larger than max_body_bytes is refused with 413 before it is read."""
    server = await make_server(limits={"max_body_bytes": 20_000})
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=800)[0])
    assert len(body) > 20_000
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 413
    _assert_error(error, "too_large")


def _bomb(schema: ModelSchema, rows: int, value_bytes: int, *, dictionary: bool) -> pa.Table:
    """A valid batch whose ``note`` column repeats one long string: tiny compressed, huge inflated."""
    table, _ = make_table(schema, predictions=1)
    columns = {}
    for field in schema.arrow_schema:
        if field.name == "note":
            values = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * value_bytes]))
            columns[field.name] = values if dictionary else values.cast(pa.string())
        else:
            columns[field.name] = pa.concat_arrays([table.column(field.name).combine_chunks()] * rows)
    return pa.table(columns)


def _seal_plain(schema: ModelSchema, table: pa.Table, batch_id: str) -> bytes:
    """Seal like the spool does but without dictionary encoding, so the footer shows the true size."""
    from edgeloop.schemas.envelope import BATCH_METADATA_KEYS

    table = table.replace_schema_metadata({
        BATCH_METADATA_KEYS["batch_id"]: batch_id.encode(),
        BATCH_METADATA_KEYS["model"]: schema.name.encode(),
        BATCH_METADATA_KEYS["schema_fingerprint"]: schema.fingerprint.encode(),
        BATCH_METADATA_KEYS["schema"]: schema.canonical_json().encode(),
    })
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=False)
    return sink.getvalue()


async def test_parquet_bombs_are_413_without_inflating(make_server, tmp_path, vibration):
    """Small zstd files that inflate past the limit are refused with 413, by footer or by dictionary arithmetic."""
    server = await make_server(limits={"max_decompressed_bytes": 4_000_000})
    token = await server.add_device("pump-1")
    batch_id = str(uuid.uuid4())
    plain = _seal_plain(vibration, _bomb(vibration, 8_000, 1_000, dictionary=False), batch_id)
    assert len(plain) < 200_000
    status, error, _ = await server.put(batch_id, plain, token)
    assert status == 413, error
    _assert_error(error, "too_large_decompressed")
    assert error["error"]["details"]["decompressed_bytes"] > 4_000_000  # caught from the footer
    # 100,000 copies of a 10 kB value: about 1 GB once inflated, under 100 kB on the wire.
    bomb_id, bomb = seal(tmp_path, vibration, _bomb(vibration, 100_000, 10_000, dictionary=True))
    assert len(bomb) < 500_000
    status, error, _ = await server.put(bomb_id, bomb, token)
    assert status == 413, error
    _assert_error(error, "too_large_decompressed")


async def test_wrong_schema_is_422_with_column_details(server, tmp_path, vibration):
    """A column of the wrong type, or a file without edgeloop metadata, gets 422 naming what is wrong."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=3)
    index = table.schema.get_field_index("rpm")
    table = table.set_column(index, pa.field("rpm", pa.string()), table.column("rpm").cast(pa.string()))
    batch_id, body = seal(tmp_path, vibration, table)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "schema_mismatch")
    assert error["error"]["details"] == [{"column": "rpm", "problem": "wrong type", "expected": "int32", "got": "string"}]
    sink = io.BytesIO()
    pq.write_table(pa.table({"x": [1, 2]}), sink)
    other_id = str(uuid.uuid4())
    status, error, _ = await server.put(other_id, sink.getvalue(), token)
    assert status == 422
    _assert_error(error, "missing_metadata")


async def test_rows_that_cannot_land_are_422(server, tmp_path, vibration):
    """An unknown kind, another model's rows or feedback without a prediction_id is refused with 422 bad_rows."""
    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=3, feedback=[(uuid.uuid4(), "ok", datetime.now(UTC))])
    kinds = pa.array(["prediction", "forecast", "prediction", "feedback"])
    table = table.set_column(table.schema.get_field_index("kind"), table.schema.field("kind"), kinds)
    models = pa.array(["vibration", "vibration", "other", "vibration"])
    table = table.set_column(table.schema.get_field_index("model"), table.schema.field("model"), models)
    nulls = pa.array([None] * 4, table.schema.field("prediction_id").type)
    table = table.set_column(table.schema.get_field_index("prediction_id"), table.schema.field("prediction_id"), nulls)
    batch_id, body = seal(tmp_path, vibration, table)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "bad_rows")
    assert [detail["column"] for detail in error["error"]["details"]] == ["kind", "model", "prediction_id"]
    assert "forecast" in error["error"]["details"][0]["problem"]
    assert await server.sql("SELECT count(*) AS n FROM batches") == [{"n": 0}]


async def test_queue_byte_limit_is_429_but_one_batch_always_fits(make_server, tmp_path, vibration):
    """Past queue_max_bytes of waiting batches uploads get 429; an empty queue still takes a batch larger than the limit."""
    server = await make_server(store_class=SlowStore, store={"queue_depth": 100, "queue_max_bytes": 1, "group_commit_max_batches": 1})
    token = await server.add_device("pump-1")
    bodies = [seal(tmp_path / str(i), vibration, make_table(vibration, predictions=2)[0]) for i in range(4)]
    results = await asyncio.gather(*(server.put(batch_id, body, token) for batch_id, body in bodies))
    statuses = sorted(status for status, _, _ in results)
    assert statuses[0] == 201 and 429 in statuses, statuses
    busy = next(result for result in results if result[0] == 429)
    _assert_error(busy[1], "busy")
    assert "bytes waiting" in busy[1]["error"]["message"]


async def test_full_queue_is_429_and_shutdown_is_503(make_server, tmp_path, vibration):
    """With a one-slot queue and a slow writer, extra uploads get 429; once draining, new ones get 503."""
    server = await make_server(store_class=SlowStore, store={"queue_depth": 1, "group_commit_max_batches": 1},
                               server={"admit_wait_s": 0})
    token = await server.add_device("pump-1")
    bodies = [seal(tmp_path / str(i), vibration, make_table(vibration, predictions=2)[0]) for i in range(6)]
    results = await asyncio.gather(*(server.put(batch_id, body, token) for batch_id, body in bodies[:5]))
    statuses = [status for status, _, _ in results]
    assert 201 in statuses and 429 in statuses, statuses
    busy = next(result for result in results if result[0] == 429)
    _assert_error(busy[1], "busy")
    assert busy[2]["Retry-After"] == str(server.config.server.retry_after_s)
    # Shutdown begins while an upload is landing: it finishes; a new one is refused with 503.
    store = server.app[STORE]
    while store.queued:
        await asyncio.sleep(0.01)
    batch_id, body = bodies[5]
    landing = asyncio.create_task(server.put(batch_id, body, token))
    while not store.queued:
        await asyncio.sleep(0.01)
    await server.app.shutdown()
    status, error, headers = await server.put(bodies[0][0], bodies[0][1], token)
    assert status == 503 and headers["Retry-After"]
    _assert_error(error, "shutting_down")
    assert (await landing)[0] == 201


async def test_a_burst_past_the_queue_waits_in_line_instead_of_429(make_server, tmp_path, vibration):
    """With a two-slot queue and a slow writer, four uploads at once all land: two wait for a slot, none is refused."""
    server = await make_server(store_class=SlowStore, store={"queue_depth": 2, "group_commit_max_batches": 1},
                               server={"admit_wait_s": 30.0})
    token = await server.add_device("pump-1")
    bodies = [seal(tmp_path / str(i), vibration, make_table(vibration, predictions=2)[0]) for i in range(4)]
    results = await asyncio.gather(*(server.put(batch_id, body, token) for batch_id, body in bodies))
    assert [status for status, _, _ in results] == [201] * 4
    assert await server.sql("SELECT count(*) AS n FROM batches") == [{"n": 4}]


async def _stuck_writer(make_server, tmp_path, vibration, *, uploads: int, **server_settings):
    """A one-slot queue whose writer holds its first upload until HeldStore.release: the server, token, bodies, first upload."""
    HeldStore.release.clear()
    server = await make_server(store_class=HeldStore, store={"queue_depth": 1, "group_commit_max_batches": 1},
                               server=server_settings)
    token = await server.add_device("pump-1")
    bodies = [seal(tmp_path / str(i), vibration, make_table(vibration, predictions=2)[0]) for i in range(uploads)]
    first = asyncio.create_task(server.put(*bodies[0], token))
    while not server.app[STORE].queued:
        await asyncio.sleep(0.01)
    return server, token, bodies, first


async def test_the_line_for_a_slot_holds_the_connections_the_queue_leaves_and_every_slot_comes_back(make_server, tmp_path, vibration):
    """A full queue and a full line (the connections the queue leaves but an eighth): one more upload gets 429 busy at once; those in line land once the writer moves; no slot leaks."""
    server, token, bodies, first = await _stuck_writer(  # a line of 10 - 1 - 10 // 8 = 8
        make_server, tmp_path, vibration, uploads=11, admit_wait_s=60.0, max_connections=10)
    state, store = server.app[STATE], server.app[STORE]
    assert line_length(server.config) == 8
    try:
        in_line = [asyncio.create_task(server.put(*body, token)) for body in bodies[1:9]]
        while len(state.waiters) < 8:
            await asyncio.sleep(0.01)
        status, error, headers = await server.put(*bodies[9], token)  # the line is full: refused at once
        assert status == 429 and headers["Retry-After"]
        _assert_error(error, "busy")
    finally:
        HeldStore.release.set()
    assert (await first)[0] == 201 and [(await upload)[0] for upload in in_line] == [201] * 8
    assert (await server.put(*bodies[10], token))[0] == 201
    assert state.admitting == 0 and not state.waiters and store.queued == 0


def test_the_default_line_holds_a_burst_of_a_thousand_devices():
    """With the default settings a burst of 1,000 uploads finding the queue full waits in line, none refused for want of a place."""
    config = IngestConfig()
    assert line_length(config) >= 1000
    # ... and the memory they hold at the row's 85 KB bodies (about 115 KiB each, measured) fits the line's budget.
    assert 1000 * (85_000 + HELD_CONNECTION_BYTES) <= config.server.line_max_bytes


async def test_the_line_refuses_an_upload_past_line_max_bytes(make_server, tmp_path, vibration):
    """With the writer stuck, uploads wait in line until what they hold in memory would pass server.line_max_bytes: the next gets 429 busy at once; those in line land; nothing stays counted."""
    body_bytes = 16 * 1024  # the test's bodies are smaller: two fit the budget whatever part of them was read, three never do
    server, token, bodies, first = await _stuck_writer(
        make_server, tmp_path, vibration, uploads=5, admit_wait_s=60.0, line_max_bytes=2 * (HELD_CONNECTION_BYTES + body_bytes))
    state = server.app[STATE]
    assert all(len(body) < body_bytes for _, body in bodies)
    try:
        in_line = [asyncio.create_task(server.put(*body, token)) for body in bodies[1:3]]
        while len(state.waiters) < 2:
            await asyncio.sleep(0.01)
        status, error, headers = await server.put(*bodies[3], token)  # the line has places left but no memory
        assert status == 429 and headers["Retry-After"]
        _assert_error(error, "busy")
        assert "server.line_max_bytes" in error["error"]["message"]
        async with server.session.get(f"{server.url}/metrics") as response:
            text = await response.text()
        assert "edgeloop_ingest_line_uploads 2.0" in text and f"edgeloop_ingest_line_bytes {float(state.line_bytes)}" in text
        assert state.line_bytes >= 2 * HELD_CONNECTION_BYTES
    finally:
        HeldStore.release.set()
    assert (await first)[0] == 201 and [(await upload)[0] for upload in in_line] == [201] * 2
    assert (await server.put(*bodies[4], token))[0] == 201
    assert state.line_bytes == 0 and not state.waiters


async def test_an_upload_waits_admit_wait_s_for_a_slot_then_gets_429(make_server, tmp_path, vibration):
    """With the writer stuck, an upload that finds the queue full waits admit_wait_s in line, then gets 429 busy with Retry-After."""
    server, token, bodies, first = await _stuck_writer(make_server, tmp_path, vibration, uploads=2, admit_wait_s=0.5)
    try:
        started = time.monotonic()
        status, error, headers = await server.put(*bodies[1], token)
        assert time.monotonic() - started >= 0.5  # it waited in line (a timer never fires early)
        assert status == 429 and headers["Retry-After"]
        _assert_error(error, "busy")
        assert not server.app[STATE].waiters
    finally:
        HeldStore.release.set()
    assert (await first)[0] == 201


async def test_clock_offset_and_landing_columns(server, tmp_path, vibration):
    """Landing adds device, batch_id, received_at and clock_offset_s = receive time − X-Edgeloop-Sent-At."""
    token = await server.add_device("pump-7")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    sent_at = datetime.now(UTC) - timedelta(seconds=30)
    status, receipt, _ = await server.put(batch_id, body, token, headers={"X-Edgeloop-Sent-At": sent_at.isoformat()})
    assert status == 201
    assert 29 < receipt["clock_offset_s"] < 40
    rows = await server.sql("SELECT DISTINCT device, batch_id, clock_offset_s FROM vibration")
    assert rows == [{"device": "pump-7", "batch_id": batch_id, "clock_offset_s": receipt["clock_offset_s"]}]
    other_id, other = seal(tmp_path / "b", vibration, make_table(vibration, predictions=1)[0])
    status, receipt, _ = await server.put(other_id, other, token)
    assert status == 201 and receipt["clock_offset_s"] is None


async def test_training_view_picks_latest_feedback(server, tmp_path, vibration):
    """The training view joins each prediction to its feedback with the latest created_at, whatever the arrival order."""
    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=3, weight=4.0)
    batch_id, body = seal(tmp_path, vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    base = datetime(2025, 6, 2, tzinfo=UTC)
    newer, _ = make_table(vibration, feedback=[(ids[0], "bearing_wear", base + timedelta(hours=2))])
    older, _ = make_table(vibration, feedback=[(ids[0], "ok", base), (ids[1], "imbalance", base)])
    for index, labels in enumerate([newer, older]):  # the newer label arrives first
        batch_id, body = seal(tmp_path / f"f{index}", vibration, labels)
        assert (await server.put(batch_id, body, token))[0] == 201
    rows = await server.sql(
        "SELECT record_id::VARCHAR AS id, true_class, sample_weight FROM vibration_training ORDER BY created_at"
    )
    assert rows == [
        {"id": str(ids[0]), "true_class": "bearing_wear", "sample_weight": 4.0},
        {"id": str(ids[1]), "true_class": "imbalance", "sample_weight": 4.0},
        {"id": str(ids[2]), "true_class": None, "sample_weight": 4.0},
    ]
    assert await server.sql("SELECT count(*) AS n FROM vibration_feedback") == [{"n": 3}]


async def test_a_label_dated_years_ahead_does_not_outrank_later_labels(server, tmp_path, vibration):
    """A feedback dated after its arrival counts as given when it arrived: a later label from a right clock replaces it."""
    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=1)
    batch_id, body = seal(tmp_path, vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    ahead, _ = make_table(vibration, feedback=[(ids[0], "ok", datetime.now(UTC) + timedelta(days=3650))])
    batch_id, body = seal(tmp_path / "ahead", vibration, ahead)
    assert (await server.put(batch_id, body, token))[0] == 201
    right, _ = make_table(vibration, feedback=[(ids[0], "bearing_wear", datetime.now(UTC))])
    batch_id, body = seal(tmp_path / "right", vibration, right)
    assert (await server.put(batch_id, body, token))[0] == 201
    assert await server.sql("SELECT true_class FROM vibration_training") == [{"true_class": "bearing_wear"}]


async def test_health_and_metrics(server, tmp_path, vibration):
    """/healthz answers ok and /metrics counts landed batches, rows, rejects and group commits."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=4)[0])
    assert (await server.put(batch_id, body, token))[0] == 201
    await server.put(batch_id, b"garbage", "eld_wrong")
    async with server.session.get(f"{server.url}/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    async with server.session.get(f"{server.url}/metrics") as response:
        text = await response.text()
    assert 'edgeloop_ingest_batches_landed_total{model="vibration"} 1.0' in text
    assert 'edgeloop_ingest_rows_landed_total{model="vibration"} 4.0' in text
    assert 'edgeloop_ingest_rejects_total{code="unauthorized"} 1.0' in text
    assert "edgeloop_ingest_queue_depth 0.0" in text
    assert "edgeloop_ingest_group_commit_batches_count 1.0" in text


async def test_every_error_has_one_shape(server, tmp_path, vibration):
    """Every error the server produces, aiohttp's own 404 and 405 included, has the one JSON shape."""
    token = await server.add_device("pump-1")
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    requests = [
        ("GET", "/nowhere", {}, None, 404),
        ("GET", f"/v1/batches/{batch_id}", {}, None, 405),
        ("PUT", f"/v1/batches/{batch_id}", {"Authorization": "Bearer nope"}, body, 401),
        ("PUT", "/v1/batches/x", {"Authorization": f"Bearer {token}"}, body, 400),
        ("PUT", f"/v1/batches/{batch_id}", {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}, body, 415),
        ("PUT", f"/v1/batches/{batch_id}", {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}, b"PAR1xxxxxxxxxxxxPAR1", 400),
        ("POST", "/v1/sql", {}, b"{}", 401),
        ("POST", "/v1/sql", admin, b"not json", 400),
        ("POST", "/v1/sql", admin, b'{"sql": "DROP TABLE batches"}', 403),
        ("POST", "/v1/sql", admin, b'{"sql": "SELECT * FROM no_such_table"}', 400),
        ("POST", "/v1/devices", admin, b'{"name": "pump-1"}', 400),
        ("DELETE", "/v1/devices/nobody", admin, None, 404),
    ]
    for method, path, headers, data, expected in requests:
        async with server.session.request(method, server.url + path, headers=headers, data=data) as response:
            payload = await response.json(content_type=None)
            assert response.status == expected, (path, payload)
            assert response.content_type == "application/json"
            assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message", "details"}, payload
            assert payload["error"]["code"] and payload["error"]["message"]


async def test_a_burst_past_the_queue_is_refused_before_its_bodies_are_decoded(make_server, tmp_path, vibration, monkeypatch):
    """Uploads past queue_depth get 429 without being decoded: a slot is held from reading the body until the writer queues it."""
    from edgeloop.ingest import app as ingest_app

    decoded = []
    real_read_batch = ingest_app.read_batch

    def counting_read_batch(*args, **kwargs):  # a spy: the real check runs, the call is counted
        decoded.append(1)
        return real_read_batch(*args, **kwargs)

    monkeypatch.setattr(ingest_app, "read_batch", counting_read_batch)
    server = await make_server(store_class=SlowStore, store={"queue_depth": 2, "group_commit_max_batches": 1},
                               server={"admit_wait_s": 0})
    token = await server.add_device("pump-1")
    bodies = [seal(tmp_path / str(i), vibration, make_table(vibration, predictions=2)[0]) for i in range(12)]
    results = await asyncio.gather(*(server.put(batch_id, body, token) for batch_id, body in bodies))
    statuses = [status for status, _, _ in results]
    assert statuses.count(201) >= 2 and 429 in statuses, statuses
    assert len(decoded) == statuses.count(201), (len(decoded), statuses)


# Microseconds since the epoch no reader of the table can hold: DuckDB's infinities, its last
# representable instant, year 10000, and one microsecond before year 1.
UNREADABLE_TIMES = [2**63 - 1, -(2**63) + 1, 2**63 - 2, 253402300800_000000, -62135596800_000001]


async def test_times_no_clock_reads_are_422_and_never_land(server, tmp_path, vibration):
    """created_at or a timestamp field at ±infinity or outside years 1-9999 is 422 bad_values naming the column; the next batch lands."""
    token = await server.add_device("pump-1")
    for n, micros in enumerate(UNREADABLE_TIMES):
        for column in ("created_at", "measured_at"):
            table, _ = make_table(vibration, predictions=2)
            index = table.schema.get_field_index(column)
            values = pa.array([micros, 0 if column == "measured_at" else 1_700_000_000_000_000], pa.int64())
            table = table.set_column(index, table.schema.field(index), values.cast(table.schema.field(index).type))
            batch_id, body = seal(tmp_path / f"{column}{n}", vibration, table)
            status, error, _ = await server.put(batch_id, body, token)
            assert status == 422, (column, micros, status, error)
            _assert_error(error, "bad_values")
            assert [detail["column"] for detail in error["error"]["details"]] == [column], error
    batch_id, body = seal(tmp_path / "good", vibration, make_table(vibration, predictions=2)[0])
    assert (await server.put(batch_id, body, token))[0] == 201
    edges = [-62135596800_000000, 253402300799_999999]  # the first and last instants a reader holds land
    table, _ = make_table(vibration, predictions=2)
    index = table.schema.get_field_index("created_at")
    table = table.set_column(index, table.schema.field(index), pa.array(edges, pa.int64()).cast(table.schema.field(index).type))
    batch_id, body = seal(tmp_path / "edges", vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    assert await server.sql("SELECT count(*) AS n, min(created_at)::VARCHAR AS first FROM vibration") == [
        {"n": 4, "first": "0001-01-01 00:00:00+00"}]


@pytest.mark.parametrize("sent_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_a_sent_at_no_clock_reads_is_400(server, tmp_path, vibration, sent_at):
    """An X-Edgeloop-Sent-At at the ends of the calendar (year 1, year 9999 in another zone) is 400 bad_sent_at, not a 500."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=1)[0])
    status, error, _ = await server.put(batch_id, body, token, headers={"X-Edgeloop-Sent-At": sent_at})
    assert status == 400, (status, error)
    _assert_error(error, "bad_sent_at")


async def test_a_leap_second_sent_at_and_sealed_at_are_times(server, tmp_path, vibration):
    """RFC 3339's leap second (23:59:60) in X-Edgeloop-Sent-At and the footer's sealed_at is read as :59.999999, not refused or lost."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=1)[0])
    parquet = pq.ParquetFile(io.BytesIO(body))
    metadata = {**parquet.metadata.metadata, b"edgeloop.sealed_at": b"2016-12-31T23:59:60.5Z"}
    out = io.BytesIO()
    pq.write_table(parquet.read().replace_schema_metadata(metadata), out, compression="zstd")
    status, receipt, _ = await server.put(batch_id, out.getvalue(), token, headers={"X-Edgeloop-Sent-At": "2017-01-01T05:44:60+05:45"})
    assert status == 201, receipt
    rows = await server.sql("SELECT strftime(sealed_at, '%Y-%m-%dT%H:%M:%S.%f') AS sealed, "
                            "strftime(sent_at, '%Y-%m-%dT%H:%M:%S.%f') AS sent FROM batches")
    assert rows == [{"sealed": "2016-12-31T23:59:59.999999", "sent": "2016-12-31T23:59:59.999999"}]


@pytest.mark.parametrize("sealed_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "not a time"])
async def test_a_sealed_at_no_reader_holds_lands_as_unknown(server, tmp_path, vibration, sealed_at):
    """A batch whose footer's sealed_at is outside years 1-9999 once in UTC lands with sealed_at NULL, and the ledger stays readable."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=1)[0])
    parquet = pq.ParquetFile(io.BytesIO(body))
    metadata = {**parquet.metadata.metadata, b"edgeloop.sealed_at": sealed_at.encode()}
    out = io.BytesIO()
    pq.write_table(parquet.read().replace_schema_metadata(metadata), out, compression="zstd")
    status, receipt, _ = await server.put(batch_id, out.getvalue(), token)
    assert status == 201, receipt
    assert await server.sql("SELECT sealed_at FROM batches") == [{"sealed_at": None}]
    async with server.session.get(f"{server.url}/v1/dashboard/devices/pump-1",
                                  headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
        assert response.status == 200, await response.text()
