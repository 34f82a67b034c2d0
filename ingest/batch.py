"""An uploaded batch: its Parquet body read and checked before anything lands.

Runs off the event loop. Nothing the sender wrote is trusted: the batch is checked against
the schema the *server* registered under its fingerprint (the schema text it carries is
ignored), and before any page is decompressed every page header is read (``pages.py``) to
bound what decompression and decoding will allocate: inflated bytes, and values decoded ×
their width from the server's schema (a vector's dim, 16 bytes a UUID). Text and binary
columns are read as dictionaries, so a long repeated value is measured against its cap
without being materialized. Errors of ours (out of memory) are ServerOverloaded, never a
4xx: a device dead-letters a 4xx.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgeloop.errors import BatchRejected, SchemaError, ServerOverloaded
from edgeloop.ingest.config import LimitSettings
from edgeloop.ingest.pages import scan_pages
from edgeloop.schemas.device_status import MAX_DROP_REASONS, NAME
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS, KINDS, OPTIONAL_ENVELOPE, with_declared_types
from edgeloop.schemas.model_schema import FieldSpec, ModelSchema
from edgeloop.times import EARLIEST_TIME_S, LATEST_TIME_S

__all__ = ["RESERVED_TABLES", "UploadedBatch", "check_batch_id", "read_batch"]

MAGIC = b"PAR1"
# Tables ingest owns; a model may not be named like one (or like another model's companions).
RESERVED_TABLES = frozenset({
    "batches", "devices", "models", "schemas", "label_coverage", "drops_daily", "rows_daily", "device_versions",
    "version_changes", "policies", "device_tags", "device_status", "device_health", "device_refusals", "landed_daily",
    "deletions", "device_health_deltas", "device_refusals_deltas", "landed_daily_deltas", "label_coverage_deltas",
    "drops_daily_deltas", "device_versions_deltas",
})
RESERVED_SUFFIXES = ("_feedback", "_training")
REQUIRED_METADATA = ("batch_id", "model", "schema_fingerprint")
MAX_FOOTER_BYTES = 4 * 1024 * 1024  # 1M rows in 4,096-row groups with statistics is about 1.5 MB
USED_METADATA = ("batch_id", "model", "schema_fingerprint", "agent_version", "drops", "sealed_at")
METADATA_VALUE_CHARS = 4096
HASH_HEX_BYTES = 64  # a ``hash`` field is stored as the hex of an HMAC-SHA256
# Redaction placeholders (<EMAIL>, <IPV4>...) can be a little longer than what they replace.
REDACT_SLACK = 1.25
LEVEL_BYTES = 4  # a definition and a repetition level, int16 each, per decoded value
PAGE_SLACK_BYTES = 64 * 1024
# kind and model are short names; model_version and source are at most 128 characters on the device.
ENVELOPE_TEXT_BYTES = 4 * 128
FIXED_WIDTH = {"bool": 1, "int32": 4, "int64": 8, "float32": 4, "float64": 8, "timestamp": 8}
# The times a reader can hold: Python's datetime range in UTC (past it, reading the table fails;
# DuckDB stores its infinities at the ends of int64).
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
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
    decoded_bytes: int  # what the rows take once materialized (the landing queue counts this)
    agent_version: str | None = None
    sealed_at: str | None = None
    drops: dict[str, int] = field(default_factory=dict)
    # (lowest, highest) record id when no id repeats inside the batch, else None: lets the writer skip its duplicate join
    id_span: tuple[bytes, bytes] | None = None

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


def read_batch(
    body: bytes,
    *,
    batch_id: str,
    limits: LimitSettings,
    schema_for: Callable[[str], ModelSchema | None],
    reserve: Callable[[int], AbstractContextManager[None]] = lambda nbytes: nullcontext(),
    sha256: str | None = None,
) -> UploadedBatch:
    """Read and check an uploaded Parquet body against the registered schema its fingerprint names.

    Any problem with the body is a BatchRejected with its HTTP status; running out of
    memory while reading it is ServerOverloaded (503: the device retries).
    """
    if len(body) < 12 or not body.startswith(MAGIC):
        raise BatchRejected(400, "not_parquet", "the body is not a Parquet file (no PAR1 magic)")
    if not body.endswith(MAGIC):
        raise BatchRejected(400, "truncated_parquet", "the Parquet file is truncated (no footer)")
    footer_bytes = int.from_bytes(body[-8:-4], "little")
    if footer_bytes > len(body) - 12:
        raise BatchRejected(400, "corrupt_parquet", f"the Parquet footer claims {footer_bytes} bytes, more than the file has")
    if footer_bytes > MAX_FOOTER_BYTES:
        # A sealed batch's footer is kilobytes; megabytes of metadata are only there to be parsed and kept.
        raise BatchRejected(
            413, "footer_too_large", f"the Parquet footer is {footer_bytes} bytes, over the limit of {MAX_FOOTER_BYTES}",
            {"footer_bytes": footer_bytes, "limit": MAX_FOOTER_BYTES},
        )
    try:
        meta = pq.read_metadata(pa.BufferReader(body))
        # Not meta.schema: it and meta hold each other, so the footer would wait for the cycle collector.
        file_schema = pq.ParquetFile(pa.BufferReader(body), metadata=meta).schema_arrow
    except MemoryError as exc:
        raise ServerOverloaded(f"out of memory reading a batch footer: {exc}") from exc
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise BatchRejected(400, "corrupt_parquet", f"the Parquet footer cannot be read: {exc}") from exc
    if meta.num_rows > limits.max_rows_per_batch:
        raise BatchRejected(
            413, "too_many_rows", f"{meta.num_rows} rows is over the limit of {limits.max_rows_per_batch}",
            {"rows": meta.num_rows, "limit": limits.max_rows_per_batch},
        )
    kv = _metadata(meta, limits.max_footer_metadata_bytes)
    if kv["batch_id"] != batch_id:
        raise BatchRejected(
            422, "batch_id_mismatch", f"the file says batch {kv['batch_id']!r} but was uploaded as {batch_id!r}"
        )
    fingerprint = kv["schema_fingerprint"]
    schema = schema_for(fingerprint)
    if schema is None or schema.name != kv["model"]:
        raise BatchRejected(
            422, "unknown_schema",
            f"model {kv['model'][:64]!r} schema {fingerprint[:64]!r} is not registered on this server; "
            "the device keeps the batch and retries it once an admin runs `edgeloop-ingest schemas push <schema file>`",
            {"model": kv["model"][:64], "fingerprint": fingerprint[:64]},
        )
    expected = _check_columns(file_schema, schema.arrow_schema)
    bound = _check_pages(body, meta, schema, limits)
    textual = [f.name for f in file_schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
    with reserve(bound):
        try:
            # The footer parsed above is reused; no inner threads: uploads are already read in parallel.
            table = pq.ParquetFile(
                pa.BufferReader(body), metadata=meta, read_dictionary=textual, arrow_extensions_enabled=True
            ).read(use_threads=False)
            # Parquet's reader does not check that text is UTF-8; Python would fail on it later (a 500).
            for field in table.schema:
                if pa.types.is_dictionary(field.type) and pa.types.is_string(field.type.value_type):
                    for chunk in table.column(field.name).chunks:
                        chunk.dictionary.validate(full=True)
        except MemoryError as exc:
            raise ServerOverloaded(f"out of memory reading a batch: {exc}") from exc
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise BatchRejected(400, "corrupt_parquet", f"the Parquet data cannot be read: {exc}") from exc
        if table.num_rows != meta.num_rows or not _same_types(table.schema, expected):
            raise BatchRejected(400, "corrupt_parquet", "the Parquet data does not match its own footer")
        for name in OPTIONAL_ENVELOPE:
            if table.schema.get_field_index(name) < 0:  # a batch from an agent before the column
                table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
        try:
            table = with_declared_types(table, schema.arrow_schema)
        except SchemaError as exc:
            raise BatchRejected(422, "schema_mismatch", str(exc), [{"column": exc.field, "problem": str(exc)}]) from exc
        _check_values(table, schema, limits)
        decoded_bytes = _check_decoded_size(table, limits)
        predictions = _check_rows(table, schema)
        id_span = _id_span(table.column("record_id"))
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
        decoded_bytes=decoded_bytes,
        id_span=id_span,
    )


def _id_span(ids: pa.ChunkedArray) -> tuple[bytes, bytes] | None:
    """The lowest and highest record id, if every id of the batch is distinct (counted here, on a check thread)."""
    raw = pa.chunked_array([chunk.storage for chunk in ids.chunks], pa.binary(16))
    if not len(raw) or pc.count_distinct(raw).as_py() < len(raw):
        return None
    bounds = pc.min_max(raw)
    return bounds["min"].as_py(), bounds["max"].as_py()


def _check_pages(body: bytes, meta: pq.FileMetaData, schema: ModelSchema, limits: LimitSettings) -> int:
    """Bound what reading the batch allocates, from its page headers and the server's schema, before reading it."""
    rows = meta.num_rows
    specs = {spec.name: spec for spec in schema.stored_fields}
    total = 0
    for column in scan_pages(body, meta, max_pages=limits.max_pages_per_batch):
        name = column.path.split(".", 1)[0]
        spec = specs.get(name)
        per_row = spec.dim if spec is not None and spec.type == "vector" else 1
        if column.values > rows * per_row:
            raise BatchRejected(
                422, "schema_mismatch",
                f"column {name!r} holds {column.values} values in its pages, more than {rows} rows × {per_row}",
                [{"column": name, "problem": "more values than rows", "values": column.values, "rows": rows}],
            )
        width = _leaf_width(name, spec)
        if width is None:  # text or binary: read as a dictionary, bounded by its inflated pages
            cap = _value_cap(spec, limits)
            # Dictionary and data pages each hold at most every row's value at its cap.
            most = 2 * rows * (cap + 4) + rows + PAGE_SLACK_BYTES
            if column.inflated_bytes > most:
                raise BatchRejected(
                    422, "bad_values",
                    f"column {name!r} inflates to {column.inflated_bytes} bytes: more than {rows} values of at most {cap} bytes",
                    [{"column": name, "problem": "pages larger than rows × cap", "bytes": column.inflated_bytes, "limit": cap}],
                )
            decoded = column.inflated_bytes + 4 * column.values
        else:
            decoded = column.values * width
        total += column.inflated_bytes + decoded + LEVEL_BYTES * column.values
    if total > limits.max_decompressed_bytes:
        raise BatchRejected(
            413, "too_large_decompressed",
            f"the batch inflates to {total} bytes, over the limit of {limits.max_decompressed_bytes}",
            {"decompressed_bytes": total, "limit": limits.max_decompressed_bytes},
        )
    return total


def _leaf_width(name: str, spec: FieldSpec | None) -> int | None:
    """Bytes per decoded value of a column, None for text and binary."""
    if spec is None:  # an envelope column
        return {"record_id": 16, "prediction_id": 16, "created_at": 8, "sample_weight": 8}.get(name)
    if spec.privacy.action == "hash" or spec.type in ("string", "binary"):
        return None
    if spec.type == "vector":
        return 4
    return FIXED_WIDTH[spec.type]


def _value_cap(spec: FieldSpec | None, limits: LimitSettings) -> int:
    """The longest a stored text or binary value may be: the server's schema decides, not the sender."""
    if spec is None:
        return ENVELOPE_TEXT_BYTES
    if spec.privacy.action == "hash":
        return HASH_HEX_BYTES
    if spec.max_bytes is None:
        return limits.max_value_bytes
    if spec.privacy.action == "redact":
        return int(spec.max_bytes * REDACT_SLACK)
    return spec.max_bytes


def _check_values(table: pa.Table, schema: ModelSchema, limits: LimitSettings) -> None:
    """String and binary values within their caps, times within years 1 to 9999, sample weights finite and at least 1."""
    details: list[dict[str, Any]] = []
    for arrow_field in table.schema:
        if not pa.types.is_dictionary(arrow_field.type):
            continue
        cap = _value_cap(schema.field(arrow_field.name), limits)
        longest = 0
        for chunk in table.column(arrow_field.name).chunks:
            longest = max(longest, pc.max(pc.binary_length(chunk.dictionary)).as_py() or 0)
        if longest > cap:
            details.append({"column": arrow_field.name, "problem": f"a value of {longest} bytes is over the cap of {cap}",
                            "bytes": longest, "limit": cap})
    for arrow_field in table.schema:
        if pa.types.is_timestamp(arrow_field.type):
            scale = _PER_SECOND[arrow_field.type.unit]
            ticks = pc.cast(table.column(arrow_field.name), pa.int64())
            early = pc.less(ticks, EARLIEST_TIME_S * scale)
            late = pc.greater(ticks, min(LATEST_TIME_S * scale + scale - 1, 2**63 - 2))
            outside = pc.sum(pc.or_(early, late)).as_py() or 0
            if outside:
                details.append({"column": arrow_field.name, "problem": f"{outside} times are outside years 1 to 9999 in UTC "
                                "(infinite, or past what readers of the table can hold)"})
    weights = table.column("sample_weight")
    # 1/p for a kept prediction (p <= 1), 1 for feedback: anything else no sampler could give.
    bad = pc.sum(pc.invert(pc.fill_null(pc.and_(pc.is_finite(weights), pc.greater_equal(weights, 1)), True))).as_py() or 0
    if bad:
        details.append({"column": "sample_weight", "problem": f"{bad} values are not a finite number >= 1"})
    if details:
        names = ", ".join(detail["column"] for detail in details)
        raise BatchRejected(422, "bad_values", f"some values break the server's schema: {names}", details)


def _same_types(got: pa.Schema, expected: pa.Schema) -> bool:
    """Whether the decoded columns are what the footer's Arrow schema promised (a lying ARROW:schema is not)."""
    return len(got) == len(expected) and all(
        got.get_field_index(e.name) >= 0 and _same(got.field(e.name).type, e.type) for e in expected
    )


def _check_decoded_size(table: pa.Table, limits: LimitSettings) -> int:
    """What every column takes once materialized, dictionaries counted per use; over the limit is a 413.

    First a cheap upper bound (rows × the longest dictionary value); only a batch whose bound
    breaks the limit pays for the exact count, a take over every row of its text columns.
    """
    limit = limits.max_decompressed_bytes
    bound = _decoded_size(table, exact=False, limit=limit)
    if bound <= limit:
        return bound
    exact = _decoded_size(table, exact=True, limit=limit)
    if exact > limit:
        raise BatchRejected(
            413, "too_large_decompressed",
            f"the batch's values take more than the limit of {limit} bytes",
            {"limit": limit},
        )
    return exact


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


def _metadata(meta: pq.FileMetaData, max_bytes: int) -> dict[str, str]:
    raw = meta.metadata or {}
    size = sum(len(key) + len(value) for key, value in raw.items())
    if size > max_bytes:
        # A batch needs its ids and fingerprint; megabytes here are only there to be parsed and held.
        raise BatchRejected(
            413, "metadata_too_large",
            f"the Parquet footer carries {size} bytes of key-value metadata, over the limit of {max_bytes}",
            {"metadata_bytes": size, "limit": max_bytes},
        )
    values: dict[str, str] = {}
    for name in USED_METADATA:  # the schema text a batch carries is never read: the server's catalog decides
        key = BATCH_METADATA_KEYS[name]
        if key in raw:
            values[name] = raw[key][:METADATA_VALUE_CHARS].decode("utf-8", "replace")
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
    if pa.types.is_list(got) and pa.types.is_fixed_size_list(expected):
        # A batch without ARROW:schema: Parquet keeps a list, its sizes are checked once read (with_declared_types).
        return got.value_type == expected.value_type
    return got == expected


def _check_columns(got: pa.Schema, expected: pa.Schema) -> pa.Schema:
    """The columns the batch must have (optional envelope columns it lacks left out), or a 422 naming the mismatches."""
    details: list[dict[str, Any]] = []
    for name in OPTIONAL_ENVELOPE:
        if got.get_field_index(name) < 0:
            expected = expected.remove(expected.get_field_index(name))
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
    return expected


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
    """The batch's drop counts as a status document would carry them: named reasons, at most 64 (the largest).

    Anything else is left out, not refused: the rows are what matters, and each reason a device
    made up would be a row in ``drops_daily`` and a series on the dashboard's chart.
    """
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    counts = {key: count for key, count in value.items()
              if NAME.fullmatch(key) and type(count) is int and count > 0}
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:MAX_DROP_REASONS])
