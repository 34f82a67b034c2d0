"""What the store's checkpoints cost: a group commit written compressed at its commit is not written again."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from edgeloop.ingest.batch import read_batch
from edgeloop.ingest.store import Landing, Store
from edgeloop.schemas import ModelSchema
from tests.ingest.conftest import make_config, make_table, seal

ROW_GROUP_ROWS = 122_880  # DuckDB's row group: a commit of at least this many rows is written compressed


def big_landing(tmp_path: Path, schema: ModelSchema, store: Store, rows: int) -> Landing:
    """A sealed batch of ``rows`` predictions (a small table repeated, each row with a fresh record id)."""
    small, _ = make_table(schema, predictions=1_000)
    table = pa.concat_tables([small] * (rows // 1_000)).combine_chunks()
    index = table.schema.get_field_index("record_id")
    ids = pa.array([uuid.uuid4().bytes for _ in range(table.num_rows)], pa.binary(16)).cast(pa.uuid())
    batch_id, body = seal(tmp_path, schema, table.set_column(index, table.schema.field(index), ids))
    config = make_config(tmp_path, limits={"max_rows_per_batch": rows, "max_body_bytes": 1 << 30})
    batch = read_batch(body, batch_id=batch_id, limits=config.limits, schema_for=store.catalog.get)
    return Landing(batch, "pump-1", datetime.now(UTC))


def row_groups(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[int, int]]:
    """(rows, first block id) of each row group of ``table``, in order."""
    return con.execute(
        "SELECT sum(count)::BIGINT, min(block_id) FILTER (WHERE block_id >= 0) FROM pragma_storage_info(?) "
        "WHERE column_name = 'record_id' AND segment_type <> 'VALIDITY' GROUP BY row_group_id ORDER BY row_group_id",
        [table],
    ).fetchall()


def test_close_keeps_the_row_groups_a_bulk_commit_wrote(tmp_path, vibration):
    """Row groups written at a big group commit stay as written through the close's checkpoint (no vacuum rewrites them)."""
    config = make_config(tmp_path, store={"group_commit_delay_s": 0})
    store = Store(config.store.db_path, config.store)
    try:
        store.register(vibration).result(30)
        for name in ("a", "b"):  # two commits, each a full row group and a partial one
            landing = big_landing(tmp_path / name, vibration, store, ROW_GROUP_ROWS + 8_120)
            status, receipt = store.submit(landing).result(60)
            assert status == 201 and receipt["duplicates"] == 0, receipt
        written = row_groups(store.cursor(), "vibration")
    finally:
        store.close()
    # DuckDB's parallel insert splits each commit at its own row counts; each leaves a partial row group.
    assert sum(rows for rows, _ in written) == 2 * 131_000 and len(written) >= 4, written
    assert all(block is not None for _, block in written), f"not written at commit: {written}"
    con = duckdb.connect(str(config.store.db_path), read_only=True)
    try:
        assert row_groups(con, "vibration") == written
        assert con.execute("SELECT count(*), count(DISTINCT record_id) FROM vibration").fetchone() == (2 * 131_000, 2 * 131_000)
    finally:
        con.close()


def test_row_groups_a_delete_emptied_are_dropped_at_close(tmp_path, vibration):
    """With vacuum off, the row groups whose every row was deleted are still dropped by the close's checkpoint."""
    config = make_config(tmp_path, store={"group_commit_delay_s": 0})
    store = Store(config.store.db_path, config.store)
    try:
        store.register(vibration).result(30)
        first = big_landing(tmp_path / "a", vibration, store, ROW_GROUP_ROWS + 8_120)
        for landing in (first, big_landing(tmp_path / "b", vibration, store, ROW_GROUP_ROWS + 8_120)):
            assert store.submit(landing).result(60)[0] == 201
        deleted = store.call(
            lambda con: con.execute("DELETE FROM vibration WHERE batch_id = ?", [first.batch.batch_id]).fetchone()[0]
        ).result(60)
        assert deleted == 131_000
    finally:
        store.close()
    con = duckdb.connect(str(config.store.db_path), read_only=True)
    try:
        assert sum(rows for rows, _ in row_groups(con, "vibration")) == 131_000
    finally:
        con.close()
