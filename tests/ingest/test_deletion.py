"""`edgeloop-ingest delete` and retention: counted first, deleted through the one writer, audited, gone from the file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from edgeloop.collector.privacy import Privacy
from edgeloop.ingest.app import STORE
from edgeloop.ingest.batch import read_batch
from edgeloop.ingest.deletion import Deletion, apply
from edgeloop.ingest.retention import Retention
from edgeloop.ingest.store import Landing, Store
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.ingest.conftest import (
    cli,
    free_port,
    land_and_stop,
    make_config,
    make_table,
    put_batch,
    seal,
    spawn_server,
    stop_server,
    write_config,
)


def _with(table: pa.Table, name: str, values: list) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def _insert(store: Store, target: str, rows: pa.Table, device: str | list[str] = "pump-1") -> None:
    """Put rows straight into a table on the writer (the landing path has its own tests)."""
    devices = device if isinstance(device, list) else [device] * rows.num_rows
    rows = rows.drop_columns(["kind", "model"]).append_column("device", pa.array(devices, pa.string()))

    def run(con) -> None:
        have = {row[0] for row in con.execute(f"DESCRIBE {target}").fetchall()}
        names = ", ".join(f'"{name}"' for name in rows.column_names if name in have)
        con.register("__test_rows", rows)
        try:
            con.execute(f"INSERT INTO {target} BY NAME SELECT {names} FROM __test_rows")
        finally:
            con.unregister("__test_rows")

    store.call(run).result()


def _file_holds(db, marker: str) -> bool:
    return any(path.exists() and marker.encode() in path.read_bytes() for path in (db, db.with_name(db.name + ".wal")))


def test_delete_device_dry_run_then_yes_removes_rows_audits_and_clears_the_file(tmp_path, vibration):
    """A device's deletion counts per table first, then removes its rows and the labels on them, leaves an audit row,
    and the deleted values can no longer be found in the database file; a replayed batch does not bring them back, and
    the device, not revoked (the output hints at it), lands what it sends later as new data."""
    port = free_port()
    config = write_config(tmp_path, port)
    token_1 = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    token_2 = cli("devices", "add", "pump-2", "--config", str(config)).stdout.strip()
    marker = f"MARKER-{uuid.uuid4().hex}"
    server = spawn_server(config, tmp_path / "server.log")
    try:
        doomed, doomed_ids = make_table(vibration, predictions=50)
        doomed = _with(doomed, "note", [f"{marker}-{i}" for i in range(50)])
        doomed_batch, doomed_body = seal(tmp_path / "a", vibration, doomed)
        assert put_batch(port, doomed_batch, doomed_body, token_1) == 201
        kept, kept_ids = make_table(vibration, predictions=30)
        batch_id, body = seal(tmp_path / "b", vibration, kept)
        assert put_batch(port, batch_id, body, token_2) == 201
        # pump-2 sends labels: one on a pump-1 prediction (goes with it), one on its own (stays).
        base = datetime(2025, 7, 1, tzinfo=UTC)
        labels, _ = make_table(vibration, feedback=[(doomed_ids[0], "bad", base), (kept_ids[0], "good", base)])
        batch_id, body = seal(tmp_path / "c", vibration, labels)
        assert put_batch(port, batch_id, body, token_2) == 201

        dry = cli("delete", "--device", "pump-1", "--config", str(config))
        assert "dry run: would delete 51 rows" in dry.stdout and "--yes" in dry.stdout
        assert "vibration " in dry.stdout and "50" in dry.stdout
        count = cli("sql", "SELECT count(*) AS n FROM vibration", "--format", "json", "--config", str(config)).stdout
        assert json.loads(count)["n"] == 80  # nothing deleted by a dry run

        done = cli("delete", "--device", "pump-1", "--yes", "--by", "dpo@example.com", "--config", str(config))
        assert "deleted 51 rows" in done.stdout and "recorded as deletion" in done.stdout
        assert "lands as new data" in done.stdout and "devices revoke pump-1" in done.stdout  # no revocation
        rows = cli("sql", "SELECT device, count(*) AS n FROM vibration GROUP BY 1", "--format", "json",
                   "--config", str(config)).stdout
        assert [json.loads(line) for line in rows.splitlines()] == [{"device": "pump-2", "n": 30}]
        audit = json.loads(cli("sql", "SELECT * FROM deletions", "--format", "json", "--config", str(config)).stdout)
        assert audit["deleted_by"] == "dpo@example.com" and audit["reason"] == "manual" and audit["rows"] == 51
        assert {t: n for t, n in json.loads(audit["tables"]).items() if n} == {"vibration": 50, "vibration_feedback": 1}
        assert "pump-1" in audit["predicate"]
        # The device's sync retries the batch (its ack was lost): the ledger answers it, nothing lands again.
        assert put_batch(port, doomed_batch, doomed_body, token_1) == 200
        training = cli("sql", "SELECT count(*) AS n, count(feedback_id) AS labelled FROM vibration_training",
                       "--format", "json", "--config", str(config)).stdout
        assert json.loads(training) == {"n": 30, "labelled": 1}
        coverage = cli("sql", "SELECT sum(predictions) AS n, sum(labelled) AS labelled FROM label_coverage "
                       "WHERE model = 'vibration'", "--format", "json", "--config", str(config)).stdout
        assert json.loads(coverage) == {"n": 30, "labelled": 1}
        versions = cli("sql", "SELECT device FROM device_versions WHERE model = 'vibration'", "--format", "json",
                       "--config", str(config)).stdout
        assert [json.loads(line)["device"] for line in versions.splitlines()] == ["pump-2"]  # pump-1 left the rollout
    finally:
        stop_server(server)
    db = tmp_path / "ingest.duckdb"
    assert not _file_holds(db, marker)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM vibration").fetchone()[0] == 30
        assert con.execute("SELECT count(*) FROM devices").fetchone()[0] == 2  # registrations are kept
    # The same records sealed into a new batch are new to the ledger: they land again (README, Deleting data).
    server = spawn_server(config, tmp_path / "server.log")
    try:
        resealed, body = seal(tmp_path / "d", vibration, doomed)
        assert put_batch(port, resealed, body, token_1) == 201
        count = cli("sql", "SELECT count(*) AS n FROM vibration", "--format", "json", "--config", str(config)).stdout
        assert json.loads(count)["n"] == 80
    finally:
        stop_server(server)


def test_delete_where_hashed_matches_what_the_device_stores_with_the_server_stopped(tmp_path, vibration):
    """--where-hashed deletes the rows whose pseudonymized field holds the device's HMAC of a person's value, from the
    stopped server's file, audited, and the pseudonym is gone from the file."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    key = secrets.token_bytes(32)
    jane, john = Privacy(key).hash("jane.roe@plant.example.com"), Privacy(key).hash("john@plant.example.com")
    table, _ = make_table(vibration, predictions=20)
    table = _with(table, "operator_email", [jane if i % 4 == 0 else john for i in range(20)])
    land_and_stop(tmp_path, config, port, token, vibration, table)
    dry = cli("delete", "--where-hashed", f"operator_email={jane}", "--config", str(config))
    assert "would delete 5 rows" in dry.stdout
    assert _file_holds(tmp_path / "ingest.duckdb", jane)
    cli("delete", "--where-hashed", f"operator_email={jane}", "--yes", "--config", str(config))
    assert not _file_holds(tmp_path / "ingest.duckdb", jane)
    assert _file_holds(tmp_path / "ingest.duckdb", john)
    with duckdb.connect(str(tmp_path / "ingest.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM vibration").fetchone()[0] == 15
        assert con.execute("SELECT rows, reason FROM deletions").fetchall() == [(5, "manual")]
        predicate = con.execute("SELECT predicate FROM deletions").fetchone()[0]
        assert hashlib.sha256(jane.encode()).hexdigest() in predicate  # the audit proves which pseudonym, not holds it
    unknown = cli("delete", "--where-hashed", f"note={jane}", "--config", str(config), check=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "pseudonymizes" in unknown.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--before", "2025-01-01"], "--before needs --model"),
        (["--device", "x", "--model", "nope"], "no model named 'nope'"),
        (["--where-hashed", "operator_email"], "FIELD=VALUE"),
        (["--where-hashed", "operator_email=8369e634…"], "is no pseudonym: give the 64 hex digits"),
        (["--where-hashed", "operator_email=jane.roe@plant.example.com"], "is no pseudonym"),
        (["--where-hashed", f"operator_email={'A' * 64}"], "is no pseudonym"),
    ],
)
def test_bad_deletions_are_one_line(tmp_path, args, message):
    """A deletion that names no valid predicate is refused with one line and exit 1, through the server and without it."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))  # creates the database
    server = spawn_server(config, tmp_path / "server.log")
    try:
        for _ in ("running", "stopped"):
            result = cli("delete", *args, "--config", str(config), check=False)
            assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
            stop_server(server)
    finally:
        stop_server(server)


async def test_retention_deletes_old_rows_per_model_audited_and_compacts(tmp_path, vibration):
    """store.retention_days_by_model deletes a model's rows older than its retention on the writer, audits the run
    with reason retention, and leaves newer rows; a second run deletes nothing and adds no audit row."""
    config = make_config(tmp_path, store={"retention_days": 3650, "retention_days_by_model": {"vibration": 30}})
    store = Store(config.store.db_path, config.store)
    try:
        for schema in [vibration]:
            await asyncio.wrap_future(store.register(schema))
        now = datetime(2025, 8, 1, tzinfo=UTC)
        marker = f"OLD-{uuid.uuid4().hex}"
        old, _ = make_table(vibration, predictions=10, start=now - timedelta(days=40))
        old = _with(old, "note", [marker] * 10)
        new, _ = make_table(vibration, predictions=7, start=now - timedelta(days=5))

        _insert(store, "vibration", old)
        _insert(store, "vibration", new)
        retention = Retention(store, config.store)
        results = await retention.run_once(now)
        assert [(r["reason"], r["rows"]) for r in results] == [("retention", 10)]
        assert await retention.run_once(now) == []
        cur = store.cursor()
        assert cur.execute("SELECT count(*) FROM vibration").fetchone()[0] == 7
        assert cur.execute("SELECT deleted_by, reason, rows FROM deletions").fetchall() == [("retention", "retention", 10)]
    finally:
        store.close()
    assert not _file_holds(config.store.db_path, marker)


def test_apply_counts_match_what_a_deletion_removes(tmp_path, vibration):
    """For each kind of predicate, the dry run's per-table counts are exactly the rows the deletion removes."""
    config = make_config(tmp_path)
    store = Store(config.store.db_path, config.store)
    try:
        store.register(vibration).result()
        key = secrets.token_bytes(32)
        table, ids = make_table(vibration, predictions=40)
        table = _with(table, "operator_email", [Privacy(key).hash(f"p{i % 3}") for i in range(40)])
        _insert(store, "vibration", table, ["a" if i % 2 else "b" for i in range(40)])
        labels, _ = make_table(vibration, feedback=[(ids[i], "x", datetime(2025, 7, 1, tzinfo=UTC)) for i in range(0, 40, 5)])
        _insert(store, "vibration_feedback", labels, "c")
        catalog = store.catalog
        for deletion in [Deletion(device="a"), Deletion(model="vibration", before=datetime(2025, 6, 1, 12, 0, 20, tzinfo=UTC)),
                         Deletion(hashed=("operator_email", Privacy(key).hash("p1")))]:
            before = store.cursor().execute(
                "SELECT (SELECT count(*) FROM vibration), (SELECT count(*) FROM vibration_feedback)").fetchone()
            counted = store.call(lambda con: apply(con, deletion, catalog, execute=False, by="t", tombstone_days=90)).result()
            done = store.call(lambda con: apply(con, deletion, catalog, execute=True, by="t", tombstone_days=90)).result()
            after = store.cursor().execute(
                "SELECT (SELECT count(*) FROM vibration), (SELECT count(*) FROM vibration_feedback)").fetchone()
            assert counted["tables"] == done["tables"]
            assert done["tables"] == {"vibration": before[0] - after[0], "vibration_feedback": before[1] - after[1]}
            assert done["rows"] > 0, deletion
            orphans = store.cursor().execute(
                "SELECT count(*) FROM vibration_feedback f ANTI JOIN vibration p ON p.record_id = f.prediction_id").fetchone()[0]
            assert orphans == 0
    finally:
        store.close()


def test_the_server_applies_retention_at_start_and_audits_it(tmp_path, vibration):
    """A server started with store.retention_days_by_model deletes that model's expired rows on its own, audited with
    reason retention, and keeps the rest."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    now = datetime.now(UTC)
    server = spawn_server(config, tmp_path / "server.log")
    try:
        for name, start in (("old", now - timedelta(days=40)), ("new", now - timedelta(days=2))):
            table, _ = make_table(vibration, predictions=5, start=start)
            batch_id, body = seal(tmp_path / name, vibration, table)
            assert put_batch(port, batch_id, body, token) == 201
    finally:
        stop_server(server)
    with open(config, "a") as handle:
        handle.write("retention_days_by_model = { vibration = 30 }\n")
    server = spawn_server(config, tmp_path / "server.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            # A query that meets the file being rewritten is interrupted: ask again.
            asked = cli("sql", "SELECT deleted_by, reason, rows FROM deletions", "--format", "json", "--config", str(config),
                        check=False)
            audit = asked.stdout if asked.returncode == 0 else ""
            if audit.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert json.loads(audit) == {"deleted_by": "retention", "reason": "retention", "rows": 5}
        count = cli("sql", "SELECT count(*) AS n FROM vibration", "--format", "json", "--config", str(config)).stdout
        assert json.loads(count)["n"] == 5
    finally:
        stop_server(server)


async def test_uploads_and_queries_during_a_deletion_all_land(server, tmp_path, vibration):
    """Batches uploaded while a deletion rewrites the file all land (they wait in the queue), and queries afterwards
    read the new file."""
    token = await server.add_device("pump-1")
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    first, _ = make_table(vibration, predictions=200)
    batch_id, body = seal(tmp_path / "first", vibration, first)
    assert (await server.put(batch_id, body, token))[0] == 201
    bodies = [seal(tmp_path / f"b{i}", vibration, make_table(vibration, predictions=20)[0]) for i in range(12)]

    async def delete() -> dict:
        async with server.session.post(f"{server.url}/v1/deletions", json={"device": "pump-1", "execute": True},
                                       headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def upload(batch_id: str, body: bytes) -> int:
        await asyncio.sleep(0)
        for _ in range(100):  # a 429 while the queue is full is retried, as a device does
            status, _, _ = await server.put(batch_id, body, token)
            if status != 429:
                return status
            await asyncio.sleep(0.05)
        return status

    results = await asyncio.gather(delete(), *(upload(b, data) for b, data in bodies))
    assert results[0]["executed"] and results[0]["file_bytes_after"] > 0
    assert all(status == 201 for status in results[1:])
    rows = await server.sql("SELECT count(*) AS n FROM vibration")
    # Whatever landed before the deletion's transaction is gone; everything after it is there.
    assert rows[0]["n"] == 200 + 12 * 20 - results[0]["tables"]["vibration"]
    audit = await server.sql("SELECT count(*) AS n FROM deletions")
    assert audit == [{"n": 1}]


async def test_after_a_deletion_and_retention_the_fleet_counts_leave_out_the_deleted_rows(server, tmp_path, vibration):
    """After deleting a device's rows and a model's old rows, landed_daily, device_health, the versions and the
    dashboard's rows per day count exactly what the tables still hold, and a device with nothing left leaves them."""
    from tests.ingest.fleet_truth import assert_aggregates_match_async

    headers = {"Authorization": f"Bearer {server.admin_token}"}
    tokens = {name: await server.add_device(name) for name in ("pump-1", "pump-2", "pump-3")}
    old, recent = datetime.now(UTC) - timedelta(days=400), datetime.now(UTC) - timedelta(days=1)
    for index, (name, version, start) in enumerate([("pump-1", "1.0", recent), ("pump-2", "1.0", old),
                                                     ("pump-2", "2.0", recent), ("pump-3", "2.0", recent)]):
        table, ids = make_table(vibration, predictions=10 + index, version=version, start=start)
        feedback, _ = make_table(vibration, feedback=[(ids[0], "ok", start + timedelta(minutes=1))], version=version)
        for part, rows in (("p", table), ("f", feedback)):
            batch_id, body = seal(tmp_path / f"b{index}{part}", vibration, rows)
            assert (await server.put(batch_id, body, tokens[name]))[0] == 201
    await assert_aggregates_match_async(server.sql)
    for deletion in ({"device": "pump-1"}, {"model": "vibration", "before": (old + timedelta(days=1)).isoformat(),
                                             "reason": "retention"}):
        async with server.session.post(f"{server.url}/v1/deletions", json={**deletion, "execute": True},
                                       headers=headers) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
            assert answer["rows"] > 0 and answer.get("file_bytes_after", 1) > 0, answer
    await assert_aggregates_match_async(server.sql)
    left = await server.sql("SELECT DISTINCT device FROM landed_daily ORDER BY 1")
    assert left == [{"device": "pump-2"}, {"device": "pump-3"}]
    assert await server.sql("SELECT rows FROM device_health WHERE device = 'pump-1'") == [{"rows": 0}]
    async with server.session.get(f"{server.url}/v1/dashboard/data?days=30", headers=headers) as response:
        data = await response.json()
    remaining = await server.sql("SELECT (SELECT count(*) FROM vibration) + (SELECT count(*) FROM vibration_feedback) AS n")
    assert sum(data["rows_per_day"]["vibration"]) == remaining[0]["n"] > 0


async def _delete(server, **deletion) -> dict:
    async with server.session.post(f"{server.url}/v1/deletions", json={**deletion, "execute": True},
                                   headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _metric(server, name: str) -> str:
    async with server.session.get(f"{server.url}/metrics") as response:
        return next((line for line in (await response.text()).splitlines() if line.startswith(name)), "")


async def test_an_erasure_holds_against_rows_uploaded_after_it(server, tmp_path, vibration):
    """Rows holding a pseudonym erased by --where-hashed that arrive after the erasure are left out, counted as erased
    in the receipt, the ledger and a metric, and never stored; a replay answers the same receipt."""
    token = await server.add_device("pump-1")
    key = secrets.token_bytes(32)
    jane, john = Privacy(key).hash("jane.roe@plant.example.com"), Privacy(key).hash("john@plant.example.com")
    early, _ = make_table(vibration, predictions=8)
    early = _with(early, "operator_email", [jane if i % 2 else john for i in range(8)])
    batch_id, body = seal(tmp_path / "early", vibration, early)
    assert (await server.put(batch_id, body, token))[0] == 201
    done = await _delete(server, where_hashed={"field": "operator_email", "value": jane})
    assert done["tables"]["vibration"] == 4
    # The device was offline: its spool still holds more of jane's rows, sealed before or after the erasure.
    late, _ = make_table(vibration, predictions=10)
    late = _with(late, "operator_email", [jane if i < 3 else john for i in range(10)])
    batch_id, body = seal(tmp_path / "late", vibration, late)
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201 and receipt["erased"] == 3 and receipt["duplicates"] == 0, receipt
    assert await server.sql("SELECT count(*) AS n FROM vibration WHERE operator_email = ?", [jane]) == [{"n": 0}]
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 4 + 7}]
    ledger = await server.sql("SELECT rows, erased FROM batches WHERE batch_id = ?", [batch_id])
    assert ledger == [{"rows": 10, "erased": 3}]
    status, again, _ = await server.put(batch_id, body, token)  # the same batch again: the original receipt
    assert status == 200 and {**again, "status": "landed"} == receipt
    assert (await _metric(server, 'edgeloop_ingest_erased_rows_total{model="vibration"}')).endswith(" 3.0")
    assert (await _metric(server, 'edgeloop_ingest_rows_landed_total{model="vibration"}')).endswith(" 15.0")
    health = await server.sql("SELECT rows FROM device_health WHERE device = 'pump-1'")
    assert health == [{"rows": 4 + 7}]  # what the table holds, erased rows not counted as landed


async def test_an_erasure_before_anything_landed_holds_and_is_kept_without_the_pseudonym(server, tmp_path, vibration):
    """An erasure that matched no row yet still holds for rows uploaded later, and the database keeps only the
    pseudonym's sha256 for it, not the pseudonym."""
    token = await server.add_device("pump-1")
    jane = Privacy(secrets.token_bytes(32)).hash("jane.roe@plant.example.com")
    done = await _delete(server, where_hashed={"field": "operator_email", "value": jane})
    assert done["rows"] == 0
    table, _ = make_table(vibration, predictions=5)
    table = _with(table, "operator_email", [jane] * 5)
    batch_id, body = seal(tmp_path / "a", vibration, table)
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201 and receipt["erased"] == 5
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 0}]
    kept = await server.sql("SELECT model, field, pseudonym_sha256 FROM erasures")
    assert kept == [{"model": None, "field": "operator_email", "pseudonym_sha256": hashlib.sha256(jane.encode()).hexdigest()}]


@pytest.mark.parametrize("kind", ["device", "where_hashed"])
async def test_feedback_on_a_deleted_prediction_is_left_out_when_it_lands_later(server, tmp_path, vibration, kind):
    """Feedback that arrives after its prediction was deleted (by --device or --where-hashed) is left out and counted
    as erased, while feedback on a kept prediction in the same batch lands."""
    tokens = {name: await server.add_device(name) for name in ("pump-1", "pump-2")}
    jane = Privacy(secrets.token_bytes(32)).hash("jane.roe@plant.example.com")
    doomed, doomed_ids = make_table(vibration, predictions=6)
    doomed = _with(doomed, "operator_email", [jane] * 6)
    kept, kept_ids = make_table(vibration, predictions=4)
    for name, rows, device in (("a", doomed, "pump-1"), ("b", kept, "pump-2")):
        batch_id, body = seal(tmp_path / name, vibration, rows)
        assert (await server.put(batch_id, body, tokens[device]))[0] == 201
    deletion = {"device": "pump-1"} if kind == "device" else {"where_hashed": {"field": "operator_email", "value": jane}}
    done = await _delete(server, **deletion)
    assert done["tables"]["vibration"] == 6
    assert await server.sql("SELECT count(*) AS n FROM tombstones") == [{"n": 6}]
    at = datetime(2025, 7, 1, tzinfo=UTC)
    labels, _ = make_table(vibration, feedback=[(doomed_ids[0], "bad", at), (doomed_ids[1], "bad", at), (kept_ids[0], "ok", at)])
    batch_id, body = seal(tmp_path / "c", vibration, labels)
    status, receipt, _ = await server.put(batch_id, body, tokens["pump-2"])
    assert status == 201 and receipt["erased"] == 2, receipt
    rows = await server.sql("SELECT prediction_id::VARCHAR AS p FROM vibration_feedback")
    assert rows == [{"p": str(kept_ids[0])}]
    assert await server.sql("SELECT count(*) AS n FROM vibration_feedback f ANTI JOIN vibration p "
                            "ON p.record_id = f.prediction_id") == [{"n": 0}]


async def test_tombstones_expire_after_tombstone_days(make_server, tmp_path, vibration):
    """A tombstone older than store.tombstone_days no longer holds feedback back, and the next deletion removes it."""
    server = await make_server(store={"tombstone_days": 2})
    token = await server.add_device("pump-1")
    other = await server.add_device("pump-2")
    table, ids = make_table(vibration, predictions=3)
    batch_id, body = seal(tmp_path / "a", vibration, table)
    assert (await server.put(batch_id, body, token))[0] == 201
    await _delete(server, device="pump-1")
    store = server.app[STORE]
    await asyncio.wrap_future(store.call(lambda con: con.execute(
        "UPDATE tombstones SET deleted_at = deleted_at - INTERVAL 3 DAY WHERE record_id = ?", [str(ids[0])])))
    at = datetime(2025, 7, 1, tzinfo=UTC)
    labels, _ = make_table(vibration, feedback=[(ids[0], "late", at), (ids[1], "late", at)])
    batch_id, body = seal(tmp_path / "b", vibration, labels)
    status, receipt, _ = await server.put(batch_id, body, other)
    assert status == 201 and receipt["erased"] == 1, receipt  # ids[1]'s tombstone is fresh, ids[0]'s expired
    await _delete(server, device="pump-3")
    assert await server.sql("SELECT record_id::VARCHAR AS r FROM tombstones ORDER BY 1") == [
        {"r": r} for r in sorted(str(i) for i in ids[1:])]


async def test_a_before_deletion_keeps_no_tombstones_and_late_feedback_stays_out_of_training(server, tmp_path, vibration):
    """A --before deletion writes no tombstones: without a retention set, late feedback on a prediction it deleted
    lands but joins no row of <model>_training."""
    token = await server.add_device("pump-1")
    old, ids = make_table(vibration, predictions=5, start=datetime(2024, 1, 1, tzinfo=UTC))
    batch_id, body = seal(tmp_path / "a", vibration, old)
    assert (await server.put(batch_id, body, token))[0] == 201
    await _delete(server, model="vibration", before="2025-01-01T00:00:00+00:00", reason="retention")
    assert await server.sql("SELECT count(*) AS n FROM tombstones") == [{"n": 0}]
    labels, _ = make_table(vibration, feedback=[(ids[0], "late", datetime(2025, 7, 1, tzinfo=UTC))])
    batch_id, body = seal(tmp_path / "b", vibration, labels)
    status, receipt, _ = await server.put(batch_id, body, token)
    assert status == 201 and receipt["erased"] == 0
    assert await server.sql("SELECT count(feedback_id) AS n FROM vibration_training") == [{"n": 0}]


def _uuid7(at: datetime) -> uuid.UUID:
    """A UUIDv7 minted at ``at``, as the SDK mints record ids."""
    raw = bytearray(int(at.timestamp() * 1000).to_bytes(6, "big") + secrets.token_bytes(10))
    raw[6], raw[8] = 0x70 | (raw[6] & 0x0F), 0x80 | (raw[8] & 0x3F)
    return uuid.UUID(bytes=bytes(raw))


def _land(store: Store, tmp_path, schema, table: pa.Table) -> dict:
    batch_id, body = seal(tmp_path, schema, table)
    batch = read_batch(body, batch_id=batch_id, limits=make_config(tmp_path).limits, schema_for=store.catalog.get)
    status, receipt = store.submit(Landing(batch, "pump-1", datetime.now(UTC))).result(30)
    assert status == 201, receipt
    return receipt


def test_feedback_on_a_prediction_gone_past_retention_is_left_out(tmp_path, vibration):
    """With a retention set, feedback naming a UUIDv7 prediction id from before the model's cut-off lands while the
    prediction is held and is left out (counted as erased) once it is gone; ids of other UUID versions go through."""
    config = make_config(tmp_path, store={"retention_days_by_model": {"vibration": 30}})
    store = Store(config.store.db_path, config.store)
    try:
        store.register(vibration).result(30)
        then = datetime.now(UTC) - timedelta(days=40)
        old, _ = make_table(vibration, predictions=2, start=then)
        gone, held = _uuid7(then), _uuid7(then + timedelta(seconds=1))
        old = _with(old, "record_id", [gone, held])  # created at then and a second later
        _land(store, tmp_path / "a", vibration, old)
        aged = Deletion(model="vibration", before=then + timedelta(milliseconds=500), reason="retention")
        assert store.call(lambda con: apply(con, aged, store.catalog, execute=True, by="retention", tombstone_days=90)).result(30)["rows"] == 1
        fresh = _uuid7(datetime.now(UTC))  # a prediction not landed yet, inside the retention: its label waits for it
        at = datetime.now(UTC)
        labels, _ = make_table(vibration, feedback=[(held, "ok", at), (gone, "late", at), (uuid.uuid4(), "v4", at),
                                                    (fresh, "early", at)])
        receipt = _land(store, tmp_path / "b", vibration, labels)
        assert receipt["erased"] == 1
        landed = {row[0] for row in store.cursor().execute("SELECT prediction_id FROM vibration_feedback").fetchall()}
        assert gone not in landed and {held, fresh} <= landed and len(landed) == 3
    finally:
        store.close()


async def test_a_retention_longer_than_the_calendar_keeps_its_model_and_others_still_expire(tmp_path, vibration):
    """A model whose retention_days reaches before year 1 keeps every row, and retention still runs for the other models
    (its cutoff overflowed, and the run failed for every model, every day)."""
    image = SchemaRegistry.from_dir(EXAMPLES_DIR)["image_classifier"]
    config = make_config(tmp_path, store={"retention_days": 30, "retention_days_by_model": {"image_classifier": 10**7}})
    store = Store(config.store.db_path, config.store)
    try:
        for schema in [vibration, image]:
            await asyncio.wrap_future(store.register(schema))
        now = datetime(2025, 8, 1, tzinfo=UTC)
        _insert(store, "vibration", make_table(vibration, predictions=4, start=now - timedelta(days=40))[0])
        _insert(store, "image_classifier", make_table(image, predictions=3, start=now - timedelta(days=40))[0])
        results = await Retention(store, config.store).run_once(now)
        assert [(r["reason"], r["rows"]) for r in results] == [("retention", 4)]
        cur = store.cursor()
        assert cur.execute("SELECT count(*) FROM image_classifier").fetchone()[0] == 3
    finally:
        store.close()


@pytest.mark.parametrize("value", ["inf", "nan", "1e300"])
def test_a_retention_interval_that_is_no_duration_is_refused_at_start(tmp_path, value):
    """store.retention_interval_s must be a finite number of seconds (at most 10 years): inf or 1e300 is a one-line error."""
    config = write_config(tmp_path, free_port())
    config.write_text(config.read_text() + f"retention_days = 30\nretention_interval_s = {value}\n")
    result = cli("serve", "--config", str(config), check=False, timeout=30)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert "retention_interval_s" in result.stderr, result.stderr


def test_a_deletion_on_a_stopped_servers_file_expires_old_tombstones_and_says_until_when(tmp_path, vibration):
    """`edgeloop-ingest delete --yes` on a stopped server's file removes tombstones older than store.tombstone_days, as the server's deletions do, and prints until when its own hold."""
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + "tombstone_days = 5\n")  # [store] is the file's last table
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    table, _ = make_table(vibration, predictions=4)
    land_and_stop(tmp_path, config, port, token, vibration, table)
    first = cli("delete", "--device", "pump-1", "--yes", "--config", str(config))
    until = (datetime.now(UTC) + timedelta(days=5)).strftime("%Y-%m-%d")
    assert f"left out until {until}" in first.stdout and "store.tombstone_days" in first.stdout, first.stdout
    db = tmp_path / "ingest.duckdb"
    with duckdb.connect(str(db)) as con:  # the first deletion's tombstones, made six days old
        assert con.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 4
        con.execute("UPDATE tombstones SET deleted_at = deleted_at - INTERVAL 6 DAY")
    cli("delete", "--device", "pump-2", "--yes", "--config", str(config))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM tombstones").fetchone()[0] == 0
