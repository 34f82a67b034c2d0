"""The envelope every record carries, whatever its model.

Device-set columns travel in every sealed batch; landing columns are added by ingest.
"""

from __future__ import annotations

from typing import TypeVar

import pyarrow as pa

T = TypeVar("T", pa.RecordBatch, pa.Table)

__all__ = [
    "BATCH_METADATA_KEYS",
    "ENVELOPE_COLUMNS",
    "KINDS",
    "LANDING_COLUMNS",
    "OPTIONAL_ENVELOPE",
    "envelope_arrow_fields",
    "landing_arrow_fields",
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
}


def envelope_arrow_fields() -> tuple[pa.Field, ...]:
    """Columns set on the device, in order, before the model's own fields."""
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


def landing_arrow_fields() -> tuple[pa.Field, ...]:
    """Columns ingest adds when a batch lands."""
    return (
        pa.field("device", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("clock_offset_s", pa.float64(), nullable=True),
    )


ENVELOPE_COLUMNS = frozenset(f.name for f in envelope_arrow_fields()) | frozenset(
    f.name for f in landing_arrow_fields()
)
