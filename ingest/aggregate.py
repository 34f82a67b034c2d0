"""An Aggregate: a table of counters per key that the writer adds to as rows land, on either backend.

One definition renders both storages (see docs/design.md, "Aggregates on a lake"):

* DuckDB: a table with the key as its primary key; ``add`` upserts (``ON CONFLICT DO UPDATE``).
* DuckLake: no keys and several replicas writing at once, so ``add`` appends delta rows to
  ``<name>_deltas`` and a view named ``<name>`` merges them per key on read; ``fold`` (run by
  ``edgeloop-ingest compact``) replaces the deltas with the view's rows in one lake transaction.

Each value merges one way, the same on both: ``sum`` (optionally capped), ``min``, ``max``, or
``latest`` (the value of the row whose ``by`` column is greatest). Every merge is commutative,
so deltas from replicas that land at once add up to what one server would have counted.
Readers (``fleet``, ``dashboard``, ``/v1/sql``) see the same columns either way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import duckdb

__all__ = ["AGGREGATES", "Aggregate", "Value", "dropped_after", "on_lake"]

DELTAS = "_deltas"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def dropped_after(con: duckdb.DuckDBPyConnection, *names: str) -> Iterator[None]:
    """Drop the temp tables ``names`` after the block.

    After a failed statement the transaction is aborted and any DROP raises "Current transaction is
    aborted": that is swallowed, so the caller sees the first failure (an out of memory is a 503, not
    a store error) and the transaction's rollback drops the tables.
    """
    try:
        yield
    except BaseException:
        with suppress(duckdb.Error):
            for name in names:
                con.execute(f"DROP TABLE IF EXISTS temp.{name}")
        raise
    for name in names:
        con.execute(f"DROP TABLE IF EXISTS temp.{name}")


@dataclass(frozen=True, slots=True)
class Value:
    """One counter column and how two of its values merge."""

    name: str
    type: str
    merge: str  # sum | min | max | latest
    by: str | None = None  # latest: the column whose greatest value picks the row
    cap: int | None = None  # sum: never above this (counts that come from devices)
    not_null: bool = False
    default: str | None = None

    def column(self) -> str:
        return (f"{_quote(self.name)} {self.type}" + (" NOT NULL" if self.not_null else "")
                + (f" DEFAULT {self.default}" if self.default is not None else ""))

    def upsert(self, table: str) -> str:
        """The SET expression merging ``excluded`` into the stored row (DuckDB)."""
        old, new = f"{table}.{_quote(self.name)}", f"excluded.{_quote(self.name)}"
        if self.merge == "sum":
            if self.cap is not None:
                return f"least(coalesce({old}, 0)::HUGEINT + coalesce({new}, 0), {self.cap})::BIGINT"
            return f"coalesce({old}, 0) + coalesce({new}, 0)"
        if self.merge in ("min", "max"):
            pick = "least" if self.merge == "min" else "greatest"
            return f"{pick}(coalesce({old}, {new}), coalesce({new}, {old}))"
        assert self.by is not None
        old_by, new_by = f"{table}.{_quote(self.by)}", f"excluded.{_quote(self.by)}"
        # A tie goes to the later write, as an UPDATE would.
        return f"CASE WHEN {new_by} IS NOT NULL AND {new_by} >= coalesce({old_by}, {new_by}) THEN {new} ELSE {old} END"

    def merged(self) -> str:
        """The aggregate merging every delta row of a key (DuckLake's view)."""
        name = _quote(self.name)
        if self.merge == "sum":
            total = f"sum({name}::HUGEINT)"
            if self.cap is not None:
                total = f"least({total}, {self.cap})"
            if self.type == "DOUBLE":
                total = f"sum({name})"
            return f"coalesce({total}, 0)::{self.type} AS {name}"
        if self.merge in ("min", "max"):
            return f"{self.merge}({name}) AS {name}"
        return f"arg_max_null({name}, {_quote(self.by or '')}) AS {name}"  # NULL values count, rows without `by` do not


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Counters per ``key``; ``drop_when`` names a merged row that no longer counts anything (after a deletion)."""

    name: str
    key: tuple[tuple[str, str], ...]
    values: tuple[Value, ...]
    drop_when: str | None = None

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.key] + [value.name for value in self.values]

    def table(self, lake: bool) -> str:
        """The table rows are written to: the aggregate itself, or a lake's deltas."""
        return self.name + DELTAS if lake else self.name

    def create(self, lake: bool) -> str:
        """The DDL: a keyed table, or a lake's delta table and the view merging it."""
        keys = [f"{_quote(name)} {type_} NOT NULL" for name, type_ in self.key]
        if not lake:
            body = ",\n    ".join([*keys, *(value.column() for value in self.values),
                                    f"PRIMARY KEY ({', '.join(_quote(name) for name, _ in self.key)})"])
            return f"CREATE TABLE IF NOT EXISTS {_quote(self.name)} (\n    {body}\n);\n"
        body = ",\n    ".join([*keys, *(f"{_quote(value.name)} {value.type}" for value in self.values)])
        return f"CREATE TABLE IF NOT EXISTS {_quote(self.table(True))} (\n    {body}\n);\nCREATE OR REPLACE VIEW {_quote(self.name)} AS {self.merged_select()};\n"

    def merged_select(self) -> str:
        """One row per key, merged from the deltas (what the lake's view is)."""
        keys = ", ".join(_quote(name) for name, _ in self.key)
        sql = (f"SELECT {keys}, {', '.join(value.merged() for value in self.values)} "
               f"FROM {_quote(self.table(True))} GROUP BY {keys}")
        if self.drop_when:
            sql = f"SELECT * FROM ({sql}) WHERE NOT ({self.drop_when})"
        return sql

    def add(self, source: str, lake: bool, columns: Sequence[str] | None = None) -> str:
        """Add the rows of ``source`` (a SELECT naming ``columns``, at most one row per key) to the counters."""
        columns = list(columns or self.columns)
        names = ", ".join(_quote(name) for name in columns)
        insert = f"INSERT INTO {_quote(self.table(lake))} ({names}) SELECT {names} FROM ({source}) AS __delta"
        if lake:
            return insert
        keys = {name for name, _ in self.key}
        sets = ", ".join(f"{_quote(value.name)} = {value.upsert(self.name)}" for value in self.values if value.name in columns)
        return f"{insert} ON CONFLICT ({', '.join(_quote(name) for name, _ in self.key)}) DO UPDATE SET {sets}" if sets and keys else insert

    def prune(self, con: duckdb.DuckDBPyConnection, lake: bool) -> None:
        """Drop the rows that count nothing any more (DuckDB; a lake's view leaves them out)."""
        if self.drop_when and not lake:
            con.execute(f"DELETE FROM {_quote(self.name)} WHERE {self.drop_when}")

    def fold(self, con: duckdb.DuckDBPyConnection) -> int:
        """Replace a lake's deltas with one row per key, inside the caller's transaction; returns the rows folded away."""
        table = _quote(self.table(True))
        before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE __edgeloop_folded AS {self.merged_select()}")
        with dropped_after(con, "__edgeloop_folded"):
            if con.execute("SELECT count(*) FROM temp.__edgeloop_folded").fetchone()[0] == before:
                return 0  # one row per key already: a rewrite would only add a data file and a delete file to the lake
            con.execute(f"DELETE FROM {table}")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM temp.__edgeloop_folded")
            after = con.execute("SELECT count(*) FROM temp.__edgeloop_folded").fetchone()[0]
        return int(before - after)


def on_lake(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``con`` is using a DuckLake (whose aggregates are deltas and views)."""
    row = con.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    return bool(row) and row[0] == "ducklake"


TSTZ = "TIMESTAMP WITH TIME ZONE"
MAX_COUNT = 2**40  # drop counts come from devices: capped so no sum of them can overflow and fail a landing

# Per device: its latest status (by the device's send time), its landings and its refusals.
_STATUS_FIELDS = (
    ("last_status_at", TSTZ), ("last_status_sent_at", TSTZ), ("last_status_id", "VARCHAR"), ("agent_version", "VARCHAR"),
    ("window_s", "DOUBLE"), ("last_outcome", "VARCHAR"), ("last_error", "VARCHAR"), ("last_sync_at", TSTZ),
    ("last_success_at", TSTZ), ("failures_in_a_row", "BIGINT"), ("backlog_batches", "BIGINT"),
    ("backlog_records", "BIGINT"), ("backlog_bytes", "BIGINT"), ("oldest_record_age_s", "DOUBLE"),
    ("free_disk_bytes", "BIGINT"), ("disk_full", "BOOLEAN"), ("clock_offset_s", "DOUBLE"), ("clock_synchronized", "BOOLEAN"),
)
STATUS_FIELDS = tuple(name for name, _ in _STATUS_FIELDS)


def _latest_status(name: str, type_: str) -> Value:
    if name == "last_status_sent_at":
        return Value(name, type_, "max")
    return Value(name, type_, "latest", by="last_status_sent_at")


DEVICE_HEALTH = Aggregate("device_health", (("device", "VARCHAR"),), (
    Value("first_seen_at", TSTZ, "min"),
    Value("last_seen_at", TSTZ, "max"),
    Value("statuses", "BIGINT", "sum", not_null=True, default="0"),
    *(_latest_status(name, type_) for name, type_ in _STATUS_FIELDS),
    Value("dropped", "BIGINT", "sum", cap=MAX_COUNT, not_null=True, default="0"),
    Value("last_upload_at", TSTZ, "max"),
    Value("batches", "BIGINT", "sum", not_null=True, default="0"),
    Value("rows", "BIGINT", "sum", not_null=True, default="0"),
    Value("refused", "BIGINT", "sum", not_null=True, default="0"),
    Value("last_refused_at", TSTZ, "max"),
    Value("last_refused_code", "VARCHAR", "latest", by="last_refused_at"),
))
DEVICE_REFUSALS = Aggregate("device_refusals", (("device", "VARCHAR"), ("status", "INTEGER"), ("code", "VARCHAR")), (
    Value("count", "BIGINT", "sum", not_null=True),
    Value("first_at", TSTZ, "min", not_null=True),
    Value("last_at", TSTZ, "max", not_null=True),
))
# Rows landed per day (UTC, of receipt), model, version, sampling policy version ('' for none) and device.
LANDED_DAILY = Aggregate(
    "landed_daily",
    (("day", "DATE"), ("model", "VARCHAR"), ("model_version", "VARCHAR"), ("policy_version", "VARCHAR"), ("device", "VARCHAR")),
    (
        Value("predictions", "BIGINT", "sum", not_null=True),
        Value("feedback", "BIGINT", "sum", not_null=True),
        Value("first_at", TSTZ, "min", not_null=True),
        Value("last_at", TSTZ, "max", not_null=True),
    ),
    drop_when="predictions = 0 AND feedback = 0",  # every row it counted was deleted
)
LABEL_COVERAGE = Aggregate("label_coverage", (("model", "VARCHAR"), ("model_version", "VARCHAR")), (
    Value("predictions", "BIGINT", "sum", not_null=True),
    Value("weighted", "DOUBLE", "sum", not_null=True),
    Value("labelled", "BIGINT", "sum", not_null=True),
    Value("weighted_labelled", "DOUBLE", "sum", not_null=True),
))
DROPS_DAILY = Aggregate("drops_daily", (("day", "DATE"), ("model", "VARCHAR"), ("reason", "VARCHAR")), (
    Value("records", "BIGINT", "sum", cap=MAX_COUNT, not_null=True),
))
# Per model and device: the version of its newest prediction (by created_at) and since when.
DEVICE_VERSIONS = Aggregate("device_versions", (("model", "VARCHAR"), ("device", "VARCHAR")), (
    Value("model_version", "VARCHAR", "latest", by="last_created_at", not_null=True),
    Value("since_at", TSTZ, "latest", by="last_created_at", not_null=True),
    Value("last_created_at", TSTZ, "max", not_null=True),
    Value("last_landed_at", TSTZ, "max", not_null=True),
))

AGGREGATES = (DEVICE_HEALTH, DEVICE_REFUSALS, LANDED_DAILY, LABEL_COVERAGE, DROPS_DAILY, DEVICE_VERSIONS)
