"""Query results out of the database: the training export and the CLI's output formats.

Results arrive as a stream of Arrow batches (``ResultStream``) from either backend and are
written without holding them: CSV and Parquet through DuckDB's own ``COPY ... TO`` (an
in-memory DuckDB that can write to nothing but the one path the CLI chose), JSON and the
terminal table batch by batch. Files are written next to their destination and renamed into
place once complete and fsynced; ``-`` means stdout.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import duckdb
import orjson

from edgeloop.durable import fsync_dir
from edgeloop.errors import EdgeloopError, QueryFailed
from edgeloop.ingest.connection import quote
from edgeloop.ingest.query import UHUGEINT_TEXT, text_columns
from edgeloop.schemas.names import NAME_PATTERN
from edgeloop.units import printable

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FORMATS",
    "Format",
    "JSON_OPTIONS",
    "STDOUT",
    "copy_options",
    "copy_result",
    "copy_target",
    "exported_select",
    "target_path",
    "Progress",
    "ResultStream",
    "interval_text",
    "json_default",
    "json_rows",
    "parquet_metadata",
    "training_query",
    "wide_ints_as_text",
    "write_result",
]

Format = Literal["table", "csv", "json", "parquet"]
FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")
STDOUT = Path("-")
TABLE_ROWS_SHOWN = 10_000
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


@dataclass
class ResultStream:
    """A query's rows as Arrow batches, read once; ``truncated`` is known after the last batch."""

    schema: pa.Schema
    batches: Iterator[pa.RecordBatch]
    tables: frozenset[str] = frozenset()
    truncated: bool = False
    truncated_reason: str = ""
    close: Callable[[], None] = field(default=lambda: None)

    @classmethod
    def of(cls, table: pa.Table) -> ResultStream:
        """A table already in memory (a small answer such as ``fleet``) as a stream."""
        return cls(table.schema, iter(table.to_batches()))

    def reader(self, on_batch: Callable[[pa.RecordBatch], None] | None = None) -> pa.RecordBatchReader:
        """The batches as a RecordBatchReader (what DuckDB scans), calling ``on_batch`` for each."""
        import pyarrow as pa  # here and below: an export DuckDB writes itself (COPY) loads no Arrow

        def counted() -> Iterator[pa.RecordBatch]:
            for batch in self.batches:
                if on_batch:
                    on_batch(batch)
                yield batch

        return pa.RecordBatchReader.from_batches(self.schema, counted())


def training_query(
    model: str, *, since: datetime | None = None, until: datetime | None = None, labeled_only: bool = False,
    truth: str | None = None,
) -> tuple[str, list[Any]]:
    """SQL over ``<model>_training``: each prediction with its latest label and its sample weight.

    ``labeled_only`` keeps predictions whose ``truth`` field has a value (any feedback if the model declares none):
    a prediction with only a comment is not a training example.
    """
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
        where.append(f"{quote(truth)} IS NOT NULL" if truth else "feedback_id IS NOT NULL")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT * FROM {quote(model + '_training')}{clause} ORDER BY created_at, record_id", params


def exported_select(con: duckdb.DuckDBPyConnection, select: str, params: Sequence[Any] = (), *, parquet: bool = False) -> str:
    """``select`` with its columns in the types every export writes them in, whichever path (COPY or Arrow) wrote it.

    UUIDs as text: Spark (4.0) refuses Parquet's 16-byte UUID type and readers that do not map it give
    raw bytes; text reads as the same string everywhere and joins with CSV, JSON and the label queue.
    A UHUGEINT, TIMETZ, BIT or BIGNUM (or a column holding one) as DuckDB's text, as the Arrow stream
    sends it (``query.wide_as_text``).
    In Parquet a HUGEINT as DECIMAL(38, 0), the type the Arrow stream gives it: DuckDB would write a
    DOUBLE, rounding it past 2^53; one past 38 digits is refused instead.
    """
    described = con.execute(f"DESCRIBE {select}", list(params) if params else None).fetchall()
    as_text = {name for name, _ in text_columns(described)}
    casts = []
    for name, kind, *_ in described:
        if kind == "UUID" or name in as_text:
            casts.append(f"{quote(name)}::VARCHAR AS {quote(name)}")
        elif parquet and kind == "HUGEINT":
            casts.append(f"{quote(name)}::DECIMAL(38, 0) AS {quote(name)}")
    if not casts:
        return select
    return f"SELECT * REPLACE ({', '.join(casts)}) FROM ({select})"


def parquet_metadata(query: str, params: Sequence[Any], fingerprints: dict[str, str], version: str) -> dict[str, str]:
    """What an exported Parquet file records in its footer about where its rows came from."""
    return {
        "edgeloop.query": query,
        "edgeloop.params": orjson.dumps(list(params), default=str).decode(),
        "edgeloop.schema_fingerprints": orjson.dumps(fingerprints, option=orjson.OPT_SORT_KEYS).decode(),
        "edgeloop.exported_at": datetime.now(UTC).isoformat(),
        "edgeloop.version": version,
    }


class Progress:
    """Rows written so far on one terminal line (stderr), with a bar when the total is known."""

    def __init__(self, stream: Any, *, total: int | None = None, interval_s: float = 0.2) -> None:
        self.stream = stream
        self.total = total
        self.rows = 0
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._shown = 0.0

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._shown >= self.interval_s:
            self._shown = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def percent(self, done: float) -> None:
        """DuckDB's own estimate (0-100, or -1 before it has one) while it writes the rows itself."""
        now = time.monotonic()
        if done >= 0 and now - self._shown >= self.interval_s:
            self._shown = now
            bar = "#" * int(min(done, 100) * 0.3)
            self.stream.write(f"\r[{bar:<30}] {done:4.0f}%")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = f"{self.rows / elapsed:,.0f} rows/s"
        if self.total:
            done = min(self.rows / self.total, 1.0)
            bar = "#" * int(done * 30)
            return f"[{bar:<30}] {done:4.0%} {self.rows:,}/{self.total:,} rows, {rate}"
        return f"{self.rows:,} rows written, {rate}"

    def finish(self) -> None:
        self.stream.write("\r" + self.line() + "\n")
        self.stream.flush()


def write_result(
    result: ResultStream,
    fmt: Format,
    out: Path | None,
    stdout: Any,
    *,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Write the stream in ``fmt`` to ``out`` (``-`` or None: stdout); returns the rows written."""
    counter = [0]

    def seen(batch: pa.RecordBatch) -> None:
        counter[0] += batch.num_rows
        if progress:
            progress.add(batch.num_rows)

    # A stream can fail after rows have come: stdout gets the result from a spool file once it is whole, or nothing.
    spool = _spool_file() if fmt != "table" and (out is None or out == STDOUT) else None
    try:
        target = spool or out
        if fmt == "table":
            text = _text_table(result, seen)
            _to_text_sink(out, stdout, text.encode())
        elif fmt == "json":
            _to_sink(target, stdout, lambda handle: _write_json(result, handle, seen))
        else:
            source, failed = _failure_kept(result.batches)
            result.batches = source
            if fmt == "csv":
                result.schema, result.batches = _hugeints_as_text(result.schema, source)
            try:
                _copy(result.reader(seen), fmt, target, stdout, metadata if fmt == "parquet" else None)
            except QueryFailed:
                if failed:  # DuckDB's COPY read the rows: its error wraps the stream's, whose code and message count
                    raise failed[0] from None
                raise
        if spool is not None:
            _spool_to(spool, stdout)
    finally:
        if spool is not None:
            spool.unlink(missing_ok=True)
        result.close()
    if progress:
        progress.finish()
    return counter[0]


def _spool_file() -> Path:
    """An empty file of our own in the temp directory (``TMPDIR``) that holds a result bound for stdout."""
    fd, name = tempfile.mkstemp(prefix="edgeloop-result-")
    os.close(fd)
    return Path(name)


def _spool_to(spool: Path, stdout: Any) -> None:
    stdout.flush()
    sink = stdout.buffer if hasattr(stdout, "buffer") else _TextAsBinary(stdout)
    with open(spool, "rb") as handle:
        if _is_terminal(stdout):  # text from devices and labellers reaches a person: its controls shown, not obeyed
            for line in handle:
                body = line.rstrip(b"\n")
                sink.write(printable(body.decode("utf-8", "replace")).encode() + line[len(body):])
        else:  # a pipe or a file gets the result byte for byte
            shutil.copyfileobj(handle, sink)
    stdout.flush()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _hugeints_as_text(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Each HUGEINT column (a DECIMAL(38, 0) in the server's stream) as its digits: DuckDB's Arrow scan refuses -2^127."""
    import pyarrow as pa

    wide = {i for i, kind in enumerate(schema.types) if pa.types.is_decimal(kind) and kind.scale == 0}
    if not wide:
        return schema, batches
    texts = pa.schema([schema.field(i).with_type(pa.string()) if i in wide else schema.field(i) for i in range(len(schema))])

    def cast() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            columns = [column.cast(pa.string()) if i in wide else column for i, column in enumerate(batch.columns)]
            yield pa.RecordBatch.from_arrays(columns, schema=texts)

    return texts, cast()


def _failure_kept(batches: Iterator[pa.RecordBatch]) -> tuple[Iterator[pa.RecordBatch], list[EdgeloopError]]:
    """``batches`` as they come, and a list that holds the error (ours) that ended them, if one did."""
    failed: list[EdgeloopError] = []

    def kept() -> Iterator[pa.RecordBatch]:
        try:
            yield from batches
        except EdgeloopError as exc:
            failed.append(exc)
            raise

    return kept(), failed


def copy_options(fmt: Format, metadata: dict[str, str] | None) -> str:
    """COPY options for ``fmt``; Parquet carries ``metadata`` in its footer."""
    options = ["FORMAT parquet", "COMPRESSION zstd"] if fmt == "parquet" else ["FORMAT csv", "HEADER true"]
    options.append("USE_TMP_FILE false")  # we write a temp file of our own and rename it
    if metadata:
        pairs = ", ".join(f"{_literal(key)}: {_literal(value)}" for key, value in metadata.items())
        options.append(f"KV_METADATA {{{pairs}}}")
    return ", ".join(options)


def copy_result(
    copy: Callable[[str, Callable[[float], None] | None], int],
    fmt: Format,
    out: Path | None,
    stdout: Any,
    *,
    spool: Path | None = None,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> int:
    """Let the database itself COPY the result to its one path, then put it in place; the rows.

    The path is ``target_path(out)`` for a file; for stdout it is ``spool`` (from ``copy_target``), copied to
    stdout once the COPY has finished: a query that fails after its first rows prints nothing, as ``write_result``.
    """
    rows = [0]

    def write(_: Path) -> None:
        rows[0] = copy(copy_options(fmt, metadata), progress.percent if progress else None)

    if out is None or out == STDOUT:
        if spool is None:
            raise ValueError("a COPY bound for stdout needs its spool file (copy_target)")
        try:
            write(spool)
            _spool_to(spool, stdout)
        finally:  # here, not only in copy_target: the CLI may end its process without teardown once the rows are out
            spool.unlink(missing_ok=True)
    else:
        _into_place(out, write)
    if progress:
        progress.rows = rows[0]
        progress.finish()
    return rows[0]


def _copy(reader: pa.RecordBatchReader, fmt: Format, out: Path | None, stdout: Any, metadata: dict[str, str] | None) -> None:
    """Stream ``reader`` through DuckDB's COPY into the one path we chose, and nowhere else."""
    options = [copy_options(fmt, metadata)]

    def copy_to(target: Path) -> None:
        con = duckdb.connect()
        try:
            con.execute(f"SET allowed_paths = [{_literal(str(target))}]")
            for setting in ("enable_external_access = false", "autoload_known_extensions = false",
                            "autoinstall_known_extensions = false", "python_enable_replacements = false",
                            "TimeZone = 'UTC'", "lock_configuration = true"):
                con.execute(f"SET {setting}")
            con.register("__edgeloop_result", reader)
            con.execute(f"COPY (SELECT * FROM __edgeloop_result) TO {_literal(str(target))} ({', '.join(options)})")
        except duckdb.Error as exc:
            raise QueryFailed(f"cannot write {fmt}: {' '.join(str(exc).split())}") from exc
        finally:
            con.close()

    if out is None or out == STDOUT:
        stdout.flush()
        copy_to(Path("/dev/stdout"))
        return
    _into_place(out, copy_to)


def target_path(out: Path) -> Path:
    """Where a CSV or Parquet result bound for the file ``out`` is first written: a temp file beside it."""
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


@contextmanager
def copy_target(out: Path | None) -> Iterator[Path]:
    """The one path the database's own COPY may write: ``target_path(out)``, or for stdout a spool file of ours
    (removed on leaving), so stdout gets the whole result or nothing."""
    if out is not None and out != STDOUT:
        yield target_path(out)
        return
    spool = _spool_file()
    try:
        yield spool
    finally:
        spool.unlink(missing_ok=True)


def _into_place(out: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` next to ``out``, fsync, rename: ``out`` is whole or absent."""
    tmp = target_path(out)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if out.exists() and not out.is_file():  # made since --out was checked: a rename would replace the FIFO or device
            raise EdgeloopError(f"{out} is not a regular file (a FIFO, socket or device): nothing was written to it")
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent if str(out.parent) else Path("."))


def _to_sink(out: Path | None, stdout: Any, write: Callable[[BinaryIO], None]) -> None:
    if out is None or out == STDOUT:
        stdout.flush()
        write(stdout.buffer if hasattr(stdout, "buffer") else _TextAsBinary(stdout))
        stdout.flush()
        return

    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    _into_place(out, to_file)


def _to_text_sink(out: Path | None, stdout: Any, data: bytes) -> None:
    _to_sink(out, stdout, lambda handle: handle.write(data))


class _TextAsBinary:
    """Lets a text stream (a test's StringIO) take the bytes we write."""

    def __init__(self, text: Any) -> None:
        self.text = text

    def write(self, data: bytes) -> int:
        return self.text.write(data.decode())

    def flush(self) -> None:
        self.text.flush()


def _write_json(result: ResultStream, handle: BinaryIO, seen: Callable[[pa.RecordBatch], None]) -> None:
    for batch in result.batches:
        seen(batch)
        rows = json_rows(batch)
        if rows:
            handle.write(b"\n".join(orjson.dumps(row, default=json_default, option=JSON_OPTIONS) for row in rows) + b"\n")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def json_rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """A batch's rows as dicts of JSON-ready values; what Python cannot hold is spelt as DuckDB does."""
    import pyarrow as pa

    columns: list[list[Any]] = []
    for spec, column in zip(batch.schema, batch.columns):
        if spec.metadata == UHUGEINT_TEXT:  # digits of a UHUGEINT: a number where it fits 64 bits, as a HUGEINT is
            columns.append([None if text is None else _whole(int(text)) for text in column.to_pylist()])
            continue
        if pa.types.is_time(column.type) and _end_of_day(column):
            columns.append(_as_text(column))  # TIME '24:00:00': Python's time wraps it to midnight
            continue
        try:
            columns.append(column.to_pylist(maps_as_pydicts="lossy"))
        except (OverflowError, ValueError, pa.ArrowException):
            # 'infinity'::TIMESTAMP, DATE '294000-01-01': beyond Python's datetime, so DuckDB spells them.
            columns.append(_as_text(column))
    names = batch.schema.names
    return [dict(zip(names, values)) for values in zip(*columns)] if columns else [{} for _ in range(batch.num_rows)]


def _end_of_day(column: pa.Array) -> bool:
    """Whether a time column holds 24:00:00, which DuckDB's TIME allows and no Python time can be."""
    import pyarrow as pa
    import pyarrow.compute as pc

    unit = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
    return bool(pc.any(pc.greater_equal(column.cast(pa.int64()), 86_400 * unit)).as_py())


def _as_text(column: pa.Array) -> list[str | None]:
    import pyarrow as pa

    con = duckdb.connect()
    try:
        return [row[0] for row in con.from_arrow(pa.table({"v": column})).select("v::VARCHAR").fetchall()]
    finally:
        con.close()


def wide_ints_as_text(value: Any) -> Any:
    """``value`` with every whole number orjson cannot write (past 64 bits) as its exact digits, in lists and dicts too.

    Such numbers reach an answer from a database written before today's bounds (a schema's max_bytes of 10^30).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, dict):
        return {key: wide_ints_as_text(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [wide_ints_as_text(item) for item in value]
    return value


def json_default(value: Any) -> Any:
    """orjson's fallback: timestamps as RFC 3339 UTC, intervals as DuckDB prints them, bytes as hex.

    A whole decimal past 64 bits (a HUGEINT, a DECIMAL(38, 0)) is exact text: orjson writes no bigger integer.
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    import pyarrow as pa

    if isinstance(value, pa.MonthDayNano):
        return interval_text(value)
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return _whole(int(value))
        number = float(value)
        # A DECIMAL(38, 12) has more digits than a double: its exact digits as text, as a wide whole number's.
        return number if Decimal(repr(number)) == value else str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _whole(number: int) -> int | str:
    """A whole number as JSON holds it: itself within 64 bits, else its exact digits (orjson writes no bigger int)."""
    return number if -(2**63) <= number < 2**64 else str(number)


def interval_text(value: Any) -> str:
    """An interval as DuckDB prints it: ``1 year 2 months 3 days 04:05:06.5``."""
    months, days, nanos = value.months, value.days, value.nanoseconds
    parts = []
    years, months = divmod(months, 12) if months >= 0 else (-((-months) // 12), -((-months) % 12))
    for amount, unit in ((years, "year"), (months, "month"), (days, "day")):
        if amount:
            parts.append(f"{amount} {unit}{'' if abs(amount) == 1 else 's'}")
    if nanos or not parts:
        sign = "-" if nanos < 0 else ""
        micros = abs(nanos) // 1000
        seconds, micros = divmod(micros, 1_000_000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        clock = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        if micros:
            clock += f".{micros:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _cell(value: Any) -> str:
    """The text of one value in ``--format table``, made printable: text from devices reaches a terminal."""
    return printable(_text(value))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds") if value.tzinfo else value.isoformat(timespec="seconds")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    import pyarrow as pa  # after the common cases: a table cell is formatted once per shown value

    if isinstance(value, pa.MonthDayNano):
        return interval_text(value)
    if isinstance(value, (list, dict, tuple)):
        return orjson.dumps(value, default=json_default, option=JSON_OPTIONS).decode()
    return str(value)


def _text_table(result: ResultStream, seen: Callable[[pa.RecordBatch], None]) -> str:
    names: Sequence[str] = [printable(name) for name in result.schema.names]
    rows: list[list[str]] = []
    total = 0
    for batch in result.batches:
        seen(batch)
        total += batch.num_rows
        room = TABLE_ROWS_SHOWN - len(rows)
        if room > 0:
            rows.extend([_cell(v) for v in row.values()] for row in json_rows(batch.slice(0, room)))
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, name in enumerate(names)]
    lines = ["  ".join(name.ljust(widths[i]) for i, name in enumerate(names)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
    more = total - len(rows)
    lines.append(f"({total} rows{f', first {len(rows)} shown' if more else ''})")
    return "\n".join(lines) + "\n"
