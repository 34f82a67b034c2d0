"""Admin SQL results: capped and saying so, streamed, on their own pool, and every value serializable."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest

from edgeloop.errors import QueryFailed, QueryTooExpensive
from edgeloop.ingest.admin import LocalAdmin, RemoteAdmin
from edgeloop.ingest.app import STATE, STORE
from edgeloop.ingest.export import Progress, interval_text
from edgeloop.ingest.fleet import StoreReader
from tests.ingest.conftest import Server, make_config, make_table, seal, start_server


async def _serve(tmp_path, **store):
    config = make_config(tmp_path, store=store)
    runner, url = await start_server(config)
    return runner, url, config


async def _post(session, url, token, sql, *, accept="application/json", export=False):
    async with session.post(f"{url}/v1/sql", json={"sql": sql, "export": export},
                            headers={"Authorization": f"Bearer {token}", "Accept": accept}) as response:
        return response.status, await response.json(content_type=None) if accept == "application/json" else await response.read()


async def test_results_are_capped_by_rows_and_bytes_and_say_so(tmp_path):
    """A result over sql_max_result_rows or _bytes is cut there and says truncated (JSON and Arrow); an export is not cut."""
    runner, url, config = await _serve(tmp_path, sql_max_result_rows=1_000, sql_max_result_bytes=200_000)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await _post(session, url, token, "SELECT i FROM range(5000) AS t(i)")
            assert status == 200 and len(body["rows"]) == 1_000 and body["truncated"] is True
            assert "sql_max_result_rows" in body["reason"]
            status, body = await _post(session, url, token, "SELECT i FROM range(10) AS t(i)")
            assert status == 200 and len(body["rows"]) == 10 and body["truncated"] is False
            status, body = await _post(session, url, token, "SELECT repeat('x', 1000) AS s FROM range(900)")
            assert status == 200 and 0 < len(body["rows"]) < 900 and body["truncated"] is True
            assert "sql_max_result_bytes" in body["reason"]
        remote = RemoteAdmin(url, token)

        def read(export: bool):
            result = remote.stream("SELECT i FROM range(5000) AS t(i)", export=export)
            return sum(batch.num_rows for batch in result.batches), result

        rows, capped = await asyncio.to_thread(read, False)
        assert rows == 1_000 and capped.truncated and "sql_max_result_rows" in capped.truncated_reason
        rows, whole = await asyncio.to_thread(read, True)
        assert rows == 5_000 and not whole.truncated
    finally:
        await runner.cleanup()


VALUES_SQL = (
    "SELECT 'infinity'::TIMESTAMP AS t, '-infinity'::TIMESTAMPTZ AS tz, DATE '294000-01-01' AS d, "
    "'infinity'::DATE AS di, INTERVAL '1 month 2 days 3 hours' AS i, map(['a'], [1]) AS m, {'x': 1} AS s, "
    "TIMESTAMPTZ '2025-06-01 12:00:00+00' AS ok"
)


async def test_json_results_hold_infinite_and_far_dates(tmp_path):
    """JSON results with 'infinity'::TIMESTAMP, DATE '294000-01-01', intervals and maps serialize instead of 500."""
    runner, url, config = await _serve(tmp_path)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await _post(session, url, token, VALUES_SQL)
            assert status == 200, body
            assert body["rows"] == [{
                "t": "infinity", "tz": "-infinity", "d": "294000-01-01", "di": "infinity",
                "i": "1 month 2 days 03:00:00", "m": {"a": 1}, "s": {"x": 1}, "ok": "2025-06-01T12:00:00+00:00",
            }]
            status, body = await _post(session, url, token, VALUES_SQL, accept="application/vnd.apache.arrow.stream")
            assert status == 200 and body
    finally:
        await runner.cleanup()


async def test_uploads_land_while_the_query_pool_is_full(tmp_path, vibration):
    """With every query slot busy on long queries, an upload still lands and one more query gets 429."""
    runner, url, config = await _serve(tmp_path, sql_max_concurrent=2, sql_timeout_s=120)
    token = config.server.admin_token_file.read_text().strip()
    state = runner.app[STATE]
    try:
        async with aiohttp.ClientSession() as session:
            server = Server(url, config, session, runner.app)
            device = await server.add_device("pump-1")
            slow = "SELECT count(*) AS n FROM range(1000000000000) AS a(i) WHERE i % 7 = 3"
            queries = [asyncio.create_task(_post(session, url, token, slow)) for _ in range(2)]
            while state.sql_running < 2:
                await asyncio.sleep(0.01)
            status, body = await _post(session, url, token, "SELECT 1 AS x")
            assert status == 429 and body["error"]["code"] == "busy"
            table, _ = make_table(vibration, predictions=5)
            batch_id, batch = seal(tmp_path, vibration, table)
            landed, _, _ = await server.put(batch_id, batch, device)
            assert landed == 201
            assert not any(query.done() for query in queries), "the upload waited for the queries"
            assert state.sql_running == 2
    finally:
        await runner.cleanup()  # interrupts the running queries
    for query in queries:
        query.cancel()
    await asyncio.gather(*queries, return_exceptions=True)


async def test_export_is_not_cut_off_by_the_sql_timeout(tmp_path):
    """A query longer than sql_timeout_s is stopped, but the same rows as an export stream to the end."""
    config = make_config(tmp_path, store={"sql_timeout_s": 0.05})
    runner, _ = await start_server(config)
    await runner.cleanup()
    admin = LocalAdmin(config.store.db_path, read_only=True, timeout_s=0.05)
    slow = "SELECT i FROM range(30000000) AS t(i) WHERE hash(i) % 1000 = 0"
    try:

        def count(export: bool) -> int:
            return sum(batch.num_rows for batch in admin.stream(slow, export=export).batches)

        with pytest.raises(QueryFailed, match="longer than 0.05 s"):
            await asyncio.to_thread(count, False)
        assert await asyncio.to_thread(count, True) > 20_000
    finally:
        admin.close()


ENDLESS = "SELECT count(*) FROM range(1000000000000)"


async def test_a_query_past_the_timeout_is_too_expensive_not_a_wrong_query(tmp_path):
    """A query stopped at store.sql_timeout_s is 422 query_too_expensive naming the setting (API, CLI client, dashboard reader); a wrong one stays 400 query_failed."""
    runner, url, config = await _serve(tmp_path, sql_timeout_s=0.2)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await _post(session, url, token, ENDLESS)
            assert status == 422, body
            assert body["error"]["code"] == "query_too_expensive"
            assert body["error"]["details"] == {"limit": "store.sql_timeout_s", "value": 0.2}
            assert "0.2 s" in body["error"]["message"]
            status, body = await _post(session, url, token, "SELEC 1")
            assert status == 400 and body["error"]["code"] == "query_failed"
        with pytest.raises(QueryTooExpensive) as caught:
            await asyncio.to_thread(RemoteAdmin(url, token).query, ENDLESS)
        assert caught.value.limit == "store.sql_timeout_s"
        with pytest.raises(QueryTooExpensive):
            await asyncio.to_thread(StoreReader(runner.app[STORE], 0.2, trusted=True).query, ENDLESS)
    finally:
        await runner.cleanup()


async def test_a_query_the_server_interrupts_is_503_not_the_senders_fault(tmp_path):
    """A query the server stops (as shutdown and compaction do) is 503 shutting_down with Retry-After, not 400 query_failed."""
    runner, url, config = await _serve(tmp_path, sql_timeout_s=120)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            query = asyncio.create_task(_post(session, url, token, ENDLESS))
            while not query.done():  # until the query has started and the interrupt reached it
                runner.app[STORE].interrupt_readers()
                await asyncio.wait([query], timeout=0.1)
            status, body = query.result()
        assert status == 503, body
        assert body["error"]["code"] == "shutting_down" and body["error"]["details"]["retry_after_s"] >= 1
    finally:
        await runner.cleanup()


def test_intervals_print_as_duckdb_does():
    """Intervals are printed readably (as DuckDB prints them), never as MonthDayNano(...)."""
    import pyarrow as pa

    def text(months, days, nanos):
        return interval_text(pa.MonthDayNano([months, days, nanos]))

    assert text(14, 3, 4 * 3_600_000_000_000 + 500_000_000) == "1 year 2 months 3 days 04:00:00.5"
    assert text(0, 1, 0) == "1 day"
    assert text(0, 0, 0) == "00:00:00"
    assert text(0, -2, -60_000_000_000) == "-2 days -00:01:00"


def test_progress_shows_rows_and_a_bar_when_the_total_is_known():
    """The progress line counts rows written, and draws a bar with a percentage when the total is known."""
    sink = io.StringIO()
    progress = Progress(sink, total=200, interval_s=0)
    progress.add(50)
    progress.finish()
    assert "50/200 rows" in sink.getvalue() and "25%" in sink.getvalue() and "#" in sink.getvalue()
    unknown = io.StringIO()
    progress = Progress(unknown, interval_s=0)
    progress.add(1234)
    assert "1,234 rows written" in unknown.getvalue()


def test_terminal_table_prints_intervals_and_nested_values_readably():
    """The terminal table shows intervals as DuckDB does and maps/structs as JSON, never MonthDayNano(...)."""
    import duckdb

    from edgeloop.ingest.export import ResultStream, write_result

    con = duckdb.connect()
    table = con.execute("SELECT INTERVAL '1 day 2 hours' AS i, map(['a'], [1]) AS m, {'x': 1} AS s").to_arrow_table()
    out = io.StringIO()
    write_result(ResultStream.of(table), "table", None, out)
    text = out.getvalue()
    assert "1 day 02:00:00" in text and '{"a":1}' in text and '{"x":1}' in text and "MonthDayNano" not in text


async def test_a_query_whose_client_went_away_is_stopped_and_frees_its_slot(tmp_path):
    """An export (never timed out) or a query whose client disconnects before its first row is interrupted, and its slot serves the next query."""
    runner, url, config = await _serve(tmp_path, sql_max_concurrent=2, sql_timeout_s=120)
    token = config.server.admin_token_file.read_text().strip()
    state = runner.app[STATE]
    endless = "SELECT count(*) AS n FROM range(1000000000000000) AS a(i) WHERE i % 7 = 3"
    try:
        for export in (True, False):
            async with aiohttp.ClientSession() as session:
                task = asyncio.create_task(_post(session, url, token, endless, export=export))
                while state.sql_running < 1:
                    await asyncio.sleep(0.01)
                task.cancel()  # the client closes its connection mid-query
                await asyncio.gather(task, return_exceptions=True)
            for _ in range(1000):
                if state.sql_running == 0:
                    break
                await asyncio.sleep(0.01)
            assert state.sql_running == 0, f"the abandoned {'export' if export else 'query'} still holds its slot"
        async with aiohttp.ClientSession() as session:
            assert await _post(session, url, token, "SELECT 1 AS x") == (200, {"columns": ["x"], "rows": [{"x": 1}], "truncated": False, "row_count": 1})
    finally:
        await runner.cleanup()


async def test_a_result_type_arrow_cannot_send_is_a_400_before_any_byte_and_frees_its_slot(tmp_path):
    """A result whose type Arrow IPC cannot write (a UNION) is 400 query_failed at once; the query's slot is free after."""
    runner, url, config = await _serve(tmp_path, sql_max_concurrent=1)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            status, body = await _post(session, url, token, "SELECT union_value(k := 1) AS u",
                                        accept="application/vnd.apache.arrow.stream")
            assert status == 400, body
            error = __import__("json").loads(body)["error"]
            assert error["code"] == "query_failed" and "union" in error["message"].lower()
            assert runner.app[STATE].sql_running == 0
            assert (await _post(session, url, token, "SELECT 1 AS x"))[0] == 200
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("accept", ["application/json", "application/vnd.apache.arrow.stream"])
async def test_a_stream_whose_encoder_fails_twice_ends_and_frees_its_slot(tmp_path, monkeypatch, accept):
    """If a result's encoder fails mid-stream and again while writing the error, the response still ends and the slot frees."""
    from edgeloop.ingest import app as app_module

    encoder = app_module._JsonEncoder if accept == "application/json" else app_module._ArrowEncoder
    batch, end, calls = encoder.batch, encoder.end, []

    def failing_batch(self, record_batch):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("injected: the encoder broke mid-stream")
        return batch(self, record_batch)

    def failing_end(self, rows, note, error=None):
        if calls:  # mid-stream only: the up-front check of the result's types writes an end too
            raise RuntimeError("injected: the encoder cannot write its end")
        return end(self, rows, note, error)

    monkeypatch.setattr(encoder, "batch", failing_batch)
    monkeypatch.setattr(encoder, "end", failing_end)
    runner, url, config = await _serve(tmp_path, sql_max_concurrent=1)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(30):
            try:  # the stream is cut: the client sees a broken transfer, never a clean result
                status, _ = await _post(session, url, token, "SELECT i FROM range(300000) AS t(i)", accept=accept)
            except (aiohttp.ClientPayloadError, ValueError):
                pass
            else:
                raise AssertionError(f"a broken stream read as a whole {status} result")
            for _ in range(500):
                if runner.app[STATE].sql_running == 0:
                    break
                await asyncio.sleep(0.01)
            assert runner.app[STATE].sql_running == 0, "the broken stream still holds its query slot"
    finally:
        await runner.cleanup()


async def test_json_results_hold_integers_past_64_bits(tmp_path):
    """A HUGEINT or DECIMAL(38, 0) past 64 bits is exact text in a JSON result (a small one stays a number), not an error."""
    runner, url, config = await _serve(tmp_path)
    token = config.server.admin_token_file.read_text().strip()
    huge, wide = "170141183460469231731687303715884105727", "-12345678901234567890123456789012345678"
    sql = f"SELECT {huge}::HUGEINT AS h, {wide}::DECIMAL(38, 0) AS d, 5::HUGEINT AS small"
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await _post(session, url, token, sql)
            assert status == 200 and body["truncated"] is False, body
            assert body["rows"] == [{"h": huge, "d": wide, "small": 5}]
    finally:
        await runner.cleanup()
