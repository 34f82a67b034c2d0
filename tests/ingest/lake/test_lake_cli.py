"""sql, export, devices, compact and migrate against a lake; and a plain DuckDB attaching it read-only."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import duckdb
import pyarrow.parquet as pq
import pytest

from edgeloop.ingest.lake import extension_path
from tests.ingest.conftest import Server, cli, make_config, make_table, seal, start_server
from tests.ingest.lake.conftest import lake_section
from tests.ingest.test_report import field_db  # noqa: F401  (the fixture: two weeks of labelled field data)

pytestmark = pytest.mark.timeout(300)


def write_lake_config(tmp_path, store: dict) -> str:
    """A config file for the CLI naming the same lake."""
    store = {"db_path": str(tmp_path / "ingest.duckdb"), **store}
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in store.items())
    path = tmp_path / "lake.toml"
    path.write_text(f'[server]\nadmin_token_file = "{tmp_path / "admin.token"}"\n[store]\n{lines}\n')
    return str(path)


async def land(server, tmp_path, vibration, token: str, count: int, rows: int = 20) -> list[tuple[str, bytes]]:
    sent = []
    for index in range(count):
        batch_id, body = seal(tmp_path / f"batch{index}", vibration, make_table(vibration, predictions=rows)[0])
        status, answer, _ = await server.put(batch_id, body, token)
        assert status == 201, answer
        sent.append((batch_id, body))
    return sent


async def test_sql_export_fleet_and_devices_read_and_change_the_lake_while_a_replica_runs(server, lake, tmp_path, vibration):
    """With a replica running, the CLI attaches the lake itself: sql and export read it, devices add a token the replica takes."""
    token = await server.add_device("pump-1")
    await land(server, tmp_path, vibration, token, 2)
    config = write_lake_config(tmp_path, lake)
    rows = [json.loads(line) for line in cli("sql", "SELECT count(*) AS n FROM vibration", "--format", "json",
                                             "--config", config).stdout.splitlines()]
    assert rows == [{"n": 40}]
    out = tmp_path / "export.parquet"
    cli("export", "--model", "vibration", "--out", str(out), "--config", config)
    assert pq.read_table(out).num_rows == 40
    new_token = cli("devices", "add", "pump-2", "--config", config).stdout.strip()
    batch_id, body = seal(tmp_path / "late", vibration, make_table(vibration, predictions=3)[0])
    for _ in range(200):  # the replica re-reads tokens every lake_refresh_s
        status, _, _ = await server.put(batch_id, body, new_token)
        if status not in (401, 429):  # 429: this address used up its wrong tries; the right token still passes
            break
        await asyncio.sleep(0.05)
    assert status == 201


async def test_a_plain_duckdb_attaches_the_lake_read_only(server, lake, tmp_path, vibration):
    """The README's recipe: a DuckDB without edgeloop loads the two extensions and attaches the lake read-only."""
    token = await server.add_device("pump-1")
    await land(server, tmp_path, vibration, token, 1)
    con = duckdb.connect()
    con.execute(f"LOAD '{extension_path('postgres_scanner')}'")
    con.execute(f"LOAD '{extension_path('ducklake')}'")
    con.execute(f"ATTACH 'ducklake:postgres:{lake['catalog']}' AS fleet (READ_ONLY, METADATA_SCHEMA 'public')")
    assert con.execute("SELECT count(*) FROM fleet.vibration").fetchone()[0] == 20
    with pytest.raises(duckdb.Error):
        con.execute("DELETE FROM fleet.vibration")
    con.close()


async def test_compact_merges_small_files_and_keeps_every_row(server, lake, tmp_path, vibration):
    """`edgeloop-ingest compact` leaves fewer files than the group commits made, the same rows, and landing goes on."""
    token = await server.add_device("pump-1")
    await land(server, tmp_path, vibration, token, 8)
    config = write_lake_config(tmp_path, lake)
    result = cli("compact", "--keep-s", "0", "--config", config)
    before, after = [int(word) for word in result.stderr.split() if word.isdigit()][:2]
    assert after < before, result.stderr
    rows = [json.loads(line) for line in cli("sql", "SELECT count(*) AS n, count(DISTINCT record_id) AS d FROM vibration",
                                             "--format", "json", "--config", config).stdout.splitlines()]
    assert rows == [{"n": 160, "d": 160}]
    await land(server, tmp_path / "more", vibration, token, 1)
    assert (await server.sql("SELECT count(*) AS n FROM vibration"))[0]["n"] == 180


async def test_compact_counts_again_a_label_coverage_an_older_version_counted_by_another_rule(server, lake, tmp_path,
                                                                                               vibration):
    """A lake whose label coverage counted comment-only feedback as labels (before 2026-11) is counted again by the
    one rule on the next `compact`, once, while a replica keeps landing."""
    from datetime import timedelta

    from edgeloop.ingest.config import StoreSettings
    from edgeloop.ingest.lake import connect_lake
    from tests.ingest.conftest import BASE_TIME
    from tests.ingest.test_tallies import COVERAGE_SQL, TRUTH_SQL, _comment_only, _rows

    token = await server.add_device("pump-1")
    table, ids = make_table(vibration, predictions=6)
    labels = make_table(vibration, feedback=[(ids[0], "normal", BASE_TIME)])[0]
    for index, rows in enumerate((table, labels, _comment_only(vibration, ids[1:3], BASE_TIME + timedelta(hours=1)))):
        batch_id, body = seal(tmp_path / f"b{index}", vibration, rows)
        assert (await server.put(batch_id, body, token))[0] == 201
    con = connect_lake(StoreSettings.model_validate({**lake, "db_path": str(tmp_path / "x.duckdb")}), read_only=False)
    try:  # what an older version left: the two comments counted as labels, and no rule named
        con.execute("INSERT INTO label_coverage_deltas VALUES ('vibration', '1.0', 0, 0.0, 2, 2.0)")
        con.execute("COMMENT ON TABLE label_coverage_deltas IS NULL")
    finally:
        con.close()
    assert (await server.sql("SELECT labelled FROM label_coverage"))[0]["labelled"] == 3
    config = write_lake_config(tmp_path, lake)
    assert "counted again" in cli("compact", "--config", config).stderr
    assert _rows(await server.sql(COVERAGE_SQL)) == _rows(await server.sql(TRUTH_SQL))
    assert (await server.sql("SELECT labelled FROM label_coverage"))[0]["labelled"] == 1
    assert "counted again" not in cli("compact", "--config", config).stderr
    batch_id, body = seal(tmp_path / "late", vibration, make_table(vibration, feedback=[(ids[1], "normal", BASE_TIME)])[0])
    assert (await server.put(batch_id, body, token))[0] == 201
    assert (await server.sql("SELECT labelled FROM label_coverage"))[0]["labelled"] == 2


async def test_migrate_copies_a_duckdb_store_and_its_old_batches_still_answer_200(postgres, tmp_path, vibration):
    """`migrate --to ducklake` copies rows, devices and the ledger: a retry of an old batch gets 200 and its receipt from the lake."""
    old = make_config(tmp_path / "old")
    (tmp_path / "old").mkdir()
    runner, url = await start_server(old)
    async with aiohttp.ClientSession() as session:
        duck = Server(url, old, session, runner.app)
        token = await duck.add_device("pump-1")
        sent = await land(duck, tmp_path / "sent", vibration, token, 3)
        first = await duck.put(*sent[0], token)
    await runner.cleanup()
    store = lake_section(postgres, tmp_path)
    config = write_lake_config(tmp_path, {**store, "db_path": str(old.store.db_path)})
    result = cli("migrate", "--to", "ducklake", "--config", config)
    copied = dict(line.split("\t") for line in result.stdout.splitlines())
    assert copied["vibration"] == "60" and copied["batches"] == "3" and copied["devices"] == "1"
    again = cli("migrate", "--to", "ducklake", "--config", config, check=False)
    assert again.returncode == 1 and "already holds batches" in again.stderr
    new = make_config(tmp_path / "new", store=store)
    (tmp_path / "new").mkdir()
    new.server.admin_token_file.write_text(old.server.admin_token_file.read_text())
    new.server.admin_token_file.chmod(0o600)
    runner, url = await start_server(new)
    async with aiohttp.ClientSession() as session:
        lake_server = Server(url, new, session, runner.app)
        status, receipt, _ = await lake_server.put(*sent[0], token)  # the old token works: devices came along
        assert status == 200
        assert {k: v for k, v in receipt.items() if k != "status"} == {k: v for k, v in first[1].items() if k != "status"}
        assert (await lake_server.sql("SELECT count(*) AS n FROM vibration"))[0]["n"] == 60
    await runner.cleanup()


def test_check_config_reaches_the_catalog_and_names_an_unreachable_one(postgres, tmp_path):
    """check-config on a lake config says OK when the catalog answers, and one line naming store.catalog when it does not."""
    good = write_lake_config(tmp_path, lake_section(postgres, tmp_path))
    assert "catalog reachable" in cli("check-config", "--config", good).stdout
    (tmp_path / "bad").mkdir()
    bad = write_lake_config(tmp_path / "bad", lake_section(postgres, tmp_path / "bad", catalog="host=127.0.0.1 port=1 dbname=x"))
    result = cli("check-config", "--config", bad, check=False)
    assert result.returncode == 1 and "store.catalog" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_report_on_a_lake_is_the_same_through_a_replica_attached_and_from_the_file_it_came_from(postgres, field_db, tmp_path):
    """report --format json (and html) on a lake gives the figures of the DuckDB file it was migrated from, through a
    running replica's admin API and with the CLI attaching the lake itself."""
    from tests.ingest.lake.test_replicas import Replica

    lake = lake_section(postgres, tmp_path)
    cli("migrate", "--to", "ducklake", "--config", write_lake_config(tmp_path, {**lake, "db_path": str(field_db)}))
    window = ("report", "--model", "vibration", "--since", "2026-10-08", "--until", "2026-10-15", "--format", "json")
    from_file = json.loads(cli(*window, "--db", str(field_db)).stdout)
    replica = Replica(tmp_path, lake, tmp_path / "admin.token", 0)
    replica.start()
    try:
        replica.wait_ready()
        running = json.loads(cli(*window, "--url", replica.url, "--config", str(replica.config)).stdout)
        attached = json.loads(cli(*window, "--config", str(replica.config)).stdout)
        page = tmp_path / "report.html"
        cli(*window[:-2], "--format", "html", "--out", str(page), "--config", str(replica.config))
    finally:
        replica.stop()
    assert running == attached == from_file
    assert {group["key"] for group in from_file["groups"]} == {"2.0.3", "2.1.0", "2.2.0-rc1"}
    assert page.read_text().startswith("<!DOCTYPE html>")


async def test_compact_run_again_adds_no_file(server, lake, tmp_path, vibration):
    """A second and third `compact` with nothing landed between leave the lake's files as the first left them, and
    says so (the fold rewrote every aggregate each run, adding a data file and a delete file per aggregate)."""
    token = await server.add_device("pump-1")
    await land(server, tmp_path, vibration, token, 8)
    config = write_lake_config(tmp_path, lake)
    data = tmp_path / "lake-data"
    counts = []
    for _ in range(3):
        result = cli("compact", "--keep-s", "0", "--config", config)
        before, after = [int(word) for word in result.stderr.split() if word.isdigit()][:2]
        counts.append((before, after, len(list(data.rglob("*.parquet")))))
    first, *again = counts
    assert first[1] < first[0], counts
    assert again == [(first[1], first[1], first[2])] * 2, counts
    assert "delta rows folded" not in result.stderr, result.stderr


@pytest.mark.parametrize("keep", ["nan", "inf", "-inf", "1e300", "-1"])
def test_a_compact_keep_s_that_is_no_duration_is_a_usage_line(tmp_path, keep):
    """--keep-s must be a finite number of seconds from 0 to 100 years: anything else is one usage line (exit 2)."""
    result = cli("compact", "--keep-s", keep, "--config", str(tmp_path / "none.toml"), check=False)
    assert result.returncode == 2 and "--keep-s" in result.stderr and "Traceback" not in result.stderr, result.stderr
