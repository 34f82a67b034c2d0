"""Read-only SQL's memory: a query past store.memory_limit_bytes is stopped with a bounded error, the server alive and landing."""

from __future__ import annotations

import os

from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.store import server_memory_limit_bytes
from tests.ingest.conftest import (
    call_json,
    cli,
    free_port,
    make_table,
    put_batch,
    seal,
    spawn_server,
    stop_server,
    write_config,
)

MiB = 1024 * 1024
# 50 million 9-character strings and their commas: one 500 MB value, in memory DuckDB counts.
AGGREGATE = "SELECT length(string_agg('xxxxxxxxx', ',')) AS n FROM range(50000000)"


def _sql(port: int, token: str, sql: str) -> tuple[int, dict]:
    return call_json(f"http://127.0.0.1:{port}/v1/sql", token, "POST", {"sql": sql})


def _capped_server(tmp_path, store: str):
    """A real server under a 4 GB address-space cap with ``store`` settings added: (process, port, admin token, device token)."""
    port = free_port()
    # The memory or spill bound must be what stops the query, not sql_timeout_s (60 s) on a slow, loaded machine.
    config = write_config(tmp_path, port).read_text() + "sql_timeout_s = 600\n" + store
    (tmp_path / "ingest.toml").write_text(config)
    token = cli("devices", "add", "pump-1", "--config", str(tmp_path / "ingest.toml")).stdout.strip()
    server = spawn_server(tmp_path / "ingest.toml", tmp_path / "server.log", rlimit_as_bytes=4_000_000_000)
    return server, port, (tmp_path / "admin.token").read_text().strip(), token


def test_an_aggregate_past_the_memory_limit_is_too_expensive_and_uploads_still_land(tmp_path, vibration):
    """Under a 4 GB address-space cap, a string_agg needing 500 MB of a 192 MiB store.memory_limit_bytes is 422 query_too_expensive, and the server stays up and lands a batch."""
    server, port, admin, token = _capped_server(tmp_path, f"memory_limit_bytes = {192 * MiB}\n")
    try:
        status, body = _sql(port, admin, AGGREGATE)
        assert status == 422, body
        assert body["error"]["code"] == "query_too_expensive"
        assert body["error"]["details"]["limit"] == "store.memory_limit_bytes"
        assert put_batch(port, *seal(tmp_path / "spool", vibration, make_table(vibration, predictions=500)[0]), token) == 201
        status, body = _sql(port, admin, "SELECT count(*) AS n FROM vibration")
        assert status == 200 and body["rows"] in ([[500]], [{"n": 500}]), body
        assert server.poll() is None
    finally:
        stop_server(server)


# 20 million rows sorted: about 500 MB of rows, which a 192 MiB memory limit must spill.
SORT = "SELECT count(*) AS n, max(s) AS s FROM (SELECT i, i::VARCHAR || 'abcdefghij' AS s FROM range(20000000) t(i) ORDER BY hash(i))"


def test_a_sort_past_the_spill_limit_is_too_expensive_and_uploads_still_land(tmp_path, vibration):
    """A sort that would spill more than store.spill_max_bytes to <db>.tmp is 422 query_too_expensive naming it, and a batch still lands."""
    server, port, admin, token = _capped_server(tmp_path, f"memory_limit_bytes = {192 * MiB}\nspill_max_bytes = {64 * MiB}\n")
    try:
        status, body = _sql(port, admin, SORT)
        assert status == 422, body
        assert body["error"]["code"] == "query_too_expensive"
        assert body["error"]["details"]["limit"] == "store.spill_max_bytes"
        assert put_batch(port, *seal(tmp_path / "spool", vibration, make_table(vibration, predictions=500)[0]), token) == 201
        assert server.poll() is None
    finally:
        stop_server(server)


def test_the_default_memory_limit_is_half_the_machine_and_a_setting_wins():
    """Unset, store.memory_limit_bytes is half the machine's (or cgroup's) memory; set, it is taken as is."""
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    default = server_memory_limit_bytes(StoreSettings())
    assert 64 * MiB <= default <= machine // 2
    assert server_memory_limit_bytes(StoreSettings(memory_limit_bytes=300 * MiB)) == 300 * MiB
