"""Result types DuckDB's Arrow gets wrong (UHUGEINT, HUGEINT's extremes, TIMETZ, BIT, BIGNUM) come out exact in every format, or not at all."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.ingest.conftest import cli, make_config, start_server, write_config

pytestmark = pytest.mark.timeout(180)

U_MAX = 2**128 - 1
H_MAX = 2**127 - 1
H_MIN = -(2**127)
WIDE_SQL = (f"SELECT {U_MAX}::UHUGEINT AS u_max, 5::UHUGEINT AS u_small, {H_MAX}::HUGEINT AS h_max, "
            f"({H_MIN})::HUGEINT AS h_min, [{U_MAX}::UHUGEINT] AS u_list")
EXACT = {"u_max": str(U_MAX), "u_small": 5, "h_max": str(H_MAX), "h_min": str(H_MIN), "u_list": f"[{U_MAX}]"}


async def _json_and_arrow(tmp_path, sql: str) -> tuple[list[dict], pa.Table]:
    """``sql`` through POST /v1/sql of a fresh server, once as JSON (its rows) and once as an Arrow stream."""
    config = make_config(tmp_path)
    runner, url = await start_server(config)
    token = config.server.admin_token_file.read_text().strip()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
            async with session.post(f"{url}/v1/sql", json={"sql": sql}, headers={"Accept": "application/json"}) as response:
                assert response.status == 200, await response.text()
                rows = (await response.json())["rows"]
            async with session.post(f"{url}/v1/sql", json={"sql": sql}) as response:
                assert response.status == 200, await response.text()
                return rows, pa.ipc.open_stream(await response.read()).read_all()
    finally:
        await runner.cleanup()


async def test_sql_over_http_gives_wide_integers_exactly_in_json_and_arrow(tmp_path):
    """POST /v1/sql writes UHUGEINT's maximum and HUGEINT's extremes exactly: JSON as digits, Arrow as text or decimal."""
    rows, table = await _json_and_arrow(tmp_path, WIDE_SQL)
    assert rows == [EXACT]
    row = table.to_pylist()[0]
    assert row["u_max"] == str(U_MAX) and int(row["u_small"]) == 5 and row["u_list"] == f"[{U_MAX}]"
    assert int(row["h_max"]) == H_MAX and int(row["h_min"]) == H_MIN
    assert table.schema.field("u_max").metadata == {b"edgeloop.duckdb_type": b"UHUGEINT"}


def _database(tmp_path) -> str:
    """A server's database file (its tables made), the server stopped."""

    async def made() -> str:
        config = make_config(tmp_path)
        runner, _ = await start_server(config)
        await runner.cleanup()
        return str(config.store.db_path)

    return asyncio.run(made())


@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_the_sql_command_writes_wide_integers_exactly(tmp_path, fmt):
    """``sql --format csv|json|table`` on the file writes UHUGEINT's maximum and HUGEINT's extremes exactly."""
    db = _database(tmp_path)
    out = tmp_path / f"out.{fmt}"
    result = cli("sql", WIDE_SQL, "--db", db, "--format", fmt, "--out", str(out), check=False)
    assert result.returncode == 0, result.stderr
    if fmt == "csv":
        values = next(csv.DictReader(io.StringIO(out.read_text())))
    elif fmt == "json":
        values = {key: str(value) for key, value in json.loads(out.read_text()).items()}
    else:
        text = out.read_text()
        assert all(str(number) in text for number in (U_MAX, H_MAX, H_MIN)), text
        return
    assert values == {key: str(value) for key, value in EXACT.items()}


def test_the_sql_command_writes_wide_integers_to_parquet_exactly_or_not_at_all(tmp_path):
    """Parquet from the file holds UHUGEINT's maximum as digits and a 38-digit HUGEINT exactly; one past 38 digits is refused."""
    db = _database(tmp_path)
    out = tmp_path / "out.parquet"
    near = 10**38 - 1  # the most DECIMAL(38, 0), the type the server's stream gives a HUGEINT, holds
    result = cli("sql", f"SELECT {U_MAX}::UHUGEINT AS u_max, ({-near})::HUGEINT AS h, [{U_MAX}::UHUGEINT] AS u_list",
                 "--db", db, "--format", "parquet", "--out", str(out), check=False)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(out).to_pylist() == [{"u_max": str(U_MAX), "h": -near, "u_list": f"[{U_MAX}]"}]
    out.unlink()
    result = cli("sql", f"SELECT {H_MAX}::HUGEINT AS h", "--db", db, "--format", "parquet", "--out", str(out), check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1 and "DECIMAL" in result.stderr
    assert not out.exists()  # not a DOUBLE rounded to 1.7014118346046923e+38


def test_the_sql_command_through_the_server_writes_wide_integers_exactly(tmp_path):
    """``sql --url`` (the server's Arrow stream) writes UHUGEINT's maximum exactly as CSV, as the file path does.

    HUGEINT's minimum is left out: DuckDB reads -2^127 back from Arrow as an error ("Negation of HUGEINT is out of
    range"), so that one value is refused with a one-line error instead of written.
    """

    async def run() -> str:
        config = make_config(tmp_path)
        runner, url = await start_server(config)
        try:
            config_path = write_config(tmp_path, 0)
            result = await asyncio.to_thread(cli, "sql", WIDE_SQL.replace(f"({H_MIN})", f"({H_MIN + 1})"), "--config", str(config_path), "--url", url,
                                             "--admin-token-file", str(config.server.admin_token_file), "--format", "csv",
                                             check=False)
        finally:
            await runner.cleanup()
        assert result.returncode == 0, result.stderr
        return result.stdout

    values = next(csv.DictReader(io.StringIO(asyncio.run(run()))))
    assert values == {key: str(value) for key, value in EXACT.items()} | {"h_min": str(H_MIN + 1)}


ODD_SQL = ("SELECT TIMETZ '12:00:00+05' AS tz, '0101'::BIT AS bits, "
           "'123456789012345678901234567890123456789012345'::BIGNUM AS big, TIME '24:00:00' AS end_of_day, "
           "99999999999999999999999999.123456789012::DECIMAL(38, 12) AS fine, 0.125::DECIMAL(10, 3) AS plain, "
           "[TIMETZ '01:02:03-03:30'] AS tzs")
ODD = {"tz": "12:00:00+05", "bits": "0101", "big": "123456789012345678901234567890123456789012345",
       "end_of_day": "24:00:00", "fine": "99999999999999999999999999.123456789012", "plain": 0.125,
       "tzs": "['01:02:03-03:30']"}


async def test_types_duckdbs_arrow_gets_wrong_come_out_as_duckdb_spells_them(tmp_path):
    """A TIMETZ keeps its offset, a BIT its bits, a BIGNUM its digits, TIME '24:00:00' its hour, a 38-digit decimal its digits."""
    rows, table = await _json_and_arrow(tmp_path, ODD_SQL)
    assert rows == [ODD]
    row = table.to_pylist()[0]
    assert {key: row[key] for key in ("tz", "bits", "big", "tzs")} == {key: ODD[key] for key in ("tz", "bits", "big", "tzs")}
    assert table.schema.field("tz").metadata == {b"edgeloop.duckdb_type": b"TIME WITH TIME ZONE"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_sql_command_writes_those_types_as_duckdb_spells_them(tmp_path, fmt):
    """``sql --format csv|parquet`` on the file writes a TIMETZ, BIT and BIGNUM as DuckDB's text, as the stream does."""
    db = _database(tmp_path)
    out = tmp_path / f"out.{fmt}"
    sql = "SELECT TIMETZ '12:00:00+05' AS tz, '0101'::BIT AS bits, '123456789012345678901234567890'::BIGNUM AS big"
    result = cli("sql", sql, "--db", db, "--format", fmt, "--out", str(out), check=False)
    assert result.returncode == 0, result.stderr
    row = pq.read_table(out).to_pylist()[0] if fmt == "parquet" else next(csv.DictReader(io.StringIO(out.read_text())))
    assert row == {"tz": "12:00:00+05", "bits": "0101", "big": "123456789012345678901234567890"}


def _sql_through_server(tmp_path, *queries: tuple[str, str]) -> list:
    """Each (sql, format) through ``sql --url`` of one fresh server, to stdout: the finished processes."""

    async def run() -> list:
        config = make_config(tmp_path)
        runner, url = await start_server(config)
        try:
            config_path = write_config(tmp_path, 0)
            return [await asyncio.to_thread(cli, "sql", sql, "--config", str(config_path), "--url", url, "--admin-token-file",
                                            str(config.server.admin_token_file), "--format", fmt, check=False)
                    for sql, fmt in queries]
        finally:
            await runner.cleanup()

    return asyncio.run(run())


def test_the_sql_command_through_the_server_writes_hugeints_minimum_as_csv(tmp_path):
    """``sql --url --format csv`` writes HUGEINT's minimum, -2^127, exactly, after every row before it."""
    sql = f"SELECT range AS n, CASE WHEN range = 99999 THEN ({H_MIN})::HUGEINT ELSE range::HUGEINT END AS h FROM range(100000)"
    (result,) = _sql_through_server(tmp_path, (sql, "csv"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 100000 and rows[0] == {"n": "0", "h": "0"} and rows[-1] == {"n": "99999", "h": str(H_MIN)}


def test_a_result_that_fails_midway_through_the_server_writes_no_row_to_stdout(tmp_path):
    """A query through ``sql --url`` that fails after rows have streamed exits 1 with one line and nothing on stdout, in every format."""
    sql = "SELECT range AS n, CASE WHEN range < 150000 THEN 'ok' ELSE error('stopped at ' || range) END AS s FROM range(150001)"
    results = _sql_through_server(tmp_path, *((sql, fmt) for fmt in ("csv", "json", "parquet")))
    for result in results:
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "stopped at 150000" in result.stderr, result.stderr
        assert result.stdout == ""
