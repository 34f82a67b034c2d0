"""Read-only SQL: one SELECT at a time, on a connection that cannot touch files.

Two guards: the statement type must be SELECT (DuckDB's own parser says so, which also
catches ``WITH ... INSERT``), and the database runs with ``enable_external_access = false``
and ``lock_configuration = true``, so a SELECT cannot read files, attach, load extensions
or change settings. The parse itself runs on that locked connection, because parsing some
statements (IMPORT DATABASE) already reads files.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from edgeloop.errors import QueryFailed, QueryRefused

__all__ = ["check_read_only", "run_query"]


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but a single SELECT, with a message that says why."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.PermissionException as exc:
        raise QueryRefused(f"refused: the statement touches files, which is not allowed ({_first_line(exc)})") from exc
    except duckdb.Error as exc:
        raise QueryFailed(f"cannot parse the query: {_first_line(exc)}") from exc
    if not statements:
        raise QueryFailed("the query is empty")
    if len(statements) > 1:
        raise QueryRefused(f"refused: one statement at a time, got {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        name = getattr(kind, "name", str(kind))
        raise QueryRefused(f"refused: {name} statements are not allowed; the SQL interface is read-only (SELECT only)")


def run_query(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None, *, timeout_s: float | None = None
) -> pa.Table:
    """Run one read-only SELECT and return its rows as Arrow; interrupted after ``timeout_s``."""
    check_read_only(con, sql)
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        return con.execute(sql, list(params) if params else None).to_arrow_table()
    except duckdb.PermissionException as exc:
        raise QueryRefused(f"refused: the query touches files or settings, which is not allowed ({_first_line(exc)})") from exc
    except duckdb.InterruptException as exc:
        raise QueryFailed(f"the query ran longer than {timeout_s:g} s and was stopped") from exc
    except duckdb.InvalidInputException as exc:
        if "configuration has been locked" in str(exc):
            raise QueryRefused(f"refused: settings cannot be changed ({_first_line(exc)})") from exc
        raise QueryFailed(f"query failed: {_first_line(exc)}") from exc
    except duckdb.ParserException as exc:
        if "single SELECT" in str(exc):  # query()/query_table() given a non-SELECT
            raise QueryRefused(f"refused: only SELECT statements may run ({_first_line(exc)})") from exc
        raise QueryFailed(f"query failed: {_first_line(exc)}") from exc
    except duckdb.Error as exc:
        raise QueryFailed(f"query failed: {_first_line(exc)}") from exc
    finally:
        if timer:
            timer.cancel()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
