"""A query that fails after its first rows were sent: the stream ends with the documented error tail, never looking whole."""

from __future__ import annotations

import asyncio
import os
import subprocess

import aiohttp
import orjson
import pyarrow as pa
import pytest
from aiohttp import web

from edgeloop.errors import QueryTooExpensive, StoreClosed, StoreError
from edgeloop.ingest.admin import RemoteAdmin
from edgeloop.ingest.app import STORE
from edgeloop.ingest.store import Store
from tests.ingest.conftest import (
    CLI,
    cli,
    free_port,
    make_config,
    spawn_server,
    start_server,
    stop_server,
    write_config,
)
from tests.sockets import listen_on_loopback

ARROW = "application/vnd.apache.arrow.stream"
# Its first 150,000 rows come at once (the first batch is sent within a quarter of a second); the rest
# scans a trillion rows for a hash that never matches, so the query runs on until it is stopped.
FAST_THEN_ENDLESS = "SELECT i FROM range(1000000000000) AS t(i) WHERE i < 150000 OR hash(i) = 0"
TIMEOUT_S = 3.0  # far above the first batch's quarter of a second, so the rows are sent before it bites


async def _serve(tmp_path, **store):
    config = make_config(tmp_path, store={"sql_max_result_rows": 10_000_000, **store})
    runner, url = await start_server(config)
    return runner, url, config.server.admin_token_file.read_text().strip()


async def _post(session, url, token, sql, accept):
    async with session.post(f"{url}/v1/sql", json={"sql": sql},
                            headers={"Authorization": f"Bearer {token}", "Accept": accept}) as response:
        return response.status, await response.read()


def _arrow_tail(body: bytes) -> tuple[int, dict[str, str]]:
    """The rows an Arrow IPC body holds and its last batch's custom metadata."""
    reader = pa.ipc.open_stream(body)
    rows, metadata = 0, {}
    while True:
        try:
            batch, custom = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            return rows, metadata
        rows += batch.num_rows
        metadata = {k.decode(): v.decode() for k, v in (custom or {}).items()}


async def test_a_timeout_after_the_first_rows_ends_the_stream_with_query_too_expensive(tmp_path):
    """A query stopped at sql_timeout_s after its first rows were sent ends with query_too_expensive and its limit in the tail (JSON and Arrow), never a result that looks whole."""
    runner, url, token = await _serve(tmp_path, sql_timeout_s=TIMEOUT_S)
    try:
        async with aiohttp.ClientSession() as session:
            status, raw = await _post(session, url, token, FAST_THEN_ENDLESS, "application/json")
            assert status == 200, raw[:300]
            body = orjson.loads(raw)
            assert len(body["rows"]) > 0 and body["truncated"] is True, {k: v for k, v in body.items() if k != "rows"}
            assert body["error"]["code"] == "query_too_expensive", body["error"]
            assert body["error"]["details"] == {"limit": "store.sql_timeout_s", "value": TIMEOUT_S}
            assert f"{TIMEOUT_S:g} s" in body["error"]["message"]

            status, raw = await _post(session, url, token, FAST_THEN_ENDLESS, ARROW)
            assert status == 200
            rows, tail = _arrow_tail(raw)
            assert rows > 0
            assert tail["edgeloop.error_code"] == "query_too_expensive", tail
            assert tail["edgeloop.limit"] == "store.sql_timeout_s" and float(tail["edgeloop.value"]) == TIMEOUT_S

        def read_all() -> int:
            result = RemoteAdmin(url, token).stream(FAST_THEN_ENDLESS)
            try:
                return sum(batch.num_rows for batch in result.batches)
            finally:
                result.close()

        with pytest.raises(QueryTooExpensive) as caught:
            await asyncio.to_thread(read_all)
        assert caught.value.limit == "store.sql_timeout_s" and caught.value.value == TIMEOUT_S
    finally:
        await runner.cleanup()


async def test_a_server_interrupt_after_the_first_rows_ends_the_stream_with_shutting_down(tmp_path):
    """A query the server stops (shutdown, compaction) after its first rows ends with shutting_down in the tail, which a client reads as retry-later, not as a wrong query."""
    runner, url, token = await _serve(tmp_path, sql_timeout_s=120)
    store = runner.app[STORE]
    try:
        for accept in ("application/json", ARROW):
            headers = {"Authorization": f"Bearer {token}", "Accept": accept}
            async with (aiohttp.ClientSession() as session,
                        session.post(f"{url}/v1/sql", json={"sql": FAST_THEN_ENDLESS}, headers=headers) as response):
                assert response.status == 200
                first = await response.content.readany()  # the first rows are here: the query is mid-stream
                assert first
                store.interrupt_readers()
                raw = first + await response.read()
            if accept == ARROW:
                rows, tail = _arrow_tail(raw)
                assert rows > 0 and tail["edgeloop.error_code"] == "shutting_down", tail
            else:
                body = orjson.loads(raw)
                assert body["rows"] and body["error"]["code"] == "shutting_down", body["error"]

        def read_all() -> None:
            result = RemoteAdmin(url, token).stream(FAST_THEN_ENDLESS)
            try:
                for number, _ in enumerate(result.batches):
                    if number == 0:
                        store.interrupt_readers()
            finally:
                result.close()

        with pytest.raises(StoreClosed):
            await asyncio.to_thread(read_all)
    finally:
        await runner.cleanup()


class _OutOfMemoryAfterFirstBatch(Store):
    """Injects the fault: a read cursor whose query runs out of memory once its first batch was read."""

    def cursor(self):
        return _Cursor(super().cursor())


class _Cursor:
    def __init__(self, cursor) -> None:
        self._cursor = cursor

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def execute(self, sql, params=None):
        result = self._cursor.execute(sql, params)
        return _Result(result) if sql.startswith("SELECT i FROM range") else result


class _Result:
    def __init__(self, result) -> None:
        self._result = result

    def to_arrow_reader(self, batch_rows):
        reader = self._result.to_arrow_reader(batch_rows)

        def batches():
            yield reader.read_next_batch()
            # What pyarrow raises when DuckDB fails while the stream is read: DuckDB's message in an OSError.
            raise OSError("Out of Memory Error: failed to allocate data of size 128.0 MiB (128.1 MiB/183.1 MiB used)")

        return pa.RecordBatchReader.from_batches(reader.schema, batches())


async def test_memory_running_out_after_the_first_rows_ends_the_stream_with_query_too_expensive(tmp_path):
    """A query that runs out of store.memory_limit_bytes after its first rows ends with query_too_expensive naming that limit."""
    config = make_config(tmp_path, store={"sql_max_result_rows": 10_000_000})
    runner, url = await start_server(config, store_class=_OutOfMemoryAfterFirstBatch)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession() as session:
            status, raw = await _post(session, url, token, FAST_THEN_ENDLESS, "application/json")
            body = orjson.loads(raw)
            assert status == 200 and body["rows"], body
            assert body["error"]["code"] == "query_too_expensive", body["error"]
            assert body["error"]["details"] == {"limit": "store.memory_limit_bytes", "value": None}
            status, raw = await _post(session, url, token, FAST_THEN_ENDLESS, ARROW)
            rows, tail = _arrow_tail(raw)
            assert rows > 0 and tail["edgeloop.error_code"] == "query_too_expensive"
            assert tail["edgeloop.limit"] == "store.memory_limit_bytes"
    finally:
        await runner.cleanup()


def _first_batch_ipc() -> bytes:
    """An Arrow IPC stream's schema and one batch of 1,000 rows, without the server's last batch or end of stream."""
    schema = pa.schema([("i", pa.int64())])
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, schema)
    writer.write_batch(pa.RecordBatch.from_pydict({"i": list(range(1_000))}, schema=schema))
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("cut", ["clean end", "connection dropped"])
async def test_a_stream_cut_before_its_last_batch_is_an_error_not_a_whole_result(cut):
    """An Arrow result that stops before the server's last batch (a clean end without it, or a dropped connection) raises StoreError, never reads as whole."""

    async def cut_short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": ARROW})
        await response.prepare(request)
        await response.write(_first_batch_ipc())
        if cut == "clean end":
            await response.write_eof()
        else:
            await asyncio.sleep(0.1)
            request.transport.abort()  # as a server killed mid-stream
        return response

    app = web.Application()
    app.router.add_post("/v1/sql", cut_short)
    runner = web.AppRunner(app)
    url = await listen_on_loopback(runner)

    def read_all() -> int:
        result = RemoteAdmin(url, "token").stream("SELECT i FROM t")
        try:
            return sum(batch.num_rows for batch in result.batches)
        finally:
            result.close()

    try:
        with pytest.raises(StoreError, match="not the whole result"):
            await asyncio.to_thread(read_all)
    finally:
        await runner.cleanup()


def test_the_cli_says_a_query_stopped_mid_stream_failed_in_one_line_and_leaves_no_whole_looking_output(tmp_path):
    """`edgeloop-ingest sql` whose query times out after its first rows exits 1 with one line naming the timeout: no row reaches stdout and no --out file is written."""
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text() + f"sql_timeout_s = {TIMEOUT_S}\nsql_max_result_rows = 10000000\n")
    server = spawn_server(config, tmp_path / "server.log")

    def sql(*args: str, remote: bool = True) -> subprocess.CompletedProcess:
        where = ["--url", f"http://127.0.0.1:{port}"] if remote else []
        return cli("sql", "--config", str(config), *where, *args, FAST_THEN_ENDLESS, check=False)

    try:
        runs = {fmt: sql("--format", fmt) for fmt in ("table", "json", "csv")}
        files = {fmt: sql("--format", fmt, "--out", str(tmp_path / f"out.{fmt}")) for fmt in ("json", "csv", "parquet")}
    finally:
        stop_server(server)
    runs["json, server stopped"] = sql("--format", "json", remote=False)  # the file opened directly: the same timeout
    for name, run in {**runs, **{f"--out {fmt}": run for fmt, run in files.items()}}.items():
        assert run.returncode == 1, (name, run.stderr)
        assert run.stderr.count("\n") == 1 and run.stderr.startswith("edgeloop-ingest: "), (name, run.stderr)
        assert f"longer than {TIMEOUT_S:g} s (store.sql_timeout_s)" in run.stderr, (name, run.stderr)
        assert "Traceback" not in run.stderr, (name, run.stderr)
        assert run.stdout == "", (name, "rows read before the timeout reached stdout")
    assert sorted(path.name for path in tmp_path.glob("*out*")) == [], "an --out file (or its temp file) was left"


# Its first 300,000 rows are fine; row 300,000 cannot be cast, so the query fails after DuckDB has produced rows.
FINE_THEN_FAILING = ("SELECT CASE WHEN i < 300000 THEN i ELSE CAST('x' || i::VARCHAR AS INTEGER) END AS v "
                     "FROM range(400000) AS t(i)")


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json", "table"])
def test_a_local_query_failing_after_its_first_rows_prints_nothing_and_one_line(tmp_path, fmt):
    """`edgeloop-ingest sql` on a stopped server's file whose query fails after its first rows exits 1 with one line, prints no row to stdout and leaves no spool file, in every format; one that succeeds prints it all and leaves no spool file either."""
    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))  # makes the database file
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    run = subprocess.run(
        [*CLI, "sql", "--config", str(config), "--format", fmt, "--out", "-", FINE_THEN_FAILING],
        capture_output=True, timeout=120, env={**os.environ, "TMPDIR": str(spool_dir)},
    )
    assert run.returncode == 1, run.stderr
    stderr = run.stderr.decode()
    assert stderr.count("\n") == 1 and stderr.startswith("edgeloop-ingest: ") and "Traceback" not in stderr, stderr
    assert "Could not convert" in stderr or "conversion" in stderr.lower(), stderr
    assert run.stdout == b"", f"{len(run.stdout)} bytes of a failed result reached stdout"
    assert list(spool_dir.iterdir()) == []
    whole = subprocess.run(
        [*CLI, "sql", "--config", str(config), "--format", fmt, "--out", "-", "SELECT i FROM range(300000) AS t(i)"],
        capture_output=True, timeout=120, env={**os.environ, "TMPDIR": str(spool_dir)},
    )
    assert whole.returncode == 0, whole.stderr
    assert b"(300000 rows" in whole.stdout if fmt == "table" else len(whole.stdout) > 300_000  # a table shows 10,000
    assert list(spool_dir.iterdir()) == []  # the process ends without teardown once the rows are out: the spool went first


def test_a_result_from_the_server_leaves_no_spool_file_in_any_format(tmp_path):
    """`edgeloop-ingest sql --url` prints the whole result to stdout in every format and leaves no spool file in TMPDIR."""
    port = free_port()
    config = write_config(tmp_path, port)
    server = spawn_server(config, tmp_path / "server.log")
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    try:
        for fmt in ("csv", "parquet", "json", "table"):
            run = subprocess.run(
                [*CLI, "sql", "--config", str(config), "--url", f"http://127.0.0.1:{port}", "--format", fmt, "--out", "-",
                 "SELECT i FROM range(1000) AS t(i)"],
                capture_output=True, timeout=120, env={**os.environ, "TMPDIR": str(spool_dir)},
            )
            assert run.returncode == 0 and run.stdout, (fmt, run.stderr)
            assert list(spool_dir.iterdir()) == [], fmt
    finally:
        stop_server(server)
