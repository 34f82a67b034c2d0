"""Query results out of the database: the training export and the CLI's output formats."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from edgeloop.durable import write_durably
from edgeloop.errors import QueryFailed
from edgeloop.ingest.store import quote
from edgeloop.schemas.model_schema import NAME_PATTERN

__all__ = ["FORMATS", "Format", "render", "training_query", "write_output"]

Format = Literal["table", "csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")


def training_query(
    model: str, *, since: datetime | None = None, until: datetime | None = None, labeled_only: bool = False
) -> tuple[str, list[Any]]:
    """SQL over ``<model>_training``: each prediction with its latest label and its sample weight."""
    if not NAME_PATTERN.match(model):
        raise QueryFailed(f"{model!r} is not a model name")
    where, params = [], []
    if since is not None:
        where.append("created_at >= ?::TIMESTAMPTZ")
        params.append(since.isoformat())
    if until is not None:
        where.append("created_at < ?::TIMESTAMPTZ")
        params.append(until.isoformat())
    if labeled_only:
        where.append("feedback_id IS NOT NULL")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT * FROM {quote(model + '_training')}{clause} ORDER BY created_at, record_id", params


def render(table: pa.Table, fmt: Format) -> bytes:
    """The table as bytes in ``fmt``; ``table`` is aligned text for a terminal."""
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()
    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(_printable(table), sink)
        return sink.getvalue()
    if fmt == "json":
        rows = table.to_pylist()
        return b"\n".join(orjson.dumps(row, default=_json_default) for row in rows) + (b"\n" if rows else b"")
    return _text_table(table).encode()


def write_output(table: pa.Table, fmt: Format, out: Path | None, stdout: Any) -> None:
    """Write to ``out`` durably, or to ``stdout``; Parquet needs a file."""
    data = render(table, fmt)
    if out is None:
        if fmt == "parquet":
            raise QueryFailed("--format parquet needs --out FILE")
        stdout.write(data.decode())
        return
    write_durably(out, data)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _printable(table: pa.Table) -> pa.Table:
    """CSV cannot hold lists or UUIDs: spell them as text."""
    columns = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, pa.ExtensionType) or pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
            columns.append(pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string()))
        else:
            columns.append(column)
    return pa.table(columns, names=table.column_names)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _text_table(table: pa.Table, limit: int = 10_000) -> str:
    names: Sequence[str] = table.column_names
    rows = [[_cell(v) for v in row.values()] for row in table.slice(0, limit).to_pylist()]
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(names)]
    lines = ["  ".join(name.ljust(widths[i]) for i, name in enumerate(names)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
    more = table.num_rows - len(rows)
    lines.append(f"({table.num_rows} rows{f', first {len(rows)} shown' if more else ''})")
    return "\n".join(lines) + "\n"
