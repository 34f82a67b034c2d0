"""Read-only SQL: one SELECT over the project's tables, calling only allowed functions.

An allow-list, checked on DuckDB's own parse tree (``json_serialize_sql``): the statement
must be a single SELECT; every table it reads must be one of the database's own tables or
views (or a CTE it defines); every function it calls must be in ``sql_functions``; every
node of the tree must be of a kind this module knows. Anything else is refused before it
runs, so a "SELECT" that calls ``enable_logging()``, ``checkpoint()`` or ``read_csv()``
never reaches the executor. As defence in depth the connection itself runs with external
access off, extensions off and its configuration locked (``connection.connect``).
"""

from __future__ import annotations

import difflib
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from edgeloop.errors import QueryFailed, QueryRefused, QueryTooExpensive, StoreClosed
from edgeloop.ingest.sql_functions import ALLOWED_FUNCTIONS, ALLOWED_TABLE_FUNCTIONS
from edgeloop.logs import RateLimitedLogger
from edgeloop.times import EARLIEST_TIME_S, LATEST_TIME_S

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DUCKDB_TYPE",
    "UHUGEINT_TEXT",
    "CheckedQuery",
    "check_query",
    "describe_error",
    "readable",
    "run_query",
    "stream_query",
    "text_columns",
    "wide_as_text",
]

log = logging.getLogger(__name__)

# Expression kinds (the ``class`` of a parse node) a SELECT may contain.
_EXPRESSIONS = frozenset({
    "BETWEEN", "CASE", "CAST", "COLLATE", "COLUMN_REF", "COMPARISON", "CONJUNCTION", "CONSTANT", "FUNCTION",
    "LAMBDA", "LAMBDA_REF", "OPERATOR", "PARAMETER", "POSITIONAL_REFERENCE", "STAR", "SUBQUERY", "WINDOW",
})
# Query nodes, FROM items and modifiers (the ``type`` of a node without a class).
_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"})
_TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT", "TABLE_FUNCTION", "SHOW_REF"})
_MODIFIERS = frozenset({"ORDER_MODIFIER", "LIMIT_MODIFIER", "LIMIT_PERCENT_MODIFIER", "DISTINCT_MODIFIER"})
_ORDERS = frozenset({"ORDER_DEFAULT", "ASCENDING", "DESCENDING"})
_KNOWN_TYPES = _NODES | _TABLE_REFS | _MODIFIERS | _ORDERS

# The most characters or elements one call may make a value of when an argument sets how many:
# a vector of 2,048 such values stays tens of megabytes.
MAX_SIZE = 4096
# Scalar functions whose result's size an argument sets: (index of that argument, index of the
# argument repeated that many times, whose length multiplies it, or None).
_SIZE_ARGUMENTS: dict[str, tuple[int, int | None]] = {
    "repeat": (1, 0), "lpad": (1, None), "rpad": (1, None), "list_resize": (1, 2), "array_resize": (1, 2),
    "equi_width_bins": (2, None), "bitstring": (1, None), "range": (0, None), "generate_series": (0, None),
}
_FORMATS = frozenset({"printf", "format"})
_PRINTF_SPEC = re.compile(r"%[-+ #0']*(\*|\d*)(?:\.(\*|\d*))?")
_FORMAT_TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]")  # escaped braces, fields, and braces left over

_PROJECT_TABLES_SQL = (
    "SELECT lower(table_name) FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
    "UNION SELECT lower(view_name) FROM duckdb_views() WHERE database_name = current_database() "
    "AND schema_name = 'main' AND NOT internal"
)


@dataclass(frozen=True, slots=True)
class CheckedQuery:
    """A query the allow-list passed, with the project tables and views it reads."""

    sql: str
    tables: frozenset[str]
    ours: bool = False  # the server's own SQL (fleet, dashboard): no UHUGEINT to look for


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> CheckedQuery:
    """Refuse anything but one SELECT over the project's tables calling allowed functions."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.PermissionException as exc:
        raise QueryRefused(f"refused: the statement touches files, which is not allowed ({describe_error(exc)})") from exc
    except duckdb.Error as exc:
        raise QueryFailed(f"cannot parse the query: {describe_error(exc)}") from exc
    if not statements:
        raise QueryFailed("the query is empty")
    if len(statements) > 1:
        raise QueryRefused(f"refused: one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise QueryRefused(f"refused: {name} statements are not allowed; the SQL interface is read-only (SELECT only)")
    try:
        tree = orjson.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()[0])
        tables = {row[0] for row in con.execute(_PROJECT_TABLES_SQL).fetchall()}
    except duckdb.Error as exc:
        raise QueryFailed(f"cannot check the query: {describe_error(exc)}") from exc
    if tree.get("error"):
        raise QueryRefused(f"refused: this kind of SELECT cannot be checked ({tree.get('error_message', 'unknown')})")
    walker = _Walker(tables)
    for statement in tree["statements"]:
        walker.node(statement["node"], frozenset())
    return CheckedQuery(sql, frozenset(walker.read))


class _Walker:
    """Visits every node of a parse tree; raises QueryRefused at the first one not allowed."""

    def __init__(self, project_tables: set[str]) -> None:
        self.project_tables = project_tables
        self.read: set[str] = set()
        self.lambdas = 0  # how deep inside lambda bodies the walk is: a call there runs once per list element

    def node(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        kind = node.get("type")
        if kind not in _NODES:
            raise QueryRefused(f"refused: {kind} queries are not allowed")
        if kind == "RECURSIVE_CTE_NODE":
            ctes = ctes | {str(node.get("cte_name", "")).lower()}
        for entry in (node.get("cte_map") or {}).get("map", []):
            # A CTE's body sees the CTEs defined before it, not itself (unless it is recursive).
            self.value(entry["value"], ctes)
            ctes = ctes | {str(entry["key"]).lower()}
        for key, value in node.items():
            if key not in ("type", "cte_map"):
                self.value(value, ctes)

    def value(self, value: Any, ctes: frozenset[str]) -> None:
        if isinstance(value, list):
            for item in value:
                self.value(item, ctes)
        elif isinstance(value, dict):
            if "id" in value and "type_info" in value:
                return  # a type (of a constant or a cast): data, not something that runs
            if "class" in value:
                self.expression(value, ctes)
            elif isinstance(value.get("type"), str):
                self.typed(value, ctes)
            else:
                for item in value.values():
                    self.value(item, ctes)

    def expression(self, expr: dict[str, Any], ctes: frozenset[str]) -> None:
        kind = expr["class"]
        if kind not in _EXPRESSIONS:
            raise QueryRefused(f"refused: {kind} expressions are not allowed")
        if kind in ("FUNCTION", "WINDOW"):
            self.function(expr, ALLOWED_FUNCTIONS, "function")
            _check_sizes(expr, self.lambdas)
        if kind == "LAMBDA":
            self.lambdas += 1
        try:
            for key, item in expr.items():
                if key not in ("class", "type"):
                    self.value(item, ctes)
        finally:
            if kind == "LAMBDA":
                self.lambdas -= 1

    def typed(self, node: dict[str, Any], ctes: frozenset[str]) -> None:
        kind = node["type"]
        if kind not in _KNOWN_TYPES:
            raise QueryRefused(f"refused: {kind} is not allowed in a query")
        if kind in _NODES:
            self.node(node, ctes)
            return
        if kind == "BASE_TABLE":
            self.table(node, ctes)
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            self.function(function, ALLOWED_TABLE_FUNCTIONS, "table function")
            self.value(function.get("children", []), ctes)
            node = {key: item for key, item in node.items() if key != "function"}
        elif kind == "SHOW_REF" and "query" not in node:
            name = str(node.get("table_name", "")).strip('"').lower()
            if name != "tables" and name not in self.project_tables:
                raise QueryRefused(f"refused: SHOW {node.get('table_name')} is not allowed; describe a project table instead")
        for key, item in node.items():
            if key != "type":
                self.value(item, ctes)

    def table(self, ref: dict[str, Any], ctes: frozenset[str]) -> None:
        name = str(ref.get("table_name", "")).lower()
        catalog, schema = ref.get("catalog_name", ""), ref.get("schema_name", "")
        if not catalog and not schema and name in ctes:
            return
        if not catalog and not schema and _plain_name(name) and name not in self.project_tables:
            near = difflib.get_close_matches(name, sorted(self.project_tables | ctes), n=1)
            hint = f' Did you mean "{near[0]}"?' if near else ""
            raise QueryFailed(
                f"Catalog Error: Table with name {ref.get('table_name')} does not exist among the project's tables and views!{hint}"
            )
        if catalog or schema not in ("", "main") or name not in self.project_tables:
            qualified = ".".join(part for part in (catalog, schema, ref.get("table_name", "")) if part)
            raise QueryRefused(
                f"refused: {qualified!r} is not one of the project's tables or views "
                "(see `SHOW TABLES`; files, other databases and system views cannot be read)"
            )
        self.read.add(name)

    @staticmethod
    def function(expr: dict[str, Any], allowed: frozenset[str], what: str) -> None:
        name = str(expr.get("function_name", ""))
        if expr.get("catalog", "") not in ("", "system") or expr.get("schema", "") not in ("", "main"):
            raise QueryRefused(f"refused: functions outside DuckDB's own are not allowed ({expr.get('schema')}.{name})")
        if name.lower() not in allowed:
            raise QueryRefused(f"refused: the {what} {name}() is not on the allow-list of side-effect-free functions")


def _check_sizes(call: dict[str, Any], lambdas: int) -> None:
    """Refuse a call whose result's size an argument sets unless that size is a constant of at most MAX_SIZE.

    DuckDB's memory limit does not count a value being built, so ``repeat('x', 4e9)`` or
    ``range(3e9)`` in one row takes gigabytes before any cap or timeout can act.
    """
    name = str(call.get("function_name", "")).lower()
    args = call.get("children") or []
    if name in _FORMATS and args:
        _check_format(name, _constant(args[0]))
        return
    if name not in _SIZE_ARGUMENTS:
        return
    if lambdas:
        raise QueryRefused(f"refused: {name}() inside a lambda runs once per list element, so its result's size is not bounded")
    sizes = [_constant(arg) for arg in args]
    if name in ("range", "generate_series"):
        count = _series_length(name, sizes)
    else:
        index, per_unit = _SIZE_ARGUMENTS[name]
        count = sizes[index] if index < len(sizes) else 1
        if isinstance(count, int) and per_unit is not None and per_unit < len(args):
            unit = _size(args[per_unit])
            count = None if unit is None else count * unit
    if not isinstance(count, int) or count > MAX_SIZE:
        raise QueryRefused(
            f"refused: {name}() makes a value whose size its arguments set; they must be constants making at most "
            f"{MAX_SIZE:,} characters or elements (generate rows with FROM range(...) instead)"
        )


def _series_length(name: str, bounds: list[Any]) -> int | None:
    """How many elements a scalar range()/generate_series() of integer constants makes (None if not constants)."""
    if not bounds or len(bounds) > 3 or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return None
    start, stop = (0, bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])
    step = bounds[2] if len(bounds) == 3 else 1
    if step == 0:
        return 0  # DuckDB refuses it itself
    if name == "generate_series":
        stop += 1 if step > 0 else -1
    return len(range(start, stop, step))


def _check_format(name: str, template: Any) -> None:
    """A printf/format template must be a constant whose widths and precisions are at most MAX_SIZE, none from an argument."""
    if not isinstance(template, str):
        raise QueryRefused(f"refused: the format of {name}() must be a constant text (its widths set the result's size)")
    if name == "printf":
        specs = _PRINTF_SPEC.findall(template.replace("%%", ""))
    else:
        tokens = _FORMAT_TOKEN.findall(template)
        if "{" in tokens or "}" in tokens:
            specs = [("*", "")]  # a field inside a field: a width or precision from an argument, {:>{}}
        else:
            fields = [token for token in tokens if token not in ("{{", "}}")]
            specs = [(number, "") for field in fields for number in re.findall(r"\d+", field.partition(":")[2])]
    for width, precision in specs:
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_SIZE):
                raise QueryRefused(
                    f"refused: {name}() widths and precisions must be constants of at most {MAX_SIZE:,}, got {template[:60]!r}"
                )


def _size(node: Any) -> int | None:
    """Bytes or elements of a constant or a list of constants (None if it is neither)."""
    value = _constant(node)
    if isinstance(value, str):
        return len(value.encode())
    if value is not None:
        return 1
    if isinstance(node, dict) and node.get("class") == "FUNCTION" and node.get("function_name") in ("list_value", "array_value"):
        sizes = [_size(child) for child in node.get("children") or []]
        return None if None in sizes else max(1, sum(sizes))  # type: ignore[arg-type]
    return None


def _constant(node: Any) -> Any:
    """The value of a constant argument (through casts and a unary minus), or None if it is not one."""
    if not isinstance(node, dict):
        return None
    kind = node.get("class")
    if kind == "CONSTANT":
        value = node.get("value") or {}
        return None if value.get("is_null") else value.get("value")
    if kind == "CAST":
        return _constant(node.get("child"))
    if kind == "FUNCTION" and node.get("function_name") == "-" and len(node.get("children") or []) == 1:
        value = _constant(node["children"][0])
        return -value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return None


def _plain_name(name: str) -> bool:
    """A bare identifier (not a file path or URL), which an analyst may simply have misspelt."""
    return re.fullmatch(r"[a-z_][a-z0-9_]*", name) is not None


def run_query(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None, *, timeout_s: float | None = None
) -> pa.Table:
    """Run one allowed SELECT and return its rows as Arrow; interrupted after ``timeout_s``."""
    import pyarrow as pa  # here: a query written by DuckDB's own COPY (sql, export to a file) needs no Arrow

    batches = stream_query(con, sql, params, timeout_s=timeout_s)
    first = next(batches)
    return readable(pa.Table.from_batches([first, *batches], schema=first.schema), sql)


_WARNINGS = RateLimitedLogger(log, 600.0)  # each page read would repeat it


_TICKS_PER_S = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _out_of_range(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray | None:
    """A boolean mask of the column's times or dates outside years 1 to 9999 in UTC, or None if it has none (or holds none)."""
    import pyarrow as pa  # here and below: a query DuckDB's own COPY writes to a file (sql, export) needs no Arrow
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind):
        scale = _TICKS_PER_S[kind.unit]
        low, high = EARLIEST_TIME_S * scale, min(LATEST_TIME_S * scale + scale - 1, 2**63 - 1)
        ticks = column.cast(pa.int64())
    elif pa.types.is_date32(kind) or pa.types.is_date64(kind):
        low, high = EARLIEST_TIME_S // 86400, LATEST_TIME_S // 86400
        ticks = column.cast(pa.int32()) if pa.types.is_date32(kind) else pc.divide(column.cast(pa.int64()), 86_400_000)
    else:
        return None
    outside = pc.fill_null(pc.or_(pc.less(ticks, low), pc.greater(ticks, high)), False)
    return outside if pc.any(outside).as_py() else None


def readable(table: pa.Table, sql: str) -> pa.Table:
    """``table`` with the times Python cannot hold (outside years 1 to 9999 in UTC) made null, and a warning naming them.

    Such times reach a database only through a version before today's checks (a device's clock in
    year 10000); read into Python they raise OverflowError, so one stored value would fail every
    page and command that reads its row. SQL (``/v1/sql``, ``sql``) still shows the value itself.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    nulled: dict[str, int] = {}
    for index, name in enumerate(table.column_names):
        column = table.column(index)
        outside = _out_of_range(column)
        if outside is not None:
            nulled[name] = pc.sum(outside).as_py()
            table = table.set_column(index, table.field(index), pc.if_else(outside, pa.scalar(None, column.type), column))
    if nulled:
        _WARNINGS.log(logging.WARNING, ",".join(sorted(nulled)),
                      "stored times outside years 1 to 9999 in UTC left out of a read (written before they were refused; "
                      "`edgeloop-ingest migrate --check` lists them, SQL shows them)",
                      columns=nulled, query=" ".join(sql.split())[:200])
    return table


def stream_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | None = None,
    *,
    timeout_s: float | None = None,
    batch_rows: int = 16_384,
    checked: CheckedQuery | None = None,
) -> Iterator[pa.RecordBatch]:
    """Check (unless ``checked``) and run one SELECT; yield its rows in Arrow batches as DuckDB produces them.

    The first item is always yielded (an empty batch for no rows) so the schema is known.
    """
    import pyarrow as pa

    if checked is None or checked.sql != sql:
        checked = check_query(con, sql)
    expired = threading.Event()
    timer = threading.Timer(timeout_s, _expire, (con, expired)) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        with translate_errors(timeout_s, expired):
            wide = None if checked.ours else wide_as_text(con, sql, params)
            reader = con.execute(wide[0] if wide else sql, list(params) if params else None).to_arrow_reader(batch_rows)
            schema = wide[1](reader.schema) if wide else reader.schema
        yielded = False
        while True:
            with translate_errors(timeout_s, expired):
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    break
            yielded = True
            yield batch if batch.schema is schema else pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        if not yielded:
            yield pa.RecordBatch.from_pylist([], schema=schema)
    finally:
        if timer:
            timer.cancel()


DUCKDB_TYPE = b"edgeloop.duckdb_type"  # field metadata: the DuckDB type a text column spells
UHUGEINT_TEXT = {DUCKDB_TYPE: b"UHUGEINT"}
# Types DuckDB's Arrow export does not carry: a UHUGEINT becomes a signed decimal128 (its maximum
# reads -1), a TIMETZ a time without its offset, a BIT and a BIGNUM their internal bytes.
_AS_TEXT = re.compile(r"\b(UHUGEINT|TIME WITH TIME ZONE|BIT|BIGNUM|VARINT)\b")


def text_columns(described: Sequence[tuple[Any, ...]]) -> list[tuple[str, str]]:
    """(name, DuckDB type) of the columns of a DESCRIBE that only their text spells right, alone or inside a list,
    struct or map."""
    return [(row[0], row[1]) for row in described if _AS_TEXT.search(row[1])]


def wide_as_text(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> tuple[str, Callable[[pa.Schema], pa.Schema]] | None:
    """``sql`` with the columns DuckDB's Arrow gets wrong as DuckDB's text, and what marks them in its Arrow schema.

    None if it has none. A UHUGEINT past 2^127 - 1 (its maximum is 2^128 - 1) would arrive as a
    negative number, a TIMETZ without its offset, a BIT or a BIGNUM as bytes no reader decodes; as
    DuckDB's text each is exact in every format. Each is marked with its DuckDB type
    (``DUCKDB_TYPE``), so JSON writes a UHUGEINT as a number again where it fits 64 bits. A HUGEINT
    fits decimal128's 128 bits and is left as it is.
    """
    try:
        described = con.execute(f"DESCRIBE {sql}", list(params) if params else None).fetchall()
    except duckdb.ParserException:  # a DESCRIBE or SHOW itself: its columns are names and types, never such values
        return None
    texts = text_columns(described)
    if not texts:
        return None
    casts = ", ".join(f"{_quote(name)}::VARCHAR AS {_quote(name)}" for name, _ in texts)
    kinds = dict(texts)

    def mark(schema: pa.Schema) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([field.with_metadata({DUCKDB_TYPE: kinds[field.name].encode()}) if field.name in kinds else field
                          for field in schema])

    return f"SELECT * REPLACE ({casts}) FROM ({sql})", mark


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _expire(con: duckdb.DuckDBPyConnection, expired: threading.Event) -> None:
    expired.set()  # set first: the interrupt is then read as the timeout, not as a client that left
    con.interrupt()


class translate_errors:  # noqa: N801 - used as a context manager, reads as a phrase
    """Turn DuckDB's errors into QueryRefused/QueryFailed/QueryTooExpensive with DuckDB's whole message.

    An interrupt is the timeout only if ``expired`` was set; otherwise the server stopped it
    (stopping, compacting, or its client left): StoreClosed.
    """

    def __init__(self, timeout_s: float | None, expired: threading.Event | None = None) -> None:
        self.timeout_s = timeout_s
        self.expired = expired

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, raised: BaseException | None, tb: Any) -> bool:
        exc = _as_duckdb_error(raised)
        if exc is None:
            return False
        raise self._translated(exc) from raised

    def _translated(self, exc: duckdb.Error) -> Exception:
        if isinstance(exc, duckdb.PermissionException):
            return QueryRefused(f"refused: the query touches files or settings, which is not allowed ({describe_error(exc)})")
        if isinstance(exc, duckdb.InterruptException):
            if self.timeout_s and self.expired is not None and self.expired.is_set():
                return QueryTooExpensive(
                    f"the query ran longer than {self.timeout_s:g} s (store.sql_timeout_s) and was stopped; running it again "
                    "will not help: ask for less (a narrower time range, fewer columns, an aggregate) or export it",
                    limit="store.sql_timeout_s", value=self.timeout_s,
                )
            # Not the sender's fault (the server stopping or compacting; a client that left reads no answer): 503.
            return StoreClosed("the query was stopped by the server (it is stopping or compacting the database); retry later")
        if isinstance(exc, duckdb.OutOfMemoryException) and "max_temp_directory_size" in str(exc):
            return QueryTooExpensive(
                f"the query needed to spill more to disk than store.spill_max_bytes allows and was stopped; ask for less "
                f"(a narrower time range, fewer columns, no ORDER BY over everything): {describe_error(exc)}",
                limit="store.spill_max_bytes",
            )
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryTooExpensive(
                f"the query needed more memory than store.memory_limit_bytes allows and was stopped; ask for less "
                f"(a narrower time range, fewer or smaller groups): {describe_error(exc)}",
                limit="store.memory_limit_bytes",
            )
        if isinstance(exc, duckdb.InvalidInputException) and "configuration has been locked" in str(exc):
            return QueryRefused(f"refused: settings cannot be changed ({describe_error(exc)})")
        return QueryFailed(f"query failed: {describe_error(exc)}")


# Once rows stream, DuckDB's errors reach us through pyarrow's reader with only their message,
# "<kind> Error: ..." (an interrupt or out of memory is an OSError): the kinds told apart above.
_SURFACED_KINDS: dict[str, type[duckdb.Error]] = {
    "INTERRUPT": duckdb.InterruptException,
    "Out of Memory": duckdb.OutOfMemoryException,
    "Permission": duckdb.PermissionException,
    "Invalid Input": duckdb.InvalidInputException,
}
_DUCKDB_MESSAGE = re.compile(r"([A-Za-z ]+?) Error: ")


def _as_duckdb_error(exc: BaseException | None) -> duckdb.Error | None:
    """The DuckDB error ``exc`` is or carries in its message (from an Arrow reader); None if it is not DuckDB's or Arrow's."""
    if exc is None or isinstance(exc, duckdb.Error):
        return exc
    arrow = sys.modules.get("pyarrow")  # not loaded (a COPY to a file): no error can be Arrow's
    from_arrow = arrow is not None and isinstance(exc, arrow.ArrowException)
    if not (from_arrow or isinstance(exc, OSError)):
        return None
    match = _DUCKDB_MESSAGE.match(str(exc).lstrip())
    if match is not None:
        return _SURFACED_KINDS.get(match.group(1), duckdb.Error)(str(exc))
    # Arrow's own complaint about a result it cannot hold is a failed query; another OSError is not ours to explain.
    return duckdb.Error(str(exc)) if from_arrow else None


def describe_error(exc: BaseException) -> str:
    """DuckDB's whole message on one line: the hints (``Did you mean``, ``Candidate bindings``) kept."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__
