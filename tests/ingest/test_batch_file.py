"""The batch file the server takes: today's (no ARROW:schema, no statistics) and older agents' (both), checked alike."""

from __future__ import annotations

import io
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.schemas import ModelSchema
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS
from tests.ingest.conftest import make_table, seal
from tests.ingest.test_upload import _assert_error

SPLIT_TYPES = ("float32", "float64", "vector")


def older_agent_batch(schema: ModelSchema, table: pa.Table) -> tuple[str, bytes]:
    """A batch as agents before this format sealed it: ARROW:schema in the footer and statistics on every column."""
    batch_id = str(uuid.uuid4())
    split = [spec.name for spec in schema.stored_fields if spec.type in SPLIT_TYPES]
    sink = io.BytesIO()
    with pq.ParquetWriter(
        sink, table.schema.remove_metadata(), compression="zstd", use_byte_stream_split=split,
        use_dictionary=[name for name in table.schema.names if name not in split], write_statistics=True,
    ) as writer:
        writer.write_table(table.replace_schema_metadata(None))
        writer.add_key_value_metadata({
            BATCH_METADATA_KEYS["batch_id"]: batch_id.encode(),
            BATCH_METADATA_KEYS["model"]: schema.name.encode(),
            BATCH_METADATA_KEYS["schema_fingerprint"]: schema.fingerprint.encode(),
            BATCH_METADATA_KEYS["schema"]: schema.canonical_json().encode(),
            BATCH_METADATA_KEYS["agent_version"]: b"0.1.0",
            BATCH_METADATA_KEYS["drops"]: b"{}",
            BATCH_METADATA_KEYS["sealed_at"]: b"2026-11-26T00:00:00+00:00",
        })
    body = sink.getvalue()
    meta = pq.read_metadata(pa.BufferReader(body))
    assert b"ARROW:schema" in meta.metadata and meta.row_group(0).column(0).is_stats_set
    return batch_id, body


def _vectors(lengths: list[int | None], value_type: pa.DataType = pa.float32()) -> pa.Array:
    return pa.array([None if n is None else [0.5] * n for n in lengths], pa.list_(value_type))


def _with(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), pa.field(name, values.type), values)


async def test_batches_of_older_agents_land_as_todays_do(server, tmp_path, vibration):
    """A batch with ARROW:schema and full statistics lands with the same values and types as one without them."""
    token = await server.add_device("pump-1")
    old_table, old_ids = make_table(vibration, predictions=4, version="old")
    new_table, new_ids = make_table(vibration, predictions=4, version="new")
    new_table = _with(new_table, "spectrum", pa.array([[0.25] * 16, None, [1.5] * 16, [0.25] * 16], new_table.schema.field("spectrum").type))
    old_table = _with(old_table, "spectrum", new_table.column("spectrum").combine_chunks())
    batch_id, body = seal(tmp_path, vibration, new_table)
    meta = pq.read_metadata(pa.BufferReader(body))
    assert b"ARROW:schema" not in meta.metadata and not meta.row_group(0).column(0).is_stats_set
    for batch_id, body in (older_agent_batch(vibration, old_table), (batch_id, body)):
        status, receipt, _ = await server.put(batch_id, body, token)
        assert (status, receipt["rows"]) == (201, 4), receipt
    rows = await server.sql(
        "SELECT model_version, record_id::VARCHAR AS id, spectrum, typeof(spectrum) AS t, typeof(record_id) AS u "
        "FROM vibration ORDER BY model_version, created_at"
    )
    assert [row["id"] for row in rows] == [str(i) for i in (*new_ids, *old_ids)]
    assert {(row["t"], row["u"]) for row in rows} == {("FLOAT[16]", "UUID")}
    by_version = {version: [row["spectrum"] for row in rows if row["model_version"] == version] for version in ("old", "new")}
    assert by_version["old"] == by_version["new"] == [[0.25] * 16, None, [1.5] * 16, [0.25] * 16]


async def test_a_vector_of_another_dim_or_type_is_422_without_arrow_schema(server, tmp_path, vibration):
    """Without ARROW:schema, a spectrum list of 15 or 17 values (dim 16) or of doubles is 422 schema_mismatch naming it; nothing lands."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=3)
    cases = [
        ("one short, one long", _vectors([15, 16, 17]), "not of dim 16"),
        ("all empty", _vectors([0, 0, 0]), "not of dim 16"),
        ("doubles", _vectors([16, 16, None], pa.float64()), "wrong type"),
    ]
    for name, vectors, problem in cases:
        batch_id, body = seal(tmp_path / name, vibration, _with(table, "spectrum", vectors))
        assert b"ARROW:schema" not in pq.read_metadata(pa.BufferReader(body)).metadata
        status, error, _ = await server.put(batch_id, body, token)
        assert status == 422, (name, error)
        _assert_error(error, "schema_mismatch")
        assert error["error"]["details"][0]["column"] == "spectrum", error
        assert problem in str(error["error"]), (name, error)
    # An older agent's footer declaring a variable list is held to the same dim.
    batch_id, body = older_agent_batch(vibration, _with(table, "spectrum", _vectors([16, 15, 16])))
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 422, error
    _assert_error(error, "schema_mismatch")
    assert await server.sql("SELECT count(*) AS n FROM batches") == [{"n": 0}]


async def test_a_footer_column_path_that_is_not_utf8_is_400(server, tmp_path, vibration):
    """A byte flipped in a column chunk's path in the footer (names are most of a small footer) is 400 corrupt_parquet, not a 500."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    footer_start = len(body) - 8 - int.from_bytes(body[-8:-4], "little")
    # The last mention of a name in the footer is its column chunk's path_in_schema, after the schema's.
    at = body.rindex(b"policy_version", footer_start)
    status, error, _ = await server.put(batch_id, body[:at] + b"\xff" + body[at + 1:], token)
    assert status == 400, error
    _assert_error(error, "corrupt_parquet")


async def test_a_footer_whose_level_histogram_disagrees_with_its_schema_is_400(server, tmp_path, vibration):
    """A footer declaring `model_version` required over an optional column's level histogram is 400, not an abort of the server."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=3)
    # Written optional: its size statistics carry a definition-level histogram of two buckets.
    table = table.cast(table.schema.set(table.schema.get_field_index("model_version"), pa.field("model_version", pa.string())))
    batch_id, body = seal(tmp_path, vibration, table)
    footer_start = len(body) - 8 - int.from_bytes(body[-8:-4], "little")
    # SchemaElement: repetition_type (field 3, i32) OPTIONAL = zigzag 2, then the name (field 4, a 13-byte string).
    optional = b"\x25\x02\x18\x0dmodel_version"
    at = body.index(optional, footer_start)
    assert pq.read_metadata(pa.BufferReader(body)).row_group(0).column(3).path_in_schema == "model_version"
    forged = body[:at] + b"\x25\x00" + body[at + 2:]  # REQUIRED: pyarrow expects one bucket and throws past its bindings
    status, error, _ = await server.put(batch_id, forged, token)
    assert status == 400, error
    _assert_error(error, "corrupt_parquet")


async def test_text_that_is_not_utf8_is_400(server, tmp_path, vibration):
    """A string column whose bytes are not UTF-8 (Parquet's reader does not check) is 400 corrupt_parquet, not a 500."""
    token = await server.add_device("pump-1")
    table, _ = make_table(vibration, predictions=2)
    offsets = pa.array([0, 2, 4], pa.int32()).buffers()[1]
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"\xff\xfe\xff\xfe")])
    batch_id, body = seal(tmp_path, vibration, _with(table, "note", bad))
    status, error, _ = await server.put(batch_id, body, token)
    assert status == 400, error
    _assert_error(error, "corrupt_parquet")
