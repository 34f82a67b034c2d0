"""A database written by an earlier version holds values today's checks refuse: every read answers, none is a 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import duckdb
import pytest

from tests.ingest import conftest as ingest
from tests.ingest.conftest import Server, cli, start_server
from tests.ingest.test_health import put_status, status_document

pytestmark = pytest.mark.timeout(180)

# What an older version let in: a device's clock in year 10000, an offset that makes year 9999 year 10000 in
# UTC, and the first instant of year 1 seen from east of UTC (year 0 in UTC).
FAR_FUTURE = "10000-01-01 00:00:00+00"
FAR_PAST = "0001-01-01 00:00:00+05"


async def _landed(tmp_path: Path, vibration) -> Server:
    """A server's database with one device, its status and one batch, the server then stopped."""
    config = ingest.make_config(tmp_path)
    runner, url = await start_server(config)
    try:
        async with aiohttp.ClientSession() as session:
            server = Server(url, config, session, runner.app)
            token = await server.add_device("pump-1")
            assert (await put_status(server, token, status_document()))[0] == 201
            start = datetime.now(UTC) - timedelta(hours=1)
            table, ids = ingest.make_table(vibration, predictions=3, start=start)
            batch_id, body = ingest.seal(tmp_path, vibration, table)
            assert (await server.put(batch_id, body, token))[0] == 201
            labels, _ = ingest.make_table(vibration, feedback=[(ids[0], "normal", start), (ids[1], "cavitation", start)])
            batch_id, body = ingest.seal(tmp_path, vibration, labels)
            assert (await server.put(batch_id, body, token))[0] == 201
    finally:
        await runner.cleanup()
    return server


def _write_as_an_old_version(db_path: Path) -> None:
    """Plain SQL, as a version before the bounds wrote them: times beyond years 1-9999 in every stored kind."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        document = con.execute("SELECT document FROM device_status").fetchone()[0]
        odd = json.loads(document)
        odd["sent_at"] = "9999-12-31T23:00:00-05:00"
        odd["sync"]["next_sync_at"] = "9999-12-31T23:30:00-05:00"
        con.execute(f"UPDATE device_status SET sent_at = '{FAR_FUTURE}', document = ?", [json.dumps(odd)])
        con.execute(f"UPDATE device_health SET last_sync_at = '{FAR_FUTURE}', last_success_at = '{FAR_PAST}', "
                    f"last_status_at = '{FAR_FUTURE}'")
        con.execute(f"UPDATE batches SET sealed_at = '{FAR_FUTURE}', sent_at = '{FAR_PAST}'")
        con.execute(f"UPDATE vibration SET created_at = '{FAR_FUTURE}' WHERE rowid = 0")
        con.execute(f"UPDATE vibration_feedback SET created_at = '{FAR_PAST}' WHERE rowid = 0")
        con.execute(f"UPDATE device_versions SET last_created_at = '{FAR_FUTURE}'")
        # Drop counts from before they were capped at 2^40: two models' counts for a day sum past 2^63 - 1.
        con.execute(f"INSERT INTO drops_daily VALUES (current_date, 'vibration', 'sampled_out', {2**62}), "
                    f"(current_date, 'image_classifier', 'sampled_out', {2**62})")
        con.execute("CHECKPOINT")
    finally:
        con.close()


async def test_times_beyond_years_1_to_9999_in_stored_rows_never_make_a_read_fail(tmp_path, vibration, caplog):
    """The dashboard pages, its JSON, /v1/schemas and /v1/sql answer 200 over stored times outside years 1-9999 in UTC."""
    server = await _landed(tmp_path, vibration)
    _write_as_an_old_version(server.config.store.db_path)
    runner, url = await start_server(server.config)
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            for path in ("/dashboard", "/dashboard/devices", "/dashboard/devices/pump-1", "/dashboard/report?model=vibration",
                         "/v1/dashboard/overview", "/v1/dashboard/fleet", "/v1/dashboard/devices", "/v1/dashboard/data",
                         "/v1/dashboard/devices/pump-1", "/v1/dashboard/rollout/vibration", "/v1/dashboard/report/vibration",
                         "/v1/dashboard/report/vibration?bucket=day", "/dashboard/report?model=vibration&bucket=week",
                         "/v1/schemas"):
                async with session.get(url + path) as response:
                    assert response.status == 200, (path, await response.text())
                    if path == "/v1/dashboard/devices/pump-1":
                        detail = await response.json()
            async with session.post(f"{url}/v1/sql", json={"sql": "SELECT sent_at, sealed_at FROM batches"},
                                    headers={"Accept": "application/json"}) as response:
                assert response.status == 200
                rows = (await response.json())["rows"]
    finally:
        await runner.cleanup()
    # The time no Python datetime can hold is left out of the facts, and the log says which column held it.
    assert detail["device"]["last_sync_at"] is None and detail["device"]["last_success_at"] is None
    assert detail["recent_statuses"][0]["sent_at"] is None and detail["recent_batches"][0]["sealed_at"] is None
    assert detail["status"]["sent_at"] == "9999-12-31T23:00:00-05:00"  # the document, as the device wrote it
    assert any("outside years 1 to 9999" in record.getMessage() and "last_sync_at" in str(record.__dict__)
               for record in caplog.records)
    # SQL shows the stored value itself, as DuckDB spells it.
    assert rows == [{"sent_at": "0001-12-31 (BC) 19:00:00+00", "sealed_at": "10000-01-01 00:00:00+00"}] * 2


def test_the_fleet_and_report_commands_answer_over_stored_times_beyond_year_9999(tmp_path, vibration):
    """``fleet``, ``devices list``, ``devices show`` and ``report`` on the file print their facts over such times."""
    import asyncio

    server = asyncio.run(_landed(tmp_path, vibration))
    db = str(server.config.store.db_path)
    _write_as_an_old_version(server.config.store.db_path)
    for args in (("fleet",), ("fleet", "--versions"), ("devices", "list"), ("devices", "show", "pump-1"),
                 ("devices", "show", "pump-1", "--format", "json"), ("fleet", "--format", "json"),
                 ("report", "--model", "vibration"), ("report", "--model", "vibration", "--format", "json")):
        result = cli(*args, "--db", db, check=False)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "pump-1" in cli("fleet", "--db", db).stdout


def _register_as_an_old_version(db_path: Path, vibration) -> None:
    """A schema whose version and a field's max_bytes are past 2^31 - 1 (max_bytes past 64 bits), in the catalog."""
    raw = json.loads(vibration.canonical_json())
    raw["name"], raw["version"] = "legacy", 2**31
    text_field = next(spec for spec in raw["fields"] if spec["type"] == "string")
    text_field["max_bytes"] = 10**30
    con = duckdb.connect(str(db_path))
    try:
        # The catalog row as a server before registration adopted it from the models table: version 1 in the column.
        con.execute("INSERT INTO schemas VALUES (?, 'legacy', 1, ?, now())", ["1e" * 8, json.dumps(raw)])
        con.execute("CHECKPOINT")
    finally:
        con.close()


async def test_a_stored_schema_past_the_bounds_is_listed_with_its_numbers_exact(tmp_path, vibration):
    """The server starts on a catalog schema of version 2^31 and max_bytes 10^30; /v1/schemas writes both exactly."""
    server = await _landed(tmp_path, vibration)
    _register_as_an_old_version(server.config.store.db_path, vibration)
    runner, url = await start_server(server.config)
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as session, session.get(f"{url}/v1/schemas") as response:
            assert response.status == 200, await response.text()
            schemas = {entry["model"]: entry for entry in (await response.json())["schemas"]}
    finally:
        await runner.cleanup()
    legacy = schemas["legacy"]
    assert legacy["version"] == 2**31
    assert {spec["max_bytes"] for spec in legacy["schema"]["fields"]} >= {str(10**30)}  # past 64 bits: exact digits


def test_schemas_list_prints_a_stored_schema_past_the_bounds(tmp_path, vibration):
    """``schemas list`` on the file, as table and JSON, prints the schema of version 2^31 instead of failing."""
    import asyncio

    server = asyncio.run(_landed(tmp_path, vibration))
    _register_as_an_old_version(server.config.store.db_path, vibration)
    db = str(server.config.store.db_path)
    for fmt in ("table", "json", "csv"):
        result = cli("schemas", "list", "--db", db, "--format", fmt, check=False)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        assert str(2**31) in result.stdout


def test_migrate_check_lists_what_an_earlier_version_stored_and_changes_nothing(tmp_path, vibration):
    """``migrate --check`` names every column holding such times and each schema number past 2^31 - 1, exits 1, writes nothing."""
    import asyncio

    server = asyncio.run(_landed(tmp_path, vibration))
    db = str(server.config.store.db_path)
    clean = cli("migrate", "--check", "--db", db, check=False)
    assert clean.returncode == 0 and clean.stdout == "", clean.stderr
    _write_as_an_old_version(server.config.store.db_path)
    _register_as_an_old_version(server.config.store.db_path, vibration)
    before = Path(db).read_bytes()
    result = cli("migrate", "--check", "--db", db, check=False)
    assert result.returncode == 1, result.stderr
    found = {line.split(": ")[0] for line in result.stdout.splitlines()}
    assert {"device_status.sent_at", "device_health.last_sync_at", "device_health.last_success_at", "batches.sealed_at",
            "batches.sent_at", "vibration.created_at", "device_versions.last_created_at"} <= found, result.stdout
    assert any(where.startswith("schema legacy") and where.endswith(" version") for where in found)
    assert any(where.endswith(".max_bytes") for where in found)
    assert "drops_daily.records" in found
    assert "10000-01-01 00:00:00+00" in result.stdout
    assert Path(db).read_bytes() == before
