"""Parquet bombs: small files that would inflate in memory are refused before anything is decoded."""

from __future__ import annotations

import asyncio
import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.ingest.app import STORE
from edgeloop.schemas import ModelSchema
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS
from tests.ingest.conftest import make_table, seal
from tests.ingest.test_upload import SlowStore, _assert_error


def forge(schema: ModelSchema, table: pa.Table, *, claim: pa.Table | None = None, **writer: object) -> tuple[str, bytes]:
    """A batch written by hand: ``claim``'s Arrow schema goes in the footer instead of the table's own."""
    batch_id = str(uuid.uuid4())
    metadata = {
        BATCH_METADATA_KEYS["batch_id"]: batch_id.encode(),
        BATCH_METADATA_KEYS["model"]: schema.name.encode(),
        BATCH_METADATA_KEYS["schema_fingerprint"]: schema.fingerprint.encode(),
    }
    if claim is not None:
        honest = io.BytesIO()
        pq.write_table(claim, honest)
        metadata[b"ARROW:schema"] = pq.read_metadata(pa.BufferReader(honest.getvalue())).metadata[b"ARROW:schema"]
    sink = io.BytesIO()
    options = {"compression": "zstd", **writer}
    with pq.ParquetWriter(sink, table.schema.remove_metadata(), store_schema=claim is None, **options) as out:
        out.write_table(table.replace_schema_metadata(None))
        out.add_key_value_metadata(metadata)
    return batch_id, sink.getvalue()


def _with(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), pa.field(name, values.type), values)


async def test_vector_bomb_lying_about_its_dim_is_refused_before_decoding(server, vibration):
    """A footer claiming spectrum dim 16 over pages of 65,536 floats per row (500 MB decoded, ~100 KB sent) is 422 from page headers."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=2000)
    huge = pa.FixedSizeListArray.from_arrays(pa.repeat(pa.scalar(0.5, pa.float32()), 2000 * 65536), 65536)
    batch_id, body = forge(vibration, _with(table, "spectrum", huge), claim=table)
    assert len(body) < 200_000
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422, error
    _assert_error(error, "schema_mismatch")
    assert error["error"]["details"][0]["column"] == "spectrum"
    assert error["error"]["details"][0]["values"] == 2000 * 65536
    # Declaring another dim honestly does not help: the server's schema says 16.
    wider = pa.FixedSizeListArray.from_arrays(pa.repeat(pa.scalar(0.5, pa.float32()), 2000 * 32), 32)
    batch_id, body = forge(vibration, _with(table, "spectrum", wider))
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "schema_mismatch")


async def test_one_huge_repeated_string_is_refused_before_decoding(server, vibration):
    """A 40 MiB string in an uncapped field is 422 from its page sizes alone (default cap 8 MiB), before it is decompressed."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=1)
    batch_id, body = forge(vibration, _with(table, "predicted_class", pa.array(["x" * (40 * 1024 * 1024)])))
    assert len(body) < 100_000
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422
    _assert_error(error, "bad_values")
    assert error["error"]["details"][0]["column"] == "predicted_class"
    assert "pages" in error["error"]["details"][0]["problem"]


async def test_too_many_pages_is_413(make_server, vibration):
    """A batch cut into more pages than max_pages_per_batch is refused before its pages are read."""
    server = await make_server(limits={"max_pages_per_batch": 500})
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=300)
    batch_id, body = forge(vibration, table, data_page_size=1, write_batch_size=1, use_dictionary=False)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 413, error
    _assert_error(error, "too_many_pages")


async def test_amplifying_encodings_are_refused(server, vibration):
    """DELTA_BYTE_ARRAY (shared prefixes decode to far more than the page holds) is 422 unsupported_encoding."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=50)
    batch_id, body = forge(vibration, table, use_dictionary=False, column_encoding={"predicted_class": "DELTA_BYTE_ARRAY"})
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422, error
    _assert_error(error, "unsupported_encoding")
    assert error["error"]["details"]["column"] == "predicted_class"


async def test_the_landing_queue_counts_decoded_bytes(make_server, tmp_path, vibration):
    """Two batches of 40,000 repeated 250-byte notes (~10 MB decoded, ~160 kB of dictionary indices) do not both fit a 5 MB queue."""
    server = await make_server(store_class=SlowStore, store={"queue_max_bytes": 5_000_000, "group_commit_max_batches": 1})
    token = await server.add_device("pump-1")
    bodies = []
    for index in range(2):
        table, _ = make_table(vibration, predictions=1)
        rows = 40_000
        columns = {name: pa.concat_arrays([table.column(name).combine_chunks()] * rows) for name in table.column_names}
        columns["record_id"] = pa.array([uuid.uuid4().bytes for _ in range(rows)], pa.binary(16))
        columns["note"] = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["n" * 250]))
        big = pa.table(columns)
        bodies.append(seal(tmp_path / str(index), vibration, big.cast(vibration.arrow_schema)))
    results = await asyncio.gather(*(server.put(batch_id, body, token) for batch_id, body in bodies))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201, 429], [result[1] for result in results]
    assert server.app[STORE].queued == 0


async def test_a_dictionary_bomb_is_413_without_inflating(make_server, tmp_path, vibration):
    """100,000 uses of one 2 kB dictionary value (200 MB decoded from under 1 MB sent) is 413, counted from the dictionary."""
    server = await make_server(limits={"max_decompressed_bytes": 4_000_000})
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=1)
    rows = 100_000
    columns = {name: pa.concat_arrays([table.column(name).combine_chunks()] * rows) for name in table.column_names}
    columns["note"] = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * 2000]))
    batch_id, body = seal(tmp_path, vibration, pa.table(columns).cast(vibration.arrow_schema))
    assert len(body) < 1_000_000  # over 200x decoded (the sealer's byte-bounded row groups each repeat the dictionary)
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 413, error
    _assert_error(error, "too_large_decompressed")
