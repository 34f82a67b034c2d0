"""Device health on the server: status history, refused uploads and landing aggregates.

Every write here runs on the store's one writer thread, inside its transaction::

    device_status    one row per status document a device sent (the history, pruned after
                     fleet.status_retention_days), with the whole document as JSON
    device_health    one row per device: its latest status, landing totals and refusal
                     count, kept current at write time so fleet views never scan history
    device_refusals  uploads refused per device, HTTP status and error code
    landed_daily     rows landed per day, model, model version, sampling policy version ('' for
                     none) and device (predictions and feedback), kept at landing time so
                     version views never scan model tables

``ensure_tables`` creates them (and fills the aggregates once from the ledger and model
tables of a database that predates them). Reads are in ``ingest/fleet.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from edgeloop.errors import BatchRejected
from edgeloop.ingest.aggregate import (
    DEVICE_HEALTH,
    DEVICE_REFUSALS,
    LANDED_DAILY,
    MAX_COUNT,
    STATUS_FIELDS,
    dropped_after,
    on_lake,
)
from edgeloop.schemas.device_status import DeviceStatus

__all__ = ["HEALTH_TABLES", "Refusals", "create_sql", "ensure_tables", "note_deleted", "note_landed", "prune_statuses", "shared_token",
           "store_status"]

log = logging.getLogger(__name__)

TSTZ = "TIMESTAMP WITH TIME ZONE"
HEALTH_TABLES = frozenset({"device_status", "device_health", "device_refusals", "landed_daily"})

_STATUS_TABLE = f"""
CREATE TABLE IF NOT EXISTS device_status (
    status_id VARCHAR PRIMARY KEY,
    device VARCHAR NOT NULL,
    received_at {TSTZ} NOT NULL,
    sent_at {TSTZ} NOT NULL,
    clock_offset_s DOUBLE NOT NULL,
    sha256 VARCHAR NOT NULL,
    agent_version VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    error VARCHAR,
    window_s DOUBLE NOT NULL,
    backlog_batches BIGINT NOT NULL,
    backlog_records BIGINT NOT NULL,
    backlog_bytes BIGINT NOT NULL,
    oldest_record_age_s DOUBLE,
    dropped BIGINT NOT NULL,
    free_disk_bytes BIGINT NOT NULL,
    disk_full BOOLEAN NOT NULL,
    document VARCHAR NOT NULL
);
"""
# The per-device and per-day counters (keyed tables here, deltas and views on a lake: see ingest/aggregate.py).
_AGGREGATES = (DEVICE_HEALTH, DEVICE_REFUSALS, LANDED_DAILY)

# One row per device of the ledger rows in ``source``.
_DEVICE_LANDINGS = """
SELECT device, min(received_at) AS first_seen_at, max(received_at) AS last_seen_at, max(received_at) AS last_upload_at,
       count(*) AS batches, sum(rows - duplicates - erased)::BIGINT AS rows
FROM {source} GROUP BY device
"""
_LANDING_COLUMNS = ("device", "first_seen_at", "last_seen_at", "last_upload_at", "batches", "rows")

# One row per day, model, version, policy and device of the per-arrival counts in ``source``.
_DAILY = """
SELECT received_at::DATE AS day, model, model_version, policy_version, device,
       sum(CASE WHEN kind = 'prediction' THEN n ELSE 0 END)::BIGINT AS predictions,
       sum(CASE WHEN kind = 'feedback' THEN n ELSE 0 END)::BIGINT AS feedback,
       min(received_at) AS first_at, max(received_at) AS last_at
FROM {source} GROUP BY ALL
"""


def create_sql(lake: bool) -> str:
    """The health tables' DDL for a DuckDB file or a lake (no keys; aggregates as deltas and views)."""
    status = _STATUS_TABLE if not lake else _STATUS_TABLE.replace(" PRIMARY KEY", "")
    return status + "".join(aggregate.create(lake) for aggregate in _AGGREGATES)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the health tables; a database from before them gets its aggregates filled from what landed."""
    had = {row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main'"
    ).fetchall()}
    con.execute(create_sql(lake=False))
    if "landed_daily" in had or "batches" not in had:
        return
    # One pass over what landed before the aggregates existed; from now on the writer keeps them.
    con.execute(DEVICE_HEALTH.add(_DEVICE_LANDINGS.format(source="batches"), False, _LANDING_COLUMNS))
    models = [row[0] for row in con.execute("SELECT model FROM models").fetchall()]
    for model in models:
        for table, kind in ((model, "prediction"), (f"{model}_feedback", "feedback")):
            if table not in had:
                continue
            quoted = '"' + table.replace('"', '""') + '"'
            columns = {row[0] for row in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?", [table]
            ).fetchall()}
            policy = "coalesce(policy_version, '')" if "policy_version" in columns else "''"
            source = (f"(SELECT ? AS model, '{kind}' AS kind, device, model_version, {policy} AS policy_version, "
                      f"received_at, count(*) AS n FROM {quoted} GROUP BY ALL)")
            con.execute(LANDED_DAILY.add(_DAILY.format(source=source), False), [model])
    log.info("fleet aggregates filled from the landed rows", extra={"models": len(models)})


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column's values; a group's batches carry dictionaries of their own, which Acero will not unify."""
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def note_landed(con: duckdb.DuckDBPyConnection, inserted: list[tuple[str, str, pa.Table]], ledger: pa.Table, *,
                lake: bool = False) -> None:
    """Inside a landing's transaction: add its rows to ``landed_daily`` and its batches to ``device_health``.

    ``inserted`` is (model, kind, rows actually inserted) per table write, with the landing columns.
    """
    parts = []
    for model, kind, rows in inserted:
        if not rows.num_rows:
            continue
        # Rows of agents from before sampling policies carry none: counted under ''.
        if "policy_version" in rows.column_names:
            policy = pc.fill_null(rows.column("policy_version").cast(pa.string()), "")
        else:
            policy = pa.repeat(pa.scalar("", pa.string()), rows.num_rows)
        keys = pa.table({"device": _decoded(rows.column("device")), "model_version": _decoded(rows.column("model_version")),
                         "policy_version": policy, "received_at": rows.column("received_at")})
        # One row per device, version, policy and batch arrival: a few rows, whatever the batch size.
        counts = keys.group_by(keys.column_names, use_threads=False).aggregate([([], "count_all")])
        parts.append(counts.append_column("model", pa.repeat(pa.scalar(model), counts.num_rows))
                     .append_column("kind", pa.repeat(pa.scalar(kind), counts.num_rows))
                     .rename_columns(["device", "model_version", "policy_version", "received_at", "n", "model", "kind"]))
    if parts:
        con.register("__edgeloop_landed", pa.concat_tables(parts))
        try:
            con.execute(LANDED_DAILY.add(_DAILY.format(source="__edgeloop_landed"), lake))
        finally:
            con.unregister("__edgeloop_landed")
    con.register("__edgeloop_landed_ledger", ledger.select(["device", "received_at", "rows", "duplicates", "erased"]))
    try:
        con.execute(DEVICE_HEALTH.add(_DEVICE_LANDINGS.format(source="__edgeloop_landed_ledger"), lake, _LANDING_COLUMNS))
    finally:
        con.unregister("__edgeloop_landed_ledger")


def note_deleted(con: duckdb.DuckDBPyConnection, model: str, gone: list[tuple[str, str, str, list[Any]]]) -> None:
    """Inside a deletion's transaction, before its DELETEs: take the rows it deletes out of ``landed_daily`` and
    each device's ``device_health`` rows.

    ``gone`` is (kind, table, WHERE clause, parameters) per table the deletion deletes from.
    """
    parts, params = [], []
    for kind, table, where, args in gone:
        quoted = '"' + table.replace('"', '""') + '"'
        columns = {row[0] for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?", [table]
        ).fetchall()}
        policy = "coalesce(policy_version, '')" if "policy_version" in columns else "''"
        parts.append(f"SELECT ? AS model, '{kind}' AS kind, device, model_version, {policy} AS policy_version, received_at, "
                     f"-count(*) AS n FROM {quoted} WHERE ({where}) AND device IS NOT NULL AND received_at IS NOT NULL GROUP BY ALL")
        params += [model, *args]
    if not parts:
        return
    lake = on_lake(con)
    con.execute(f"CREATE OR REPLACE TEMP TABLE __edgeloop_gone AS {' UNION ALL '.join(parts)}", params)
    with dropped_after(con, "__edgeloop_gone"):
        con.execute(LANDED_DAILY.add(_DAILY.format(source="temp.__edgeloop_gone"), lake))
        con.execute(DEVICE_HEALTH.add("SELECT device, sum(n)::BIGINT AS rows FROM temp.__edgeloop_gone GROUP BY device",
                                      lake, ["device", "rows"]))
        LANDED_DAILY.prune(con, lake)


def store_status(
    con: duckdb.DuckDBPyConnection, device: str, status: DeviceStatus, sha256: str, received_at: datetime
) -> tuple[int, dict[str, Any]]:
    """Store one status document (201), or answer a retry of a stored one (200); 409 for an id reused with other content."""
    found = con.execute(  # through Arrow: DuckDB's Python objects for TIMESTAMPTZ need pytz
        "SELECT device, sha256, received_at, clock_offset_s FROM device_status WHERE status_id = ?", [status.status_id]
    ).to_arrow_table().to_pylist()
    if found:
        earlier = found[0]
        if earlier["device"] != device or earlier["sha256"] != sha256:
            raise BatchRejected(409, "conflict", f"status {status.status_id} was already stored with other content",
                                {"status_id": status.status_id})
        return 200, _receipt(status.status_id, device, earlier["received_at"], earlier["clock_offset_s"], "already_stored")
    offset_s = (received_at - status.sent_at).total_seconds()
    sync, spool = status.sync, status.spool
    dropped = min(sum(status.drops.values()), MAX_COUNT)  # each reason may count 2^62: their sum would overflow BIGINT
    document = orjson.dumps(status.model_dump(mode="json")).decode()
    con.execute(
        "INSERT INTO device_status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [status.status_id, device, received_at, status.sent_at, offset_s, sha256, status.agent_version,
         sync.outcome, sync.error, sync.window_s, spool.batches, spool.records, spool.bytes, spool.oldest_record_age_s,
         dropped, status.disk.free_bytes, status.disk.full, document],
    )
    if status.run_id is not None and _run_came_back(con, device, status.run_id):
        log.warning("two agents send with one device's token: their runs alternate (a state dir copied to another "
                    "machine, e.g. one SD-card image on several devices?); give each its own name and token",
                    extra={"device": device, "run_id": status.run_id})
    latest = [
        received_at, status.sent_at, status.status_id, status.agent_version, sync.window_s, sync.outcome, sync.error,
        sync.started_at, sync.last_success_at, sync.failures_in_a_row, spool.batches, spool.records, spool.bytes,
        spool.oldest_record_age_s, status.disk.free_bytes, status.disk.full, offset_s, status.clock.synchronized,
    ]
    # A retried older report counts, but never replaces the latest one (by the device's send time).
    _add_device_row(con, {"device": device, "first_seen_at": received_at, "last_seen_at": received_at, "statuses": 1,
                          "dropped": dropped, **dict(zip(STATUS_FIELDS, latest))})
    return 201, _receipt(status.status_id, device, received_at, offset_s, "stored")


def _run_came_back(con: duckdb.DuckDBPyConnection, device: str, run_id: str) -> bool:
    """Whether ``run_id`` was stored before another run's status: one agent's runs follow each other and never return."""
    found = con.execute(
        "SELECT count(*) FROM device_status WHERE device = $1 AND json_extract_string(document, '$.run_id') = $2 "
        "AND received_at < (SELECT max(received_at) FROM device_status WHERE device = $1 "
        "AND json_extract_string(document, '$.run_id') <> $2)", [device, run_id],
    ).fetchone()
    return bool(found and found[0])


def shared_token(run_ids: list[str | None]) -> bool:
    """Whether statuses' run ids (oldest first) alternate: a run that comes back after another is a second agent."""
    superseded: set[str] = set()
    current = None
    for run_id in run_ids:
        if run_id is None or run_id == current:
            continue
        if run_id in superseded:
            return True
        if current is not None:
            superseded.add(current)
        current = run_id
    return False


def _add_device_row(con: duckdb.DuckDBPyConnection, values: dict[str, Any]) -> None:
    """Add one row of counters and facts to a device's ``device_health``."""
    types = {value.name: value.type for value in DEVICE_HEALTH.values} | {"device": "VARCHAR"}
    source = "SELECT " + ", ".join(f"?::{types[name]} AS {name}" for name in values)
    con.execute(DEVICE_HEALTH.add(source, on_lake(con), list(values)), list(values.values()))


def prune_statuses(con: duckdb.DuckDBPyConnection, retention_days: int, now: datetime) -> int:
    """Delete status history older than the retention; the per-device latest lives on in device_health."""
    cutoff = now - timedelta(days=retention_days)
    deleted = con.execute("DELETE FROM device_status WHERE received_at < ?", [cutoff]).fetchone()
    return int(deleted[0]) if deleted else 0


def _receipt(status_id: str, device: str, received_at: datetime, offset_s: float, state: str) -> dict[str, Any]:
    return {
        "status_id": status_id, "device": device, "received_at": received_at.astimezone(UTC).isoformat(),
        "clock_offset_s": offset_s, "status": state,
    }


class Refusals:
    """Counts refused uploads per device, status and code in memory; one writer call at a time adds them to the tables.

    A device that is refused in a flood costs the writer one small transaction per flush, not one per refusal.
    """

    def __init__(self, submit: Callable[[Callable[[duckdb.DuckDBPyConnection], Any]], Any]) -> None:
        self._submit = submit  # Store.call
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int, str], list[Any]] = {}
        self._flushing = False

    def add(self, device: str, status: int, code: str, at: datetime | None = None) -> None:
        at = at or datetime.now(UTC)
        with self._lock:
            entry = self._pending.setdefault((device, status, code[:64]), [0, at, at])
            entry[0] += 1
            entry[2] = at
            if self._flushing:
                return
            self._flushing = True
        try:
            future = self._submit(self._write)
        except Exception as exc:  # the store is closing: these counts are lost, the refusals were answered
            log.warning("refusal counts not stored", extra={"error": str(exc)})
            with self._lock:
                self._flushing = False
            return
        future.add_done_callback(self._done)

    def pending(self) -> int:
        with self._lock:
            return sum(entry[0] for entry in self._pending.values())

    def _write(self, con: duckdb.DuckDBPyConnection) -> int:
        with self._lock:
            taken, self._pending = self._pending, {}
        rows = [[device, status, code, count, first, last] for (device, status, code), (count, first, last) in taken.items()]
        try:
            if rows:
                lake = on_lake(con)
                con.executemany(DEVICE_REFUSALS.add("SELECT ?::VARCHAR AS device, ?::INTEGER AS status, ?::VARCHAR AS code, "
                                                    "?::BIGINT AS count, ?::TIMESTAMPTZ AS first_at, ?::TIMESTAMPTZ AS last_at",
                                                    lake), rows)
                per_device: dict[str, list[Any]] = {}
                for device, _status, code, count, _first, last in rows:
                    entry = per_device.setdefault(device, [0, last, code])
                    entry[0] += count
                    if last >= entry[1]:
                        entry[1], entry[2] = last, code
                for device, (count, last, code) in per_device.items():
                    _add_device_row(con, {"device": device, "refused": count, "last_refused_at": last, "last_refused_code": code})
        except BaseException:
            with self._lock:  # the transaction rolls back: put the counts back for the next flush
                for key, (count, first, last) in taken.items():
                    entry = self._pending.setdefault(key, [0, first, last])
                    entry[0] += count
            raise
        return len(rows)

    def _done(self, future: Any) -> None:
        error = future.exception()
        with self._lock:
            self._flushing = False
            if error is not None or not self._pending:
                if error is not None:  # the counts were put back; the next refusal flushes them
                    log.warning("storing refusal counts failed", extra={"error": str(error)})
                return
            self._flushing = True  # more arrived while this flush ran
        try:
            self._submit(self._write).add_done_callback(self._done)
        except Exception:
            with self._lock:
                self._flushing = False
