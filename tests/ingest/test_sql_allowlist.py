"""The admin SQL allow-list: every table function DuckDB has is refused and changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from edgeloop.errors import QueryRefused
from edgeloop.ingest.admin import LocalAdmin
from edgeloop.ingest.app import STORE
from edgeloop.ingest.sql_functions import ALLOWED_FUNCTIONS, ALLOWED_TABLE_FUNCTIONS, EXCLUDED
from tests.ingest.conftest import Server, make_config, make_table, seal, start_server

PARQUET = "application/vnd.apache.parquet"


def _catalog() -> list[tuple[str, str, list[str], list[str]]]:
    """(name, kind, parameter names, parameter types) of every function overload the pinned DuckDB has."""
    con = duckdb.connect()
    rows = con.execute(
        "SELECT function_name, function_type, parameters, parameter_types FROM duckdb_functions() ORDER BY ALL"
    ).fetchall()
    con.close()
    return [(name, kind, list(params or []), list(types or [])) for name, kind, params, types in rows]


def _argument(name: str, kind: str, where: Path) -> str:
    kind = (kind or "ANY").upper()
    if kind in ("VARCHAR", "ANY") or "path" in name or "file" in name:
        return f"'{where / 'fuzz-target'}'"
    if kind in ("BIGINT", "INTEGER", "UBIGINT", "DOUBLE", "HUGEINT", "SMALLINT", "TINYINT", "FLOAT"):
        return "1"
    if kind == "BOOLEAN":
        return "true"
    if kind == "TABLE":
        return "(SELECT 1)"
    if kind.endswith("[]"):
        return f"['{where / 'fuzz-target'}']"
    return "NULL"


def _calls(where: Path) -> list[str]:
    """Every table, pragma and table-macro function called as an attacker would, in several positions."""
    calls: set[str] = {
        f"enable_logging(storage='file', storage_path='{where / 'log'}')",
        f"enable_profiling(output='{where / 'profile.json'}')",
        "enable_logging()", "checkpoint()", "force_checkpoint()", "truncate_duckdb_logs()",
        f"read_duckdb('{where / 'ingest.duckdb'}')", "query('SELECT 1')", "query_table('batches')",
    }
    for name, kind, params, types in _catalog():
        if kind not in ("table", "table_macro", "pragma") or name in ALLOWED_TABLE_FUNCTIONS:
            continue
        args = ", ".join(_argument(p, t, where) for p, t in zip(params, types + ["ANY"] * len(params)))
        calls.add(f"{name}({args})")
        calls.add(f"{name}()")
    return sorted(calls)


def _wrappers(call: str) -> list[str]:
    return [
        f"SELECT * FROM {call}",
        f"SELECT {call}",
        f"WITH c AS (SELECT * FROM {call}) SELECT * FROM c",
        f"SELECT * FROM batches WHERE EXISTS (SELECT * FROM {call})",
        f"SELECT * FROM batches, LATERAL (SELECT * FROM {call}) AS x",
        f"SELECT (SELECT count(*) FROM {call}) AS n UNION ALL SELECT 1",
        f"CALL {call}",
    ]


def _state(server: Server, where: Path) -> dict[str, Any]:
    cursor = server.app[STORE].cursor()
    settings = dict(cursor.execute("SELECT name, value FROM duckdb_settings()").fetchall())
    files = sorted(str(p.relative_to(where)) for p in where.rglob("*") if not p.name.endswith(".wal"))
    return {"settings": settings, "files": files}


@pytest.fixture
async def server(tmp_path, vibration):
    config = make_config(tmp_path)
    runner, url = await start_server(config)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        served = Server(url, config, session, runner.app)
        yield served
    await runner.cleanup()


async def _land(server: Server, where: Path, vibration, token: str, rows: int = 3) -> int:
    table, _ = make_table(vibration, predictions=rows)
    batch_id, body = seal(where, vibration, table)
    status, _, _ = await server.put(batch_id, body, token)
    return status


async def test_every_table_function_is_refused_and_leaves_the_server_unchanged(server, tmp_path, vibration):
    """Every table, pragma and table-macro function DuckDB lists, in every position, gets a 4xx and changes nothing."""
    token = await server.add_device("pump-1")
    assert await _land(server, tmp_path / "a", vibration, token) == 201
    before = _state(server, tmp_path)
    headers = {"Authorization": f"Bearer {server.admin_token}", "Accept": "application/json"}
    statuses: dict[int, int] = {}
    for call in _calls(tmp_path):
        for sql in _wrappers(call):
            async with server.session.post(f"{server.url}/v1/sql", json={"sql": sql}, headers=headers) as response:
                body = await response.json()
                if sql == f"SELECT {call}" and call.split("(")[0] in ALLOWED_FUNCTIONS:
                    continue  # a scalar of the same name (repeat, range, histogram): pure, may answer
                assert response.status in (400, 403), (sql, response.status, body)
                assert set(body["error"]) == {"code", "message", "details"} and "\n" not in body["error"]["message"], sql
                statuses[response.status] = statuses.get(response.status, 0) + 1
    assert statuses.get(403, 0) > 500, statuses
    assert _state(server, tmp_path) == before
    async with server.session.get(f"{server.url}/healthz") as response:
        assert response.status == 200
    assert await _land(server, tmp_path / "b", vibration, token) == 201
    assert await server.sql("SELECT count(*) AS n FROM vibration") == [{"n": 6}]


async def test_excluded_scalar_functions_are_refused(server):
    """Scalar functions with side effects or that read server state (write_log, current_setting, nextval...) are refused."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    for name in sorted(EXCLUDED):
        async with server.session.post(f"{server.url}/v1/sql", json={"sql": f"SELECT {name}('x')"}, headers=headers) as response:
            body = await response.json()
            assert response.status == 403, (name, body)
            assert name in body["error"]["message"]


async def test_pure_queries_still_answer(server):
    """CTEs, joins, window functions, set operations, VALUES, DESCRIBE, typed constants and casts and range()/unnest() pass."""
    queries = {
        "WITH c AS (SELECT 1 AS a) SELECT a FROM c": [{"a": 1}],
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT sum(n) AS s FROM r": [{"s": 6}],
        "SELECT count(*) AS n FROM range(5) AS t(x) JOIN (VALUES (1), (2)) AS v(y) ON x = y": [{"n": 2}],
        "SELECT x, row_number() OVER (ORDER BY x DESC) AS r FROM generate_series(1, 2) AS g(x) ORDER BY x": [
            {"x": 1, "r": 2}, {"x": 2, "r": 1}],
        "SELECT unnest([1, 2]) AS u EXCEPT SELECT 2": [{"u": 1}],
        "SELECT lower('A') AS l, list_transform([1], x -> x + 1) AS t, {'a': 1}.a AS s": [{"l": "a", "t": [2], "s": 1}],
        "SELECT count(*) AS n FROM (DESCRIBE batches)": [{"n": 18}],  # the ledger has `erased` too
        "SELECT 0.5 * 3 AS d, CAST('1.25' AS DECIMAL(10, 2)) AS m, [1]::INTEGER[] AS l, {'a': 1}::STRUCT(a INT) AS s": [
            {"d": 1.5, "m": 1.25, "l": [1], "s": {"a": 1}}],
    }
    for sql, expected in queries.items():
        assert await server.sql(sql) == expected, sql


async def test_cli_on_a_stopped_server_cannot_checkpoint_or_log(tmp_path, vibration):
    """With the server stopped, the CLI's direct path refuses checkpoint() and enable_logging and leaves the file as it was."""
    config = make_config(tmp_path)
    runner, url = await start_server(config)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        served = Server(url, config, session, runner.app)
        token = await served.add_device("pump-1")
        assert await _land(served, tmp_path / "a", vibration, token) == 201
    await runner.cleanup()
    db = config.store.db_path
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    files = sorted(tmp_path.rglob("*"))
    admin = LocalAdmin(db, read_only=True, timeout_s=10)
    try:
        for sql in ("SELECT * FROM checkpoint()", "SELECT * FROM force_checkpoint()",
                    f"SELECT * FROM enable_logging(storage='file', storage_path='{tmp_path / 'log'}')",
                    f"SELECT * FROM enable_profiling(output='{tmp_path / 'p.json'}')"):
            with pytest.raises(QueryRefused, match="allow-list"):
                await asyncio.to_thread(admin.query, sql)
        assert (await asyncio.to_thread(admin.query, "SELECT count(*) AS n FROM vibration")).to_pylist() == [{"n": 3}]
    finally:
        admin.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sorted(tmp_path.rglob("*")) == files


def test_allowlist_names_every_duckdb_function():
    """Each scalar, aggregate and macro of DuckDB's main schema is either allowed or excluded with a reason, and each allowed one exists."""
    con = duckdb.connect()
    known = {row[0] for row in con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_type IN ('scalar', 'aggregate', 'macro') "
        "AND database_name = 'system' AND schema_name = 'main'"
    ).fetchall()}
    con.close()
    unreviewed = {name for name in known - ALLOWED_FUNCTIONS - set(EXCLUDED) if not name.startswith("__internal")}
    assert not unreviewed, f"new DuckDB functions to review in ingest/sql_functions.py: {sorted(unreviewed)}"
    assert ALLOWED_FUNCTIONS - known <= {"unnest"}
    assert not ALLOWED_FUNCTIONS & set(EXCLUDED)


# Each asks DuckDB for gigabytes in one value or one call, outside its memory limit (measured
# under a 3 GB address-space limit: bad_alloc or gigabytes of RSS from a one-row query).
AMPLIFIERS = [
    "SELECT length(repeat('x', 4000000000)) AS n",
    "SELECT len(range(3000000000)) AS n",
    "SELECT len(generate_series(1, 3000000000)) AS n",
    "SELECT len(range(0, 3000000000, 1)) AS n",
    "SELECT length(lpad('x', 2000000000, 'y')) AS n",
    "SELECT length(rpad('x', 2000000000, 'y')) AS n",
    "SELECT len(list_resize([1], 2000000000)) AS n",
    "SELECT len(array_resize([1], 2000000000, 7)) AS n",
    "SELECT length(printf('%2000000000d', 1)) AS n",
    "SELECT length(printf('%.2000000000f', 1.5)) AS n",
    "SELECT length(printf('%*d', 2000000000, 1)) AS n",
    "SELECT length(format('{:>2000000000}', 1)) AS n",
    "SELECT length(format('{:>{}}', 'x', 2000000000)) AS n",
    "SELECT length(printf(s, 1)) AS n FROM (VALUES ('%9d')) AS t(s)",
    "SELECT len(equi_width_bins(0, i, 999999, false)) AS n FROM range(3000) AS t(i)",
    "SELECT damerau_levenshtein(repeat('a', 4000), repeat('b', 4000)) AS n",
    "SELECT length(json_pretty(repeat('[', 4000) || repeat(']', 4000))) AS n",
    "SELECT length(bitstring('1', 2000000000)) AS n",
    "SELECT length(repeat(s, 2)) AS n FROM (VALUES ('x')) AS t(s)",
    "SELECT length(repeat(repeat('x', 4096), 4096)) AS n",
    "SELECT len(list_transform(range(4096), x -> repeat('y', 4096))) AS n",
    "SELECT len([range(4096) for x in range(4096)]) AS n",
    "SELECT len(range(n)) AS n FROM (VALUES (3000000000)) AS t(n)",
    "SELECT length(repeat('x', ?)) AS n",
]


async def test_functions_that_size_a_value_by_an_argument_are_bounded_before_they_run(server, tmp_path, vibration):
    """A call whose result's size an argument sets (repeat, range, lpad, printf widths...) is refused unless that size is a small constant."""
    token = await server.add_device("pump-1")
    headers = {"Authorization": f"Bearer {server.admin_token}", "Accept": "application/json"}
    for sql in AMPLIFIERS:
        payload = {"sql": sql, "params": [4000000000] if "?" in sql else []}
        async with server.session.post(f"{server.url}/v1/sql", json=payload, headers=headers) as response:
            body = await response.json()
        assert response.status == 403, (sql, response.status, body)
        assert body["error"]["code"] == "read_only" and "\n" not in body["error"]["message"], body
    assert await _land(server, tmp_path / "a", vibration, token) == 201


async def test_small_constant_sizes_still_answer(server):
    """Padding, repeating, formatting and generating lists with small constant sizes answer as DuckDB does."""
    queries = {
        "SELECT lpad('7', 3, '0') AS p, rpad('a', 2, '.') AS r, repeat('ab', 3) AS x, repeat([1], 2) AS l": [
            {"p": "007", "r": "a.", "x": "ababab", "l": [1, 1]}],
        "SELECT range(3) AS a, generate_series(1, 3) AS b, range(0, 10, 5) AS c, list_resize([1], 2, 0) AS d": [
            {"a": [0, 1, 2], "b": [1, 2, 3], "c": [0, 5], "d": [1, 0]}],
        "SELECT printf('%05.1f|%-3d|%%', 1.5, 7) AS p, format('{:>4}|{}', 'x', 12345678) AS f": [
            {"p": "001.5|7  |%", "f": "   x|12345678"}],
        "SELECT lpad(CAST(x AS VARCHAR), 4, '0') AS p FROM range(2) AS t(x) ORDER BY x": [{"p": "0000"}, {"p": "0001"}],
        "SELECT levenshtein('kitten', 'sitting') AS d, unnest(range(2)) AS u": [{"d": 3, "u": 0}, {"d": 3, "u": 1}],
    }
    for sql, expected in queries.items():
        assert await server.sql(sql) == expected, sql
