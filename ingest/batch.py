"""An uploaded batch: its Parquet body read and checked before anything lands.

Runs off the event loop. The footer is checked first, so a small file that would inflate
past the limit is refused before any page is decompressed; text and binary columns are
read as dictionaries, so a long repeated value is measured without being materialized.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgeloop.errors import BatchRejected, SchemaError
from edgeloop.ingest.config import LimitSettings
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS, KINDS
from edgeloop.schemas.model_schema import ModelSchema

__all__ = ["RESERVED_TABLES", "UploadedBatch", "check_batch_id", "read_batch"]

MAGIC = b"PAR1"
# Tables ingest owns; a model may not be named like one (or like another model's companions).
RESERVED_TABLES = frozenset({"batches", "devices", "models"})
RESERVED_SUFFIXES = ("_feedback", "_training")
REQUIRED_METADATA = ("batch_id", "model", "schema_fingerprint", "schema")
NOT_NULL = ("record_id", "kind", "model", "model_version", "created_at", "sample_weight")


@dataclass(frozen=True, slots=True)
class UploadedBatch:
    """A batch that passed every check and may land."""

    batch_id: str
    model: str
    schema: ModelSchema
    table: pa.Table
    bytes: int
    sha256: str
    predictions: int  # counted while checking, off the writer thread; the other rows are feedback
    agent_version: str | None = None
    sealed_at: str | None = None
    drops: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def feedback(self) -> int:
        return self.table.num_rows - self.predictions


def check_batch_id(batch_id: str) -> str:
    """A batch id is a UUID in canonical lower-case text; anything else is a 400."""
    try:
        parsed = uuid.UUID(batch_id)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != batch_id:
        raise BatchRejected(400, "bad_batch_id", f"batch id {batch_id[:80]!r} is not a lower-case UUID")
    return batch_id


def read_batch(body: bytes, *, batch_id: str, limits: LimitSettings, sha256: str | None = None) -> UploadedBatch:
    """Read and check an uploaded Parquet body; any problem is a BatchRejected with its HTTP status."""
    if len(body) < 12 or not body.startswith(MAGIC):
        raise BatchRejected(400, "not_parquet", "the body is not a Parquet file (no PAR1 magic)")
    if not body.endswith(MAGIC):
        raise BatchRejected(400, "truncated_parquet", "the Parquet file is truncated (no footer)")
    try:
        meta = pq.read_metadata(pa.BufferReader(body))
        file_schema = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchRejected(400, "corrupt_parquet", f"the Parquet footer cannot be read: {exc}") from exc
    _check_footer_sizes(meta, limits)
    kv = _metadata(meta)
    if kv["batch_id"] != batch_id:
        raise BatchRejected(
            422, "batch_id_mismatch", f"the file says batch {kv['batch_id']!r} but was uploaded as {batch_id!r}"
        )
    schema = _parse_schema(kv["schema"])
    if schema.name != kv["model"]:
        raise BatchRejected(422, "bad_schema", f"metadata names model {kv['model']!r} but its schema is {schema.name!r}")
    if schema.fingerprint != kv["schema_fingerprint"]:
        raise BatchRejected(
            422, "bad_schema", f"schema fingerprint {kv['schema_fingerprint']!r} does not match the schema it carries"
        )
    if schema.name in RESERVED_TABLES or schema.name.endswith(RESERVED_SUFFIXES):
        raise BatchRejected(422, "reserved_model_name", f"model name {schema.name!r} clashes with ingest's own tables")
    _check_columns(file_schema, schema.arrow_schema)
    textual = [f.name for f in file_schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
    try:
        # The footer parsed above is reused; no inner threads: uploads are already read in parallel.
        table = pq.ParquetFile(
            pa.BufferReader(body), metadata=meta, read_dictionary=textual, arrow_extensions_enabled=True
        ).read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchRejected(400, "corrupt_parquet", f"the Parquet data cannot be read: {exc}") from exc
    _check_decoded_size(table, limits)
    table = _normalize_uuids(table)
    predictions = _check_rows(table, schema)
    return UploadedBatch(
        batch_id=batch_id,
        model=schema.name,
        schema=schema,
        table=table,
        bytes=len(body),
        sha256=sha256 or hashlib.sha256(body).hexdigest(),
        agent_version=kv.get("agent_version"),
        sealed_at=kv.get("sealed_at"),
        drops=_drops(kv.get("drops")),
        predictions=predictions,
    )


@lru_cache(maxsize=256)
def _parse_schema(text: str) -> ModelSchema:
    """A batch's schema JSON, parsed once per distinct text: a fleet sends few schemas, many batches."""
    try:
        return ModelSchema.from_canonical_json(text)
    except SchemaError as exc:
        raise BatchRejected(422, "bad_schema", str(exc)) from exc


def _check_footer_sizes(meta: pq.FileMetaData, limits: LimitSettings) -> None:
    if meta.num_rows > limits.max_rows_per_batch:
        raise BatchRejected(
            413, "too_many_rows", f"{meta.num_rows} rows is over the limit of {limits.max_rows_per_batch}",
            {"rows": meta.num_rows, "limit": limits.max_rows_per_batch},
        )
    total = 0
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for column in range(row_group.num_columns):
            total += max(row_group.column(column).total_uncompressed_size, 0)
    if total > limits.max_decompressed_bytes:
        raise BatchRejected(
            413, "too_large_decompressed",
            f"the batch inflates to {total} bytes, over the limit of {limits.max_decompressed_bytes}",
            {"decompressed_bytes": total, "limit": limits.max_decompressed_bytes},
        )


def _check_decoded_size(table: pa.Table, limits: LimitSettings) -> None:
    """Sum what every column would take once materialized; dictionaries are counted per use.

    First a cheap upper bound (rows × the longest dictionary value); only a batch whose bound
    breaks the limit pays for the exact count, a take over every row of its text columns.
    """
    limit = limits.max_decompressed_bytes
    if _decoded_size(table, exact=False, limit=limit) <= limit:
        return
    if _decoded_size(table, exact=True, limit=limit) > limit:
        raise BatchRejected(
            413, "too_large_decompressed",
            f"the batch's values take more than the limit of {limit} bytes",
            {"limit": limit},
        )


def _decoded_size(table: pa.Table, *, exact: bool, limit: int) -> int:
    """The materialized size of ``table`` (or an upper bound); stops counting once past ``limit``."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            if not pa.types.is_dictionary(chunk.type):
                total += chunk.get_total_buffer_size()
                continue
            lengths = pc.binary_length(chunk.dictionary)
            if exact:
                total += (pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0) + 4 * len(chunk)
            else:
                total += len(chunk) * ((pc.max(lengths).as_py() or 0) + 4)
        if total > limit:
            break
    return total


def _metadata(meta: pq.FileMetaData) -> dict[str, str]:
    raw = meta.metadata or {}
    values: dict[str, str] = {}
    for name, key in BATCH_METADATA_KEYS.items():
        if key in raw:
            values[name] = raw[key].decode("utf-8", "replace")
    missing = [name for name in REQUIRED_METADATA if name not in values]
    if missing:
        raise BatchRejected(
            422, "missing_metadata", f"the batch lacks edgeloop metadata: {', '.join(missing)}",
            [{"key": BATCH_METADATA_KEYS[name].decode(), "problem": "missing"} for name in missing],
        )
    return values


def _plain(type_: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(type_):
        return type_.value_type
    if type_ == pa.binary(16):
        return pa.uuid()  # a UUID column from a writer that drops the Arrow extension
    return type_


def _same(got: pa.DataType, expected: pa.DataType) -> bool:
    got = _plain(got)
    if pa.types.is_fixed_size_list(got) and pa.types.is_fixed_size_list(expected):
        return got.list_size == expected.list_size and got.value_type == expected.value_type
    return got == expected


def _check_columns(got: pa.Schema, expected: pa.Schema) -> None:
    details: list[dict[str, Any]] = []
    for wanted in expected:
        index = got.get_field_index(wanted.name)
        if index < 0:
            details.append({"column": wanted.name, "problem": "missing", "expected": str(wanted.type)})
        elif not _same(got.field(index).type, wanted.type):
            details.append(
                {"column": wanted.name, "problem": "wrong type", "expected": str(wanted.type), "got": str(got.field(index).type)}
            )
    for extra in got:
        if expected.get_field_index(extra.name) < 0:
            details.append({"column": extra.name, "problem": "not in the batch's schema", "got": str(extra.type)})
    if details:
        names = ", ".join(detail["column"] for detail in details)
        raise BatchRejected(422, "schema_mismatch", f"the columns do not match the batch's schema: {names}", details)


def _normalize_uuids(table: pa.Table) -> pa.Table:
    for index, column in enumerate(table.schema):
        if column.type == pa.binary(16):
            chunks = [pa.ExtensionArray.from_storage(pa.uuid(), chunk) for chunk in table.column(index).chunks]
            table = table.set_column(index, pa.field(column.name, pa.uuid(), column.nullable), pa.chunked_array(chunks, pa.uuid()))
    return table


def _counts(column: pa.ChunkedArray) -> dict[Any, int]:
    """Rows per distinct value; works on the dictionary-encoded text columns without decoding them."""
    counts: dict[Any, int] = {}
    for entry in pc.value_counts(column).to_pylist():
        counts[entry["values"]] = counts.get(entry["values"], 0) + entry["counts"]
    return counts


def _check_rows(table: pa.Table, schema: ModelSchema) -> int:
    """Refuse rows that cannot land; return how many are predictions."""
    details: list[dict[str, Any]] = []
    for name in NOT_NULL:
        nulls = table.column(name).null_count
        if nulls:
            details.append({"column": name, "problem": f"{nulls} null values in a required envelope column"})
    kinds = _counts(table.column("kind"))
    unknown = {kind for kind in kinds if kind is not None} - set(KINDS)
    if unknown:
        details.append({"column": "kind", "problem": f"unknown kinds {sorted(unknown)}"})
    models = {value for value in _counts(table.column("model")) if value is not None}
    if models - {schema.name}:
        details.append({"column": "model", "problem": f"rows of other models {sorted(models - {schema.name})} in a {schema.name!r} batch"})
    if kinds.get("feedback"):
        is_feedback = pc.equal(table.column("kind").cast(pa.string()), "feedback")
        orphans = pc.sum(pc.and_(is_feedback, pc.is_null(table.column("prediction_id")))).as_py() or 0
        if orphans:
            details.append({"column": "prediction_id", "problem": f"{orphans} feedback rows without a prediction_id"})
    if details:
        names = ", ".join(detail["column"] for detail in details)
        raise BatchRejected(422, "bad_rows", f"some rows cannot land: {names}", details)
    return kinds.get("prediction", 0)


def _drops(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(key): int(count) for key, count in value.items() if isinstance(count, int)}
