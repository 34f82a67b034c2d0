"""Device status reports on a real server: stored as history, idempotent by id, bounded, and refusals counted per device."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
import uuid_utils

from edgeloop.ingest.aggregate import MAX_COUNT
from edgeloop.ingest.app import STORE
from edgeloop.ingest.fleet import StoreReader, device_detail, fleet_overview, fleet_summary, versions
from edgeloop.ingest.health import prune_statuses
from tests.ingest.conftest import make_table, seal


def status_document(**changes: Any) -> dict[str, Any]:
    """A valid status document, as an agent sends it; ``changes`` replace top-level keys."""
    now = datetime.now(UTC)
    document = {
        "status_id": str(uuid_utils.uuid7()),
        "sent_at": now.isoformat(),
        "agent_version": "0.1.0",
        "started_at": (now - timedelta(hours=1)).isoformat(),
        "models": [{"model": "vibration", "schema_fingerprint": "ab" * 32, "versions": ["2.1.0", "2.0.0"]}],
        "spool": {"batches": 2, "records": 120, "bytes": 4096, "oldest_record_age_s": 30.5, "rejected": 0,
                  "quarantined": 0, "budget_bytes": 1 << 30},
        "journal": {"records": 3, "bytes": 512, "segments": 1},
        "drops": {"sampled_out": 7, "rate_capped": 1},
        "sync": {"outcome": "ok", "error": None, "started_at": now.isoformat(), "duration_s": 0.25, "uploaded": 2,
                 "window_s": 3600.0, "failures_in_a_row": 0, "since_last_report": {"ok": 1}},
        "disk": {"free_bytes": 10 << 30, "full": False},
        "clock": {"synchronized": True, "last_offset_s": 0.01},
        "sampling": {"default": {"keep_rate": 1.0}, "models": {"vibration": {"keep_rate": 0.5, "max_per_hour": 100}}},
    }
    document.update(changes)
    return document


async def put_status(server, token: str, document: Any, *, status_id: str | None = None, raw: bytes | None = None,
                     content_type: str = "application/json") -> tuple[int, Any]:
    status_id = status_id or (document["status_id"] if isinstance(document, dict) else str(uuid_utils.uuid7()))
    body = raw if raw is not None else json.dumps(document).encode()  # json: it writes integers past 64 bits
    async with server.session.put(
        f"{server.url}/v1/status/{status_id}", data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
    ) as response:
        return response.status, await response.json(content_type=None)


def reader(server) -> StoreReader:
    return StoreReader(server.app[STORE])


async def test_a_status_is_stored_as_history_and_the_device_is_alive(server):
    """A device that sends only statuses shows up as alive (state ok) with its backlog, drops and clock offset."""
    token = await server.add_device("pump-1")
    await server.add_device("pump-2")
    first = status_document()
    assert (await put_status(server, token, first))[0] == 201
    await asyncio.sleep(1.05)  # fleet.min_status_interval_s
    second = status_document(drops={"sampled_out": 2})
    code, receipt = await put_status(server, token, second)
    assert code == 201 and receipt["device"] == "pump-1" and receipt["status"] == "stored"
    assert abs(receipt["clock_offset_s"]) < 5

    rows = await server.sql("SELECT status_id, device FROM device_status ORDER BY received_at")
    assert [row["status_id"] for row in rows] == [first["status_id"], second["status_id"]]
    now = datetime.now(UTC)
    overview = {row["device"]: row for row in fleet_overview(reader(server), now, server.config.fleet).to_pylist()}
    pump = overview["pump-1"]
    assert pump["state"] == "ok" and pump["backlog_records"] == 120 and pump["dropped"] == 10
    assert pump["sync_window_s"] == 3600.0 and pump["agent_version"] == "0.1.0" and pump["statuses"] == 2
    assert overview["pump-2"]["state"] == "never_seen"
    assert fleet_summary(reader(server), now, server.config.fleet)["ok"] == 1
    detail = device_detail(reader(server), "pump-1", now, server.config.fleet)
    assert detail["status"]["status_id"] == second["status_id"] and len(detail["recent_statuses"]) == 2
    assert detail["status"]["models"][0]["versions"] == ["2.1.0", "2.0.0"]
    assert device_detail(reader(server), "nobody", now, server.config.fleet) is None


async def test_drop_counts_at_their_bound_saturate_instead_of_failing_the_status(server):
    """Each reason may count up to 2^62, so a status's total and a device's running total saturate at the drop cap, never a 500."""
    token = await server.add_device("pump-1")
    huge = {f"reason_{index}": 2**62 for index in range(4)}
    code, body = await put_status(server, token, status_document(drops=huge))
    assert code == 201, body
    await asyncio.sleep(1.05)  # fleet.min_status_interval_s
    assert (await put_status(server, token, status_document(drops=huge)))[0] == 201
    rows = await server.sql("SELECT max(dropped) AS most FROM device_status")
    assert rows[0]["most"] == MAX_COUNT
    pump = fleet_overview(reader(server), datetime.now(UTC), server.config.fleet).to_pylist()[0]
    assert pump["dropped"] == MAX_COUNT and pump["statuses"] == 2


async def test_a_retried_status_is_idempotent_and_a_reused_id_with_other_content_conflicts(server):
    """The same document again is 200 with the first receipt and stores nothing; its id with other content is 409."""
    token = await server.add_device("pump-1")
    document = status_document()
    code, receipt = await put_status(server, token, document)
    assert code == 201
    again, replay = await put_status(server, token, document)  # at once: a retry is never rate-limited
    assert again == 200 and replay == {**receipt, "status": "already_stored"}
    changed = copy.deepcopy(document)
    changed["spool"]["records"] = 1
    conflict, body = await put_status(server, token, changed)
    assert conflict == 409 and body["error"]["code"] == "conflict"
    other = await server.add_device("pump-2")
    stolen, body = await put_status(server, other, document)
    assert stolen == 409
    assert (await server.sql("SELECT count(*) AS n FROM device_status"))[0]["n"] == 1
    assert (await server.sql("SELECT statuses FROM device_health WHERE device = 'pump-1'"))[0]["statuses"] == 1


def _hostile() -> list[tuple[str, Any, int, str]]:
    big = status_document()
    return [
        ("not JSON", b"{nope", 400, "bad_json"),
        ("a list", [], 422, "invalid_status"),
        ("missing spool", {k: v for k, v in status_document().items() if k != "spool"}, 422, "invalid_status"),
        ("unknown key", status_document(extra=1), 422, "invalid_status"),
        ("negative count", status_document(spool={**big["spool"], "records": -1}), 422, "invalid_status"),
        ("huge count", status_document(spool={**big["spool"], "bytes": 2**70}), 422, "invalid_status"),
        ("NaN age", None, 422, "invalid_status"),
        ("too many drop reasons", status_document(drops={f"r{i}": 1 for i in range(65)}), 422, "invalid_status"),
        ("long reason", status_document(drops={"x" * 65: 1}), 422, "invalid_status"),
        ("reason with spaces", status_document(drops={"a b": 1}), 422, "invalid_status"),
        ("long error", status_document(sync={**big["sync"], "outcome": "failed", "error": "e" * 1025}), 422, "invalid_status"),
        ("unknown outcome", status_document(sync={**big["sync"], "outcome": "great"}), 422, "invalid_status"),
        ("zero window", status_document(sync={**big["sync"], "window_s": 0}), 422, "invalid_status"),
        ("naive time", status_document(sent_at="2026-11-26T02:00:00"), 422, "invalid_status"),
        ("sent before year 1 in UTC", status_document(sent_at="0001-01-01T00:00:00+05:00"), 422, "invalid_status"),
        ("next sync after year 9999 in UTC",
         status_document(sync={**big["sync"], "next_sync_at": "9999-12-31T23:00:00-05:00"}), 422, "invalid_status"),
        ("too many models", status_document(models=[big["models"][0]] * 257), 422, "invalid_status"),
        ("too many versions", status_document(models=[{**big["models"][0], "versions": ["v"] * 33}]), 422, "invalid_status"),
        ("long agent version", status_document(agent_version="1" * 65), 422, "invalid_status"),
        ("keep rate over 1", status_document(sampling={"default": {"keep_rate": 2}}), 422, "invalid_status"),
        ("over 64 KiB", None, 413, "too_large"),
    ]


@pytest.mark.parametrize(("what", "document", "status", "code"), _hostile(), ids=[case[0] for case in _hostile()])
async def test_a_hostile_status_gets_a_4xx_in_the_one_error_shape_and_stores_nothing(server, what, document, status, code):
    """Every malformed, unbounded or oversized status document is refused with the right 4xx; nothing is stored."""
    token = await server.add_device("pump-1")
    raw = None
    if what == "NaN age":
        raw = orjson.dumps(status_document()).replace(b'"oldest_record_age_s":30.5', b'"oldest_record_age_s":NaN')
    elif what == "over 64 KiB":
        raw = orjson.dumps(status_document(agent_version="0.1.0", padding="x" * 70_000))
    elif isinstance(document, bytes):
        raw = document
    answer, body = await put_status(server, token, document, raw=raw)
    assert answer == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    if status == 422:
        assert body["error"]["details"] and all(set(item) == {"field", "message"} for item in body["error"]["details"])
    assert (await server.sql("SELECT count(*) AS n FROM device_status"))[0]["n"] == 0


async def test_status_id_content_type_and_token_are_checked(server):
    """A bad id is 400, a mismatched id 422, a non-JSON content type 415 and an unknown token 401."""
    token = await server.add_device("pump-1")
    document = status_document()
    assert (await put_status(server, token, document, status_id="not-a-uuid"))[0] == 400
    mismatch, body = await put_status(server, token, document, status_id=str(uuid_utils.uuid7()))
    assert mismatch == 422 and body["error"]["details"][0]["field"] == "status_id"
    assert (await put_status(server, token, document, content_type="text/plain"))[0] == 415
    assert (await put_status(server, "eld_nope", document))[0] == 401


async def test_statuses_faster_than_the_minimum_interval_get_429(server):
    """A second new status within fleet.min_status_interval_s gets 429 with Retry-After; the first is kept."""
    token = await server.add_device("pump-1")
    assert (await put_status(server, token, status_document()))[0] == 201
    code, body = await put_status(server, token, status_document())
    assert code == 429 and body["error"]["code"] == "too_many_requests"


async def test_refused_uploads_are_counted_per_device_and_code(server, tmp_path, vibration):
    """422, 409 and 415 answers to a device's uploads are counted against it; a revoked device's 401 too."""
    token = await server.add_device("pump-1")
    other = await server.add_device("pump-2")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    assert (await server.put(batch_id, b"PAR1 not parquet PAR1", token))[0] in (400, 422)
    assert (await server.put(batch_id, body, token, content_type="text/csv"))[0] == 415
    assert (await server.put(batch_id, body, token))[0] == 201
    _, changed = seal(tmp_path / "b", vibration, make_table(vibration, predictions=4)[0], batch_id=batch_id)
    assert (await server.put(batch_id, changed, token))[0] == 409
    async with server.session.delete(f"{server.url}/v1/devices/pump-2",
                                     headers={"Authorization": f"Bearer {server.admin_token}"}) as response:
        assert response.status == 200
    assert (await server.put(batch_id, body, other))[0] == 401

    async def counted() -> dict[str, int]:
        rows = await server.sql("SELECT device, sum(count)::BIGINT AS n FROM device_refusals GROUP BY device")
        return {row["device"]: row["n"] for row in rows}

    for _ in range(100):  # the counts are stored by the writer just after the answers
        if await counted() == {"pump-1": 3, "pump-2": 1}:
            break
        await asyncio.sleep(0.05)
    assert await counted() == {"pump-1": 3, "pump-2": 1}
    overview = {row["device"]: row for row in fleet_overview(reader(server), datetime.now(UTC), server.config.fleet).to_pylist()}
    assert overview["pump-1"]["refused"] == 3 and overview["pump-1"]["last_refused_code"] == "conflict"
    assert overview["pump-1"]["batches"] == 1 and overview["pump-1"]["rows"] == 3
    assert overview["pump-2"]["state"] == "revoked"
    codes = {(row["status"], row["code"]) for row in await server.sql("SELECT status, code FROM device_refusals WHERE device = 'pump-1'")}
    assert (415, "unsupported_media_type") in codes and (409, "conflict") in codes


async def test_landing_keeps_the_version_aggregates_without_scanning_model_tables(server, tmp_path, vibration):
    """Each landed batch adds its rows per model, version, day and device to landed_daily; duplicates add nothing."""
    one, two = await server.add_device("pump-1"), await server.add_device("pump-2")
    table, _ = make_table(vibration, predictions=5, version="1.0")
    batch_id, body = seal(tmp_path / "a", vibration, table)
    assert (await server.put(batch_id, body, one))[0] == 201
    assert (await server.put(batch_id, body, one))[0] == 200  # a replay adds nothing
    batch_id, body = seal(tmp_path / "b", vibration, make_table(vibration, predictions=2, version="2.0")[0])
    assert (await server.put(batch_id, body, two))[0] == 201
    batch_id, body = seal(tmp_path / "c", vibration, make_table(vibration, predictions=3, version="1.0")[0])
    assert (await server.put(batch_id, body, two))[0] == 201
    landed = versions(reader(server)).to_pylist()
    expected = (await server.sql("SELECT model_version, count(DISTINCT device) AS devices, count(*) AS n FROM vibration GROUP BY 1"))
    assert sorted((row["model_version"], row["devices"], row["predictions"]) for row in landed) == sorted(
        (row["model_version"], row["devices"], row["n"]) for row in expected)


async def test_device_states_follow_the_declared_sync_window(server):
    """ok within a window, late after one (+ grace), silent after silent_after_windows, failing after a failed sync."""
    settings = server.config.fleet
    token = await server.add_device("pump-1")
    document = status_document()
    document["sync"]["window_s"] = 600.0
    assert (await put_status(server, token, document))[0] == 201
    seen = fleet_overview(reader(server), datetime.now(UTC), settings).to_pylist()[0]["last_seen_at"]

    def state_at(after_s: float) -> str:
        rows = fleet_overview(reader(server), seen + timedelta(seconds=after_s), settings).to_pylist()
        return rows[0]["state"]

    window, grace, silent = 600.0, settings.grace_s, settings.silent_after_windows
    assert state_at(window + grace - 1) == "ok"
    assert state_at(window + grace + 1) == "late"
    assert state_at(silent * window + grace - 1) == "late"
    assert state_at(silent * window + grace + 1) == "silent"
    silent_now = fleet_overview(reader(server), seen + timedelta(seconds=silent * window + grace + 1), settings,
                                states=["silent"])
    assert silent_now.column("device").to_pylist() == ["pump-1"]
    with pytest.raises(ValueError, match="unknown device state"):
        fleet_overview(reader(server), seen, settings, states=["asleep"])

    await asyncio.sleep(1.05)  # fleet.min_status_interval_s
    failed = status_document()
    failed["sync"].update(outcome="failed", error="ingest unreachable: connection refused", failures_in_a_row=3)
    assert (await put_status(server, token, failed))[0] == 201
    row = fleet_overview(reader(server), datetime.now(UTC), settings).to_pylist()[0]
    assert (row["state"], row["last_error"], row["failures_in_a_row"]) == ("failing", "ingest unreachable: connection refused", 3)
    assert row["sync_window_s"] == 3600.0  # the window the latest report declared
    summary = fleet_summary(reader(server), datetime.now(UTC), settings)
    assert summary == {"ok": 0, "late": 0, "failing": 1, "silent": 0, "never_seen": 0, "revoked": 0}


async def test_an_older_report_arriving_late_never_replaces_the_latest(server):
    """A retried report sent before the latest one is counted in the history but the device keeps its newest state."""
    token = await server.add_device("pump-1")
    older = status_document(sent_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    older["sync"]["outcome"] = "failed"
    newer = status_document()
    assert (await put_status(server, token, newer))[0] == 201
    await asyncio.sleep(1.05)
    assert (await put_status(server, token, older))[0] == 201
    row = fleet_overview(reader(server), datetime.now(UTC), server.config.fleet).to_pylist()[0]
    assert row["last_outcome"] == "ok" and row["statuses"] == 2


async def test_the_writer_prunes_status_history_past_retention_but_keeps_each_device_latest(server):
    """Statuses older than fleet.status_retention_days are deleted; device_health still has the device's latest."""
    token = await server.add_device("pump-1")
    assert (await put_status(server, token, status_document()))[0] == 201
    store = server.app[STORE]
    later = datetime.now(UTC) + timedelta(days=server.config.fleet.status_retention_days, seconds=1)
    deleted = await asyncio.wrap_future(store.call(lambda con: prune_statuses(con, server.config.fleet.status_retention_days, later)))
    assert deleted == 1
    assert (await server.sql("SELECT count(*) AS n FROM device_status"))[0]["n"] == 0
    assert (await server.sql("SELECT statuses, last_outcome FROM device_health"))[0] == {"statuses": 1, "last_outcome": "ok"}


def test_a_database_from_before_the_aggregates_gets_them_filled_once(tmp_path, vibration):
    """Opening a database whose rows landed before landed_daily and device_health existed fills both from them."""
    import duckdb

    from edgeloop.ingest.connection import connect
    from tests.ingest.conftest import cli, free_port, put_batch, spawn_server, stop_server, write_config

    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "pump-1", "--config", str(config)).stdout.strip()
    server = spawn_server(config, tmp_path / "server.log")
    try:
        for name, version, rows in (("a", "1.0", 4), ("b", "2.0", 3)):
            batch_id, body = seal(tmp_path / name, vibration, make_table(vibration, predictions=rows, version=version)[0])
            assert put_batch(port, batch_id, body, token) == 201
    finally:
        stop_server(server)
    path = tmp_path / "ingest.duckdb"
    with duckdb.connect(str(path)) as con:
        before = con.execute("SELECT model_version, sum(predictions)::BIGINT FROM landed_daily GROUP BY 1 ORDER BY 1").fetchall()
        con.execute("DROP TABLE landed_daily")
        con.execute("DROP TABLE device_health")
    con = connect(path, read_only=False)
    try:
        after = con.execute("SELECT model_version, sum(predictions)::BIGINT FROM landed_daily GROUP BY 1 ORDER BY 1").fetchall()
        health = con.execute("SELECT device, batches, rows FROM device_health").fetchall()
    finally:
        con.close()
    assert after == before == [("1.0", 4), ("2.0", 3)]
    assert health == [("pump-1", 2, 7)]


def test_the_fleet_benchmark_runs_its_queries_and_the_naive_ones_on_a_small_fleet(tmp_path):
    """bench/fleet.py generates a fleet and times every fleet query next to its full-scan reference."""
    from bench.fleet import generate, measure

    made = generate(tmp_path / "fleet.duckdb", devices=200, rows=20_000, days=3)
    assert made["statuses"] == 600
    results = measure(tmp_path / "fleet.duckdb")
    by_query = {row["query"]: row for row in results}
    assert by_query["fleet_overview, every device"]["rows"] == 200  # the never-seen devices too
    assert all(row["ms"] > 0 and row["naive_ms"] > 0 for row in results)


async def test_a_device_that_ran_thousands_of_versions_gets_a_small_detail(server):
    """A device that landed rows of 3,000 versions of a model gets the MAX_DEVICE_VERSIONS newest of them and their
    count in its detail (JSON and CLI), not all 3,000."""
    from edgeloop.ingest.fleet import MAX_DEVICE_VERSIONS

    await server.add_device("pump-1")
    base = datetime(2020, 1, 1, tzinfo=UTC)
    rows = [(base.date(), "vibration", f"1.{n}", "", "pump-1", 1, 0, base - timedelta(hours=n), base - timedelta(hours=n))
            for n in range(3000)]  # the newest versions landed first: newest is by version, not by landing
    await asyncio.wrap_future(server.app[STORE].call(lambda con: con.executemany(  # as 3,000 landings, each a new version
        "INSERT INTO landed_daily (day, model, model_version, policy_version, device, predictions, feedback, first_at, last_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)))
    detail = device_detail(reader(server), "pump-1", datetime.now(UTC), server.config.fleet)
    assert sorted(v["model_version"] for v in detail["versions"]) == sorted(f"1.{n}" for n in range(3000 - MAX_DEVICE_VERSIONS, 3000))
    assert detail["versions_total"] == {"vibration": 3000}
    viewer = server.config.server.viewer_token_path.read_text().strip()
    async with server.session.get(f"{server.url}/v1/dashboard/devices/pump-1",
                                  headers={"Authorization": f"Bearer {viewer}"}) as response:
        body = await response.read()
    assert response.status == 200 and len(body) < 64 * 1024
    assert len(orjson.loads(body)["versions"]) == MAX_DEVICE_VERSIONS
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{server.url}/dashboard/login", data={"token": viewer, "next": "/dashboard"}) as login:
            assert login.status == 200
        async with session.get(f"{server.url}/dashboard/devices/pump-1") as page:
            text = await page.text()
    assert f"vibration: {3000 - MAX_DEVICE_VERSIONS:,} more versions" in text


async def test_run_ids_that_alternate_mark_a_shared_token_and_restarts_do_not(server, caplog):
    """Statuses whose run ids come back after another run (two agents, one token) set shared_token, log it and show on the page;
    runs that only follow each other (restarts) and documents without a run id do not."""
    from edgeloop.ingest.dashboard_html import device_page

    clones = await server.add_device("pump-1")
    restarted = await server.add_device("pump-2")
    first, second, third = (str(uuid_utils.uuid4()) for _ in range(3))
    for token, runs in ((clones, [first, second, first]), (restarted, [None, first, second, third])):
        for run_id in runs:
            document = status_document() if run_id is None else status_document(run_id=run_id)
            assert (await put_status(server, token, document))[0] == 201
            await asyncio.sleep(1.05)  # fleet.min_status_interval_s
    now = datetime.now(UTC)
    shared = device_detail(reader(server), "pump-1", now, server.config.fleet)
    alone = device_detail(reader(server), "pump-2", now, server.config.fleet)
    assert shared["shared_token"] is True and alone["shared_token"] is False
    warned = [record for record in caplog.records if "two agents send with one device's token" in record.getMessage()]
    assert [record.device for record in warned] == ["pump-1"]
    assert 'id="shared-token"' in device_page([], "pump-1", {**shared, "version_changes": [], "version_changes_total": 0,
                                                             "recent_batches": []})
    assert 'id="shared-token"' not in device_page([], "pump-2", {**alone, "version_changes": [], "version_changes_total": 0,
                                                                "recent_batches": []})


TRICKY_VERSIONS = ["1.10.0", "1.9.1", "2.2.0-rc1", "2.2.0", "2.2.0-rc10", "2.2.0-rc2", "v3", "3", "3a", "0003.1",
                   "99999999999999999999999999999999999999999999.0", "100000000000000000000000000000000000000000000",
                   "release", "Release", "2.2", "2.2.0.0", "2.2.0+build7", "ß2", "2.٣"]


async def test_a_device_detail_reads_only_the_versions_it_shows_the_newest_as_people_read_them(server):
    """device_detail reads at most MAX_DEVICE_VERSIONS version rows per model however many the device ran, the newest by version_key, and versions_total still counts every one."""
    from edgeloop.ingest.dashboard import version_key
    from edgeloop.ingest.fleet import MAX_DEVICE_VERSIONS

    await server.add_device("pump-1")
    base = datetime(2020, 1, 1, tzinfo=UTC)
    names = {"vibration": TRICKY_VERSIONS + [f"0.{n}" for n in range(2000)], "other": [f"1.{n}" for n in range(30)]}
    rows = [(base.date(), model, version, "", "pump-1", 1, 0, base - timedelta(hours=n), base - timedelta(hours=n))
            for model, listed in names.items() for n, version in enumerate(listed)]
    await asyncio.wrap_future(server.app[STORE].call(lambda con: con.executemany(
        "INSERT INTO landed_daily (day, model, model_version, policy_version, device, predictions, feedback, first_at, last_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)))
    read: list[int] = []

    class Counting(StoreReader):
        def query(self, sql, params=()):
            table = super().query(sql, params)
            read.append(table.num_rows)
            return table

    detail = device_detail(Counting(server.app[STORE]), "pump-1", datetime.now(UTC), server.config.fleet)
    assert max(read) <= 2 * MAX_DEVICE_VERSIONS, read
    assert detail["versions_total"] == {"vibration": len(names["vibration"]), "other": 30}
    for model, listed in names.items():
        shown = [entry["model_version"] for entry in detail["versions"] if entry["model"] == model]
        assert set(shown) == set(sorted(listed, key=version_key)[-MAX_DEVICE_VERSIONS:]), model  # no tie at the cut
