"""The envelope every record carries, whatever its model.

Device-set columns travel in every sealed batch; landing columns are added by ingest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from edgeloop.errors import SchemaError

# Arrow is imported where a batch is built or read: naming the columns (a config, a schema check) needs none.
if TYPE_CHECKING:
    import pyarrow as pa

    ENVELOPE_COLUMNS: frozenset[str]  # every envelope and landing column's name (module __getattr__ below)

T = TypeVar("T", "pa.RecordBatch", "pa.Table")

__all__ = [
    "BATCH_METADATA_KEYS",
    "ENVELOPE_COLUMNS",
    "KINDS",
    "OPTIONAL_ENVELOPE",
    "envelope_arrow_fields",
    "landing_arrow_fields",
    "with_declared_types",
    "with_optional_columns",
]

KINDS = ("prediction", "feedback")

# Parquet key-value metadata keys a sealed batch carries (values are UTF-8 strings).
BATCH_METADATA_KEYS = {
    "batch_id": b"edgeloop.batch_id",
    "model": b"edgeloop.model",
    "schema_fingerprint": b"edgeloop.schema_fingerprint",
    "schema": b"edgeloop.schema",  # canonical JSON of the model schema
    "agent_version": b"edgeloop.agent_version",
    "drops": b"edgeloop.drops",  # JSON {reason: count} since the previous batch
    "sealed_at": b"edgeloop.sealed_at",  # RFC 3339 UTC, device clock
    "made": b"edgeloop.made",  # JSON {boot_id, uptime_s}: when the id was minted, on the device's boot clock
}


def envelope_arrow_fields() -> tuple[pa.Field, ...]:
    """Columns set on the device, in order, before the model's own fields."""
    import pyarrow as pa

    return (
        pa.field("record_id", pa.uuid(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("sample_weight", pa.float64(), nullable=False),
        pa.field("prediction_id", pa.uuid(), nullable=True),  # feedback only
        pa.field("source", pa.string(), nullable=True),  # feedback only: who labelled it
        pa.field("sampled_by", pa.string(), nullable=True),  # predictions: the strategies that selected it, ","-joined
        pa.field("policy_version", pa.string(), nullable=True),  # the sampling policy in force when it was kept
    )


# Added after the first release: batches and journal frames written before them lack them (read as nulls).
OPTIONAL_ENVELOPE = ("sampled_by", "policy_version")


def with_optional_columns(batch: T, schema: pa.Schema) -> T:
    """``batch`` with the optional envelope columns it lacks added as nulls, in ``schema``'s order."""
    import pyarrow as pa

    missing = [name for name in OPTIONAL_ENVELOPE if batch.schema.get_field_index(name) < 0]
    if not missing:
        return batch
    rows = batch.num_rows
    columns = [
        batch.column(field.name) if field.name not in missing else pa.nulls(rows, field.type) for field in schema
    ]
    if isinstance(batch, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(columns, schema=schema.with_metadata(batch.schema.metadata))  # type: ignore[return-value]
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(batch.schema.metadata))  # type: ignore[return-value]


def with_declared_types(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as read from a batch file, with the Arrow types Parquet alone does not keep taken from ``schema``.

    A batch file carries no ``ARROW:schema``: a vector reads back as a variable-length list,
    and from a writer without Parquet's UUID type an id reads as 16 fixed bytes. Other columns
    are left as read (a reader's dictionaries stay). A list column whose values are not the
    declared dim, or whose values are of another type, raises SchemaError naming it.
    """
    import pyarrow as pa
    import pyarrow.compute as pc  # here, not at the top: 4 MB an idle agent would pay (it reads batches only to split or verify)

    for index, got in enumerate(table.schema):
        at = schema.get_field_index(got.name)
        if at < 0:
            continue
        want = schema.field(at)
        if pa.types.is_fixed_size_list(want.type) and pa.types.is_list(got.type):
            if got.type.value_type != want.type.value_type:
                raise SchemaError(f"column {got.name!r} holds {got.type}, not {want.type}", field=got.name)
            column = table.column(index)
            lengths = pc.list_value_length(column)
            wrong = pc.sum(pc.not_equal(lengths, want.type.list_size)).as_py() or 0  # null vectors have no length
            if wrong:
                first = pc.filter(lengths, pc.not_equal(lengths, want.type.list_size))[0].as_py()
                raise SchemaError(
                    f"column {got.name!r}: {wrong} vectors are not of dim {want.type.list_size} (one holds {first} values)",
                    field=got.name,
                )
            table = table.set_column(index, pa.field(got.name, want.type, got.nullable), column.cast(want.type))
        elif want.type == pa.uuid() and got.type == pa.binary(16):
            chunks = [pa.ExtensionArray.from_storage(pa.uuid(), chunk) for chunk in table.column(index).chunks]
            table = table.set_column(index, pa.field(got.name, pa.uuid(), got.nullable), pa.chunked_array(chunks, pa.uuid()))
    return table


def landing_arrow_fields() -> tuple[pa.Field, ...]:
    """Columns ingest adds when a batch lands."""
    import pyarrow as pa

    return (
        pa.field("device", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("clock_offset_s", pa.float64(), nullable=True),
    )


def __getattr__(name: str) -> Any:
    # ENVELOPE_COLUMNS is read from the Arrow fields on first use, so importing the envelope loads no Arrow.
    if name == "ENVELOPE_COLUMNS":
        value = frozenset(f.name for f in envelope_arrow_fields() + landing_arrow_fields())
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
