"""Values a database written by an earlier version may hold that today's checks refuse: found, never changed.

Reads already tolerate them (``query.readable`` leaves such times out of the server's own reads,
JSON answers write wide numbers as digits, the catalog loads them); ``edgeloop-ingest migrate
--check`` lists them so an operator knows what the dashboard leaves out. Nothing is rewritten:
they are rows the server accepted, and a guessed repair would change accepted data.

    a time or date outside years 1 to 9999 in UTC (or DuckDB's ±infinity), in any table's column
    a registered schema whose version or a field's max_bytes is past 2^31 - 1
    a day's drop count past ``aggregate.MAX_COUNT`` (counts were capped after devices sent 2^62)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb

from edgeloop.ingest.aggregate import MAX_COUNT
from edgeloop.ingest.connection import quote
from edgeloop.schemas.model_schema import MAX_INT32

__all__ = ["Finding", "legacy_values"]

_TIME_TYPES = {
    "TIMESTAMP WITH TIME ZONE": ("TIMESTAMPTZ '0001-01-01 00:00:00+00'", "TIMESTAMPTZ '9999-12-31 23:59:59.999999+00'"),
    "TIMESTAMP": ("TIMESTAMP '0001-01-01 00:00:00'", "TIMESTAMP '9999-12-31 23:59:59.999999'"),
    "TIMESTAMP_S": ("TIMESTAMP '0001-01-01 00:00:00'", "TIMESTAMP '9999-12-31 23:59:59'"),
    "TIMESTAMP_MS": ("TIMESTAMP '0001-01-01 00:00:00'", "TIMESTAMP '9999-12-31 23:59:59.999'"),
    "DATE": ("DATE '0001-01-01'", "DATE '9999-12-31'"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One column (or schema field) holding values outside today's bounds, and what they are."""

    where: str
    problem: str

    def line(self) -> str:
        return f"{self.where}: {self.problem}"


def legacy_values(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    """Every such value in the database ``con`` opened: one scan of each table's time columns, and the catalog."""
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name IN (SELECT table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = 'main') ORDER BY table_name, column_index"
    ).fetchall():
        if kind in _TIME_TYPES:
            columns.setdefault(table, []).append((column, kind))
    findings = []
    for table, times in columns.items():
        parts = []
        for column, kind in times:
            low, high = _TIME_TYPES[kind]
            outside = f"{quote(column)} < {low} OR {quote(column)} > {high}"
            parts += [f"count(*) FILTER (WHERE {outside})", f"min({quote(column)})::VARCHAR", f"max({quote(column)})::VARCHAR"]
        row = con.execute(f"SELECT {', '.join(parts)} FROM {quote(table)}").fetchone()
        for index, (column, _) in enumerate(times):
            count, earliest, latest = row[3 * index: 3 * index + 3]
            if count:
                findings.append(Finding(f"{table}.{column}", f"{count} value{'s' if count != 1 else ''} outside years 1 to 9999 in UTC (from "
                                        f"{earliest} to {latest}); the dashboard and commands leave them out, SQL shows them"))
    if _has_table(con, "drops_daily"):  # a table here, a view of deltas on a lake
        count, most = con.execute(f"SELECT count(*) FILTER (WHERE records > {MAX_COUNT}), max(records) FROM drops_daily").fetchone()
        if count:
            findings.append(Finding("drops_daily.records", f"{count} count{'s' if count != 1 else ''} past the cap of "
                                    f"{MAX_COUNT} drops a day (up to {most}); the dashboard's sums saturate at it"))
    for fingerprint, text in con.execute("SELECT fingerprint, schema_json FROM schemas ORDER BY model, fingerprint").fetchall():
        try:
            raw = json.loads(text)
        except ValueError:
            findings.append(Finding(f"schemas {fingerprint}", "schema_json is not JSON"))
            continue
        wide = [("version", raw.get("version"))] + [
            (f"{spec.get('name')}.max_bytes", spec.get("max_bytes")) for spec in raw.get("fields", ()) if isinstance(spec, dict)
        ]
        for name, value in wide:
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_INT32:
                findings.append(Finding(f"schema {raw.get('name')} ({fingerprint}) {name}",
                                        f"{value} is past 2^31 - 1 (a schema file is refused past it; the stored one is kept)"))
    return findings


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = current_database() "
                            "AND table_schema = 'main' AND table_name = ?", [table]).fetchone()[0])
