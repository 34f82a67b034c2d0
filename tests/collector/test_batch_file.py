"""The sealed batch file as the device writes and re-reads it: what it costs on the wire, and the types it keeps."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import Bench
from bench.records import json_rows, sealed_table, simulated
from bench.rows.wire import gzip_ndjson
from edgeloop.collector.config import SpoolSettings
from edgeloop.collector.spool import Spool, verify_batch
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from edgeloop.schemas.envelope import with_declared_types

REGISTRY = SchemaRegistry.from_dir(EXAMPLES_DIR)
VIBRATION = REGISTRY["vibration"]
# One record per 6 s sealed at the default seal_max_age_s (3,600 s): README row 3's small batch.
HOURLY_ROWS = 600


def _sealed(tmp_path, rows: int, *, seed: int = 11):
    bench = Bench(quick=True, work=tmp_path / "bench", registry=REGISTRY)
    table = sealed_table(bench, "vibration", simulated("vibration", rows, seed=seed))
    spool = Spool(tmp_path / "spool", SpoolSettings(), agent_version="test")
    return table, spool, spool.write_batch(table, schema=VIBRATION)


def test_an_hourly_batch_is_at_most_half_the_bytes_of_gzipped_ndjson(tmp_path):
    """A sealed 600-row vibration batch is at most half the bytes of its rows as gzip'd NDJSON, with no footer part a reader does not use."""
    assert SpoolSettings().seal_max_age_s / 6 == HOURLY_ROWS
    table, _, batch = _sealed(tmp_path, HOURLY_ROWS)
    gzipped = gzip_ndjson(json_rows(table))
    assert batch.bytes <= 0.5 * gzipped, f"{batch.bytes / HOURLY_ROWS:.1f} B/record against {gzipped / HOURLY_ROWS:.1f}"
    meta = pq.read_metadata(batch.path)
    # The exact Arrow types come from the registered schema the fingerprint names, not a second copy per batch.
    assert b"ARROW:schema" not in meta.metadata
    # No reader uses column statistics: the server bounds work from page headers and dedupes on the decoded ids.
    stats = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns) if meta.row_group(0).column(i).is_stats_set]
    assert stats == []


def test_duckdb_reads_a_sealed_batch(tmp_path):
    """DuckDB (the server's engine, and what a human points at rejected/) reads every column of a sealed batch."""
    table, _, batch = _sealed(tmp_path, 20)
    read = duckdb.sql(f"SELECT record_id::VARCHAR AS id, spectrum FROM '{batch.path}'").fetchall()
    assert [row[0] for row in read] == [str(value) for value in table.column("record_id").to_pylist()]
    assert [row[1] for row in read] == table.column("spectrum").to_pylist()


def test_the_agent_reads_its_batches_back_with_the_exact_types(tmp_path):
    """verify and split read a sealed batch back as the model's Arrow types (fixed-size vectors, UUID ids), values unchanged."""
    table, spool, batch = _sealed(tmp_path, 50)
    assert verify_batch(batch.path) == batch
    halves = spool.split(batch.batch_id)
    assert [half.rows for half in halves] == [25, 25]
    for half in halves:
        assert verify_batch(half.path) == half
    back = pa.concat_tables([with_declared_types(pq.read_table(half.path), VIBRATION.arrow_schema) for half in halves])
    assert back.schema.remove_metadata().equals(VIBRATION.arrow_schema)
    assert back.replace_schema_metadata(None).equals(table.replace_schema_metadata(None))
