"""Tallies the writer keeps as rows land, so no dashboard page scans the model tables or parses the ledger.

``drops_daily`` holds, per day (UTC, of receipt), model and reason, the records devices dropped
before sealing (each batch carries its drop counts since the previous batch). Rows landed per
day are ``landed_daily``'s (``ingest/health.py``), the one count of them.

``device_versions`` holds, per model and device, the version of its newest prediction (by
``created_at``, so a backlog of old rows landing late does not move it back; a ``created_at``
after the row's arrival counts as its arrival, so a clock far ahead cannot pin it) and since when;
``version_changes`` logs each change (first version included) with the day it took effect,
so the rollout over time is a sum over changes, not over rows.

``label_coverage`` holds, per model and version, what ``<model>_training`` would count:
predictions, their summed ``sample_weight``, and how many of them (and how much weight) are
labelled. Labelled means what the report, ``export --labeled-only`` and the label queue mean:
a feedback record carrying a value in the model's ``truth_field`` (``declared_truth``; any
feedback if the model declares none), so a comment or a cost alone labels nothing. The writer
updates it in the transaction that lands the rows (``note_landed``): new predictions add to
the totals (and to the labelled counts if a label for them landed earlier), new feedback
marks the predictions it is the first label of.
The joins are inner joins on time-ordered UUIDv7 ids, so they read only recent row groups,
as the duplicate check does. A database from before these tables is counted once when the
store opens (``ensure_tables``); whoever deletes rows calls ``rebuild``.

Each keyed tally is an ``Aggregate`` (``ingest/aggregate.py``): a keyed table in a DuckDB file,
deltas merged by a view on a lake.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from edgeloop.ingest.aggregate import DEVICE_VERSIONS, DROPS_DAILY, LABEL_COVERAGE, MAX_COUNT, dropped_after, on_lake

__all__ = ["TABLES", "copy_to_temp", "create_sql", "declared_truth", "ensure_tables", "labelled_by", "note_drops", "note_landed", "note_versions", "rebuild",
           "recount_coverage"]

TABLE = LABEL_COVERAGE.name
DROPS = DROPS_DAILY.name
VERSIONS = DEVICE_VERSIONS.name
CHANGES = "version_changes"
TABLES = frozenset({TABLE, DROPS, VERSIONS, CHANGES})
MAX_REASON_CHARS = 64
COVERAGE_RULE = "labelled = a feedback carries the truth_field"  # label_coverage's table comment: the rule it counts by

_CREATE_CHANGES = f"""
CREATE TABLE IF NOT EXISTS {CHANGES} (
    model VARCHAR NOT NULL,
    device VARCHAR NOT NULL,
    day DATE NOT NULL,
    from_version VARCHAR,
    to_version VARCHAR NOT NULL,
    changed_at TIMESTAMP WITH TIME ZONE NOT NULL
);
"""

_DROPS_DELTA = f"""
SELECT day, model, reason, least(sum(records::HUGEINT), {MAX_COUNT})::BIGINT AS records FROM __drops_delta GROUP BY ALL
"""

# Per device in the group: the version of its newest prediction, and the first prediction on it; from
# __versions_p, the group's earliest and latest created_at per device and version (``_version_spans``).
_GROUP_VERSIONS = """
CREATE OR REPLACE TEMP TABLE __versions_new AS
WITH newest AS (
    SELECT device, arg_max(model_version, created_at_max) AS version, max(created_at_max) AS last_created_at
    FROM temp.__versions_p GROUP BY device
)
SELECT n.device, n.version, n.last_created_at, min(p.created_at_min) AS since_at
FROM newest AS n JOIN temp.__versions_p AS p ON p.device = n.device AND p.model_version = n.version
GROUP BY ALL
"""

_LOG_CHANGES = f"""
INSERT INTO {CHANGES}
SELECT $1, n.device, CAST(timezone('UTC', n.since_at) AS DATE), c.model_version, n.version, n.since_at
FROM temp.__versions_new AS n LEFT JOIN {VERSIONS} AS c ON c.model = $1 AND c.device = n.device
WHERE c.device IS NULL OR (n.last_created_at > c.last_created_at AND n.version <> c.model_version)
"""

# Each device's row as it is after this group: a newer prediction moves it (a new version starts its since_at).
# Resolved here, under the device's lock, so a lake's deltas need only "the row with the newest prediction".
_MOVED = f"""
SELECT $1 AS model, n.device,
       CASE WHEN c.device IS NULL OR n.last_created_at > c.last_created_at THEN n.version ELSE c.model_version END AS model_version,
       CASE WHEN c.device IS NULL OR (n.last_created_at > c.last_created_at AND n.version <> c.model_version)
            THEN n.since_at ELSE c.since_at END AS since_at,
       greatest(n.last_created_at, coalesce(c.last_created_at, n.last_created_at)) AS last_created_at, $2::TIMESTAMPTZ AS last_landed_at
FROM temp.__versions_new AS n LEFT JOIN {VERSIONS} AS c ON c.model = $1 AND c.device = n.device
"""

_ZERO = "0 AS predictions, 0.0 AS weighted"



def copy_to_temp(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Copy an Arrow table into DuckDB as temp table ``name`` (DuckDB cannot push a UUID join filter into an Arrow scan)."""
    con.register(f"{name}_arrow", table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
    finally:
        con.unregister(f"{name}_arrow")

def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = ?", [table],
    ).fetchone()[0])


def declared_truth(con: duckdb.DuckDBPyConnection, model: str) -> str | None:
    """The feedback field whose value makes a prediction labelled: the truth_field of the model's latest schema.

    None when the model declares none (then any feedback labels); the training view, the report,
    the export's ``--labeled-only`` and the label queue use the same field.
    """
    row = con.execute(
        "SELECT json_extract_string(schema_json, '$.truth_field') FROM models WHERE model = ?", [model]
    ).fetchone()
    return row[0] if row else None


def labelled_by(con: duckdb.DuckDBPyConnection, model: str) -> str | None:
    """``declared_truth`` if the feedback table has that column (as the training view picks it), else None.

    What ``note_landed`` takes as ``truth``; the store keeps it per model between schema changes.
    """
    truth = declared_truth(con, model)
    if truth is None:
        return None
    found = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = ? AND column_name = ?", [model + "_feedback", truth],
    ).fetchone()[0]
    return truth if found else None


def _carries(truth: str | None, alias: str) -> str:
    """The condition that feedback row ``alias`` labels its prediction."""
    return f" AND {alias}.{_quote(truth)} IS NOT NULL" if truth else ""


def _labels(feedback: pa.Table, truth: str | None) -> pa.Table:
    """The prediction ids of the feedback rows that carry a label (the truth column has a value)."""
    if truth is not None:
        if truth not in feedback.column_names:
            return feedback.select(["prediction_id"]).slice(0, 0)
        feedback = feedback.filter(pc.is_valid(feedback.column(truth)))
    return feedback.select(["prediction_id"])


def create_sql(lake: bool) -> str:
    """The tallies' DDL for a DuckDB file or a lake (aggregates as deltas and views there)."""
    return "".join(aggregate.create(lake) for aggregate in (LABEL_COVERAGE, DROPS_DAILY, DEVICE_VERSIONS)) + _CREATE_CHANGES


def recount_coverage(con: duckdb.DuckDBPyConnection) -> bool:
    """Count ``label_coverage`` again from the tables if it was counted by another rule; inside a transaction.

    The table's comment names the rule its counts follow; before 2026-11 any feedback (a comment
    too) counted as a label. Returns whether it counted again. A DuckDB store does this when it
    opens; a lake when ``edgeloop-ingest compact`` runs.
    """
    lake = on_lake(con)
    table = LABEL_COVERAGE.table(lake)
    row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = ?", [table],
    ).fetchone()
    if row is None or row[0] == COVERAGE_RULE:
        return False
    con.execute(f"DELETE FROM {_quote(table)}")
    if _exists(con, "models"):
        for (model,) in con.execute("SELECT model FROM models").fetchall():
            _count(con, model, lake=lake)
    con.execute(f"COMMENT ON TABLE {_quote(table)} IS '{COVERAGE_RULE}'")
    return True


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables; one that is new in a database that has rows counts them once (one counted by an
    older rule, again)."""
    for table, create, count in ((TABLE, LABEL_COVERAGE.create(False), _count_models),
                                 (DROPS, DROPS_DAILY.create(False), _count_drops),
                                 (VERSIONS, DEVICE_VERSIONS.create(False) + _CREATE_CHANGES, _count_versions)):
        if _exists(con, table):
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(create)
            count(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    con.execute("BEGIN TRANSACTION")
    try:
        recount_coverage(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    # Rows per day and model were a table of their own; they are ``landed_daily``'s now (ingest/health.py).
    con.execute("DROP TABLE IF EXISTS rows_daily")


def _count_models(con: duckdb.DuckDBPyConnection) -> None:
    if _exists(con, "models"):
        for (model,) in con.execute("SELECT model FROM models").fetchall():
            _count(con, model, lake=False)


def _count_drops(con: duckdb.DuckDBPyConnection) -> None:
    if _exists(con, "batches"):
        con.execute(DROPS_DAILY.add(
            f"SELECT CAST(timezone('UTC', received_at) AS DATE) AS day, model, left(e.key, {MAX_REASON_CHARS}) AS reason, "
            f"least(sum(least(e.value, {MAX_COUNT})::HUGEINT), {MAX_COUNT})::BIGINT AS records "
            "FROM (SELECT received_at, model, unnest(map_entries(TRY_CAST(TRY_CAST(drops AS JSON) AS MAP(VARCHAR, BIGINT)))) AS e "
            "FROM batches WHERE drops IS NOT NULL AND drops NOT IN ('{}', 'null')) WHERE e.value > 0 GROUP BY ALL", False))


def _count_versions(con: duckdb.DuckDBPyConnection) -> None:
    """Each device's current version from its rows; the history before the tally is not rebuilt."""
    if not _exists(con, "models"):
        return
    for (model,) in con.execute("SELECT model FROM models").fetchall():
        if not _exists(con, model):
            continue
        _current_versions(con, model)
        con.execute(
            f"INSERT INTO {CHANGES} SELECT model, device, CAST(timezone('UTC', since_at) AS DATE), NULL, model_version, since_at "
            f"FROM {VERSIONS} WHERE model = ?",
            [model],
        )


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column's values; a group's batches carry dictionaries of their own, which Acero will not unify."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _version_spans(predictions: Sequence[pa.Table]) -> pa.Table:
    """Per device and version: the earliest and latest created_at of the rows (a few rows, whatever the batch size).

    A row dated after its arrival counts as made when it arrived: a device clock years ahead would
    otherwise hold the device at that version until its clock caught up.
    """
    parts = []
    for table in predictions:
        created, received = table.column("created_at"), table.column("received_at")
        made = pc.if_else(pc.greater(created, received), received, created)
        keys = pa.table({"device": _decoded(table.column("device")), "model_version": _decoded(table.column("model_version")),
                         "created_at": made})
        parts.append(keys.group_by(["device", "model_version"], use_threads=False)
                     .aggregate([("created_at", "min"), ("created_at", "max")])
                     .select(["device", "model_version", "created_at_min", "created_at_max"]))
    return pa.concat_tables(parts)


def note_versions(con: duckdb.DuckDBPyConnection, model: str, predictions: Sequence[pa.Table], landed_at: datetime, *,
                  lake: bool = False) -> None:
    """Move each device of the group to the version of its newest prediction, logging the change."""
    if not predictions:
        return
    # Summed up by Arrow: DuckDB then joins a few rows per device, not a copy of every prediction.
    copy_to_temp(con, "__versions_p", _version_spans(predictions))
    with dropped_after(con, "__versions_p", "__versions_new"):
        con.execute(_GROUP_VERSIONS)
        con.execute(_LOG_CHANGES, [model])
        con.execute(DEVICE_VERSIONS.add(_MOVED, lake), [model, landed_at.isoformat()])


def note_drops(con: duckdb.DuckDBPyConnection, drops: Iterable[tuple[date, str, dict[str, int]]], *, lake: bool = False) -> None:
    """Add each landed batch's drop counts (day received, model, reason → records) to ``drops_daily``."""
    rows = [(day, model, str(reason)[:MAX_REASON_CHARS], min(int(count), MAX_COUNT))
            for day, model, counts in drops for reason, count in counts.items() if count > 0]
    if not rows:
        return
    delta = pa.table({
        "day": pa.array([r[0] for r in rows], pa.date32()), "model": [r[1] for r in rows],
        "reason": [r[2] for r in rows], "records": pa.array([r[3] for r in rows], pa.int64()),
    })
    con.register("__drops_delta", delta)
    try:
        con.execute(DROPS_DAILY.add(_DROPS_DELTA, lake))
    finally:
        con.unregister("__drops_delta")


def _current_versions(con: duckdb.DuckDBPyConnection, model: str) -> None:
    """Each device's current version of ``model``, derived from the rows the table holds now."""
    con.execute(
        f"INSERT INTO {VERSIONS} WITH cur AS (SELECT device, arg_max(model_version, least(created_at, received_at)) AS version, "
        f"max(least(created_at, received_at)) AS last_created_at, max(received_at) AS last_landed_at FROM {_quote(model)} "
        f"WHERE device IS NOT NULL GROUP BY device) "
        f"SELECT ?, c.device, c.version, min(least(p.created_at, p.received_at)), c.last_created_at, c.last_landed_at FROM cur AS c "
        f"JOIN {_quote(model)} AS p ON p.device = c.device AND p.model_version = c.version GROUP BY ALL",
        [model],
    )


def rebuild(con: duckdb.DuckDBPyConnection, model: str) -> None:
    """Count one model again from its tables (after rows were deleted); call inside the writer's transaction.

    Label coverage is counted again; a device with no rows left leaves the rollout (the others keep
    their version: re-inserting a key deleted in the same transaction trips DuckDB's constraint check).
    ``drops_daily`` and ``version_changes`` are the history of what devices did and stay.
    """
    lake = on_lake(con)
    con.execute(f"DELETE FROM {LABEL_COVERAGE.table(lake)} WHERE model = ?", [model])
    _count(con, model, lake=lake)
    if _exists(con, model):
        con.execute(
            f"DELETE FROM {DEVICE_VERSIONS.table(lake)} WHERE model = ? AND device NOT IN "
            f"(SELECT DISTINCT device FROM {_quote(model)} WHERE device IS NOT NULL)",
            [model],
        )


def _count(con: duckdb.DuckDBPyConnection, model: str, *, lake: bool) -> None:
    if not _exists(con, model) or not _exists(con, model + "_feedback"):
        return
    carries = _carries(labelled_by(con, model), "f")
    con.execute(
        f"INSERT INTO {LABEL_COVERAGE.table(lake)} SELECT ?, p.model_version, count(*), coalesce(sum(p.sample_weight), 0), "
        f"count(l.prediction_id), coalesce(sum(CASE WHEN l.prediction_id IS NULL THEN 0 ELSE p.sample_weight END), 0) "
        f"FROM {_quote(model)} AS p LEFT JOIN (SELECT DISTINCT prediction_id FROM {_quote(model + '_feedback')} AS f "
        f"WHERE TRUE{carries}) AS l ON l.prediction_id = p.record_id GROUP BY p.model_version",
        [model],
    )


def note_landed(con: duckdb.DuckDBPyConnection, model: str, predictions: Sequence[pa.Table], feedback: Sequence[pa.Table],
                batch_ids: Sequence[str], *, truth: str | None, lake: bool = False) -> None:
    """Count the rows a group commit just inserted (already in the tables, same transaction).

    ``predictions`` carry record_id, model_version and sample_weight; ``feedback`` carries
    prediction_id and, where it has it, the truth column (a row without a value there labels
    nothing). Feedback of this group is told apart from earlier feedback by its batch id. ``truth`` is
    ``labelled_by(con, model)``, passed in so a group commit runs no catalog query for it.
    """
    if not predictions and not feedback:
        return
    table, feedback_table = _quote(model), _quote(model + "_feedback")
    carries = _carries(truth, "f")
    group = pa.table({"batch_id": pa.array(list(batch_ids), pa.string())})
    copy_to_temp(con, "__coverage_group", group)
    parts: list[str] = []
    with dropped_after(con, "__coverage_group", "__coverage_counts", "__coverage_p", "__coverage_f", "__coverage_prior",
                       "__coverage_delta"):
        if predictions:
            rows = pa.concat_tables([t.select(["record_id", "model_version", "sample_weight"]) for t in predictions])
            # New predictions, counted by Arrow.
            counts = pa.table({"model_version": _decoded(rows.column("model_version")), "sample_weight": rows.column("sample_weight")}) \
                .group_by("model_version", use_threads=False).aggregate([([], "count_all"), ("sample_weight", "sum")])
            copy_to_temp(con, "__coverage_counts", counts)
            parts.append(
                "SELECT model_version, count_all AS predictions, sample_weight_sum AS weighted, 0 AS labelled, "
                "0.0 AS weighted_labelled FROM temp.__coverage_counts"
            )
            # Those of them whose feedback landed in an earlier group: none when no earlier feedback names an id
            # in their span (time-ordered ids: the feedback's row group statistics answer that without a copy).
            ids = pa.chunked_array([chunk.storage for chunk in rows.column("record_id").chunks], pa.binary(16))
            span = pc.min_max(ids)
            earlier = con.execute(
                f"SELECT 1 FROM {feedback_table} AS f WHERE f.prediction_id BETWEEN ?::UUID AND ?::UUID "
                f"AND f.batch_id NOT IN (SELECT batch_id FROM temp.__coverage_group){carries} LIMIT 1",
                [str(uuid.UUID(bytes=span["min"].as_py())), str(uuid.UUID(bytes=span["max"].as_py()))],
            ).fetchone()
            if earlier is not None:
                copy_to_temp(con, "__coverage_p", rows)
                parts.append(
                    f"SELECT p.model_version, {_ZERO}, count(*) AS labelled, sum(p.sample_weight) AS weighted_labelled "
                    "FROM temp.__coverage_p AS p "
                    "JOIN (SELECT DISTINCT f.prediction_id FROM temp.__coverage_p AS k "
                    f"JOIN {feedback_table} AS f ON f.prediction_id = k.record_id "
                    f"WHERE f.batch_id NOT IN (SELECT batch_id FROM temp.__coverage_group){carries}) AS x "
                    "ON x.prediction_id = p.record_id GROUP BY ALL"
                )
        if feedback:
            ids = pa.concat_tables([_labels(t, truth) for t in feedback])
            con.register("__coverage_f_arrow", ids)
            try:
                con.execute("CREATE OR REPLACE TEMP TABLE __coverage_f AS SELECT DISTINCT prediction_id FROM __coverage_f_arrow "
                            "WHERE prediction_id IS NOT NULL")
            finally:
                con.unregister("__coverage_f_arrow")
            # Predictions (landed earlier or in this group) whose first feedback is in this group.
            con.execute(
                "CREATE OR REPLACE TEMP TABLE __coverage_prior AS SELECT DISTINCT f.prediction_id FROM temp.__coverage_f AS k "
                f"JOIN {feedback_table} AS f ON f.prediction_id = k.prediction_id "
                f"WHERE f.batch_id NOT IN (SELECT batch_id FROM temp.__coverage_group){carries}"
            )
            parts.append(
                f"SELECT p.model_version, {_ZERO}, count(*) AS labelled, sum(p.sample_weight) AS weighted_labelled "
                "FROM temp.__coverage_f AS k "
                f"JOIN {table} AS p ON p.record_id = k.prediction_id "
                "WHERE k.prediction_id NOT IN (SELECT prediction_id FROM temp.__coverage_prior) GROUP BY ALL"
            )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE __coverage_delta AS SELECT model_version, sum(predictions)::BIGINT AS predictions, "
            "sum(weighted)::DOUBLE AS weighted, sum(labelled)::BIGINT AS labelled, "
            f"sum(weighted_labelled)::DOUBLE AS weighted_labelled FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL"
        )
        con.execute(LABEL_COVERAGE.add(
            "SELECT ? AS model, model_version, predictions, weighted, labelled, weighted_labelled FROM temp.__coverage_delta",
            lake), [model])
