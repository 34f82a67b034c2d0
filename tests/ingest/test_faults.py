"""Faults of ours are 5xx (the device retries), never 4xx (it would dead-letter a good batch), and /healthz tells."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeloop.ingest.store import Store
from tests.ingest.conftest import make_table, seal
from tests.ingest.test_upload import _assert_error


class FaultyStore(Store):
    """Fault injection: while ``fault`` is set, landing raises it as DuckDB would."""

    fault: Exception | None = None

    def _insert(self, con, jobs):
        if type(self).fault is not None:
            raise type(self).fault
        return super()._insert(con, jobs)


async def _health(server) -> tuple[int, dict]:
    async with server.session.get(f"{server.url}/healthz") as response:
        return response.status, await response.json()


@pytest.mark.parametrize("where", ["footer", "pages"])
async def test_out_of_memory_while_reading_is_503(server, tmp_path, vibration, monkeypatch, where):
    """A malloc failure while reading a valid batch is 503 overloaded with Retry-After, not 400 corrupt_parquet."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])

    def fail(*args, **kwargs):
        raise pa.ArrowMemoryError("malloc of size 1048576 failed")

    monkeypatch.setattr(pq, "read_metadata", fail) if where == "footer" else monkeypatch.setattr(pq.ParquetFile, "read", fail)
    status, error, headers = await server.put(batch_id, body, token)
    assert status == 503 and headers["Retry-After"]
    _assert_error(error, "overloaded")
    monkeypatch.undo()
    assert (await server.put(batch_id, body, token))[0] == 201


async def test_a_full_disk_while_landing_is_507_and_unhealthy_until_it_lands(make_server, tmp_path, vibration):
    """DuckDB's ENOSPC while landing answers 507 (retried) and /healthz 503 naming it; once a batch lands, health is back."""
    server = await make_server(store_class=FaultyStore)
    token = await server.add_device("pump-1")
    assert (await _health(server))[0] == 200
    FaultyStore.fault = duckdb.IOException("IO Error: Could not write file \"x.wal\": No space left on device")
    try:
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
        status, error, headers = await server.put(batch_id, body, token)
        assert status == 507 and headers["Retry-After"]
        _assert_error(error, "disk_full")
        status, health = await _health(server)
        assert status == 503 and health["status"] == "failing" and "No space left" in health["problem"]
    finally:
        FaultyStore.fault = None
    assert (await server.put(batch_id, body, token))[0] == 201
    assert await _health(server) == (200, {"status": "ok", "queued": 0, "problem": None})


async def test_a_fatal_database_error_keeps_health_failing(make_server, tmp_path, vibration):
    """After DuckDB invalidates the database, uploads get 500 at once and /healthz says restart, for good."""
    server = await make_server(store_class=FaultyStore)
    token = await server.add_device("pump-1")
    FaultyStore.fault = duckdb.FatalException("FATAL Error: database has been invalidated")
    try:
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
        status, error, _ = await server.put(batch_id, body, token)
        assert status == 500
        _assert_error(error, "store_error")
    finally:
        FaultyStore.fault = None
    status, health = await _health(server)
    assert status == 503 and "restart" in health["problem"]
    assert (await server.put(batch_id, body, token))[0] == 500


async def test_under_the_disk_reserve_uploads_are_507_and_health_503(make_server, tmp_path, vibration):
    """With less free disk than store.reserve_free_bytes, uploads get 507 before DuckDB writes and /healthz is 503."""
    server = await make_server(store={"reserve_free_bytes": 1 << 60})
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 507
    _assert_error(error, "disk_full")
    status, health = await _health(server)
    assert status == 503 and "reserve" in health["problem"]


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir()
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


async def test_a_really_full_disk_never_gets_a_4xx_and_health_tells(make_server, tmp_path, vibration):
    """On a 24 MB tmpfs with no reserve, uploads until the disk fills are 201 or 5xx (never 4xx) and /healthz turns 503."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "24m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        server = await make_server(store={"db_path": str(disk / "ingest.duckdb"), "reserve_free_bytes": 0})
        token = await server.add_device("pump-1")
        table, _ = make_table(vibration, predictions=2000)
        statuses = []
        for index in range(200):
            table = table.set_column(0, table.schema.field(0), pa.array([uuid.uuid4().bytes for _ in range(2000)], pa.binary(16)).cast(pa.uuid()))
            batch_id, body = seal(tmp_path / str(index), vibration, table)
            status, error, _ = await server.put(batch_id, body, token)
            statuses.append(status)
            if status != 201:
                assert status >= 500, error
                break
        assert statuses[-1] >= 500, statuses  # the disk did fill
        status, health = await _health(server)
        assert status == 503 and health["problem"], health
        await server.app.shutdown()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


class OutOfMemoryStore(Store):
    """Fault injection: while ``where`` is set, that step of landing runs out of memory as DuckDB or pyarrow would."""

    where: str | None = None

    def land_group(self, group):
        if type(self).where == "ledger read":
            from edgeloop.ingest import store as store_module

            real = store_module._receipts

            def failing(*args, **kwargs):
                store_module._receipts = real
                raise duckdb.OutOfMemoryException("Out of Memory Error: ArrowBuffer: failed to allocate 8388608 bytes")

            store_module._receipts = failing
        return super().land_group(group)

    def _insert(self, con, jobs):
        if type(self).where == "arrow":
            raise MemoryError("malloc of size 8388608 failed")
        return super()._insert(con, jobs)


@pytest.mark.parametrize("where", ["ledger read", "arrow"])
async def test_out_of_memory_anywhere_in_the_writer_is_503_and_the_writer_goes_on(make_server, tmp_path, vibration, where):
    """Running out of memory at any step of a landing (the ledger read, Arrow outside DuckDB) is 503 overloaded, and the next upload lands."""
    server = await make_server(store_class=OutOfMemoryStore)
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    OutOfMemoryStore.where = where
    try:
        status, error, headers = await server.put(batch_id, body, token)
    finally:
        OutOfMemoryStore.where = None
    assert status == 503 and headers["Retry-After"], error
    _assert_error(error, "overloaded")
    assert (await server.put(batch_id, body, token))[0] == 201
