"""Read-only SQL through both backends (the file directly, the running server): same answers, same refusals."""

from __future__ import annotations

import asyncio

import duckdb
import pytest

from edgeloop.errors import QueryFailed, QueryRefused
from edgeloop.ingest.admin import LocalAdmin, RemoteAdmin
from tests.ingest.conftest import make_config, make_table, seal, start_server

REFUSED = [
    "INSERT INTO devices VALUES ('x', 'y', now(), NULL)",
    "WITH t AS (SELECT 1) INSERT INTO batches SELECT * FROM batches",
    "UPDATE devices SET revoked_at = now()",
    "DELETE FROM batches",
    "CREATE TABLE evil (a INT)",
    "DROP TABLE batches",
    "ALTER TABLE batches ADD COLUMN x INT",
    "ATTACH '/tmp/other.duckdb' AS other",
    "COPY batches TO '/tmp/out.csv'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('/tmp/*.parquet')",
    "SELECT * FROM query('DELETE FROM batches')",
    "IMPORT DATABASE '/tmp'",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "RESET threads",
    "SELECT 1; DELETE FROM batches",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CHECKPOINT",
    "EXPLAIN ANALYZE DELETE FROM batches",
    "SELECT * FROM enable_logging(storage='file', storage_path='/tmp/edgeloop-log')",
    "SELECT * FROM enable_profiling()",
    "SELECT * FROM checkpoint()",
    "SELECT * FROM truncate_duckdb_logs()",
    "SELECT * FROM read_duckdb('/tmp/x.duckdb')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM duckdb_settings()",
    "SELECT current_setting('threads')",
    "SELECT write_log('x')",
]


@pytest.fixture(params=["local", "remote"])
async def admin(request, tmp_path, vibration):
    """A database with one landed batch, reached directly (server stopped) or through the server."""
    config = make_config(tmp_path)
    runner, url = await start_server(config)
    token = await asyncio.to_thread(RemoteAdmin(url, config.server.admin_token_file.read_text().strip()).add_device, "pump-1")
    import aiohttp

    table, _ = make_table(vibration, predictions=7)
    batch_id, body = seal(tmp_path, vibration, table)
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{url}/v1/batches/{batch_id}", data=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}) as response:
            assert response.status == 201
    if request.param == "local":
        await runner.cleanup()
        backend = LocalAdmin(config.store.db_path, read_only=True, timeout_s=10)
        yield backend
        backend.close()
    else:
        yield RemoteAdmin(url, config.server.admin_token_file.read_text().strip())
        await runner.cleanup()


async def test_select_answers_the_same_either_way(admin):
    """A SELECT returns the landed rows whether it runs on the file or through the server."""
    table = await asyncio.to_thread(admin.query, "SELECT count(*) AS n, sum(rows) AS rows FROM batches")
    assert table.to_pylist() == [{"n": 1, "rows": 7}]
    params = await asyncio.to_thread(admin.query, "SELECT count(*) AS n FROM vibration WHERE rpm >= ?", [3])
    assert params.to_pylist() == [{"n": 4}]


@pytest.mark.parametrize("sql", REFUSED)
async def test_writes_files_and_settings_are_refused(admin, sql):
    """Every statement that writes, attaches, touches files or changes settings is refused with a clear message."""
    with pytest.raises(QueryRefused) as info:
        await asyncio.to_thread(admin.query, sql)
    message = str(info.value)
    assert message.startswith("refused:"), message
    assert "\n" not in message
    again = await asyncio.to_thread(admin.query, "SELECT count(*) AS n FROM batches")
    assert again.to_pylist() == [{"n": 1}]


async def test_bad_sql_is_a_query_error(admin):
    """A syntax error, an unknown table or column is a QueryFailed that carries DuckDB's whole reason, hints included."""
    with pytest.raises(QueryFailed, match="no_such_table"):
        await asyncio.to_thread(admin.query, "SELECT * FROM no_such_table")
    with pytest.raises(QueryFailed, match='Did you mean "vibration"'):
        await asyncio.to_thread(admin.query, "SELECT * FROM vibraton")
    with pytest.raises(QueryFailed, match='Candidate bindings: .*"model"') as info:
        await asyncio.to_thread(admin.query, "SELECT modle FROM models")
    assert "\n" not in str(info.value)
    if isinstance(admin, LocalAdmin):  # translated at the boundary, the DuckDB error kept as the cause
        assert isinstance(info.value.__cause__, duckdb.Error)
    with pytest.raises(QueryFailed, match="parse|syntax"):
        await asyncio.to_thread(admin.query, "SELEC 1")
