"""The fleet's facts, read: each device's state and health, one device in detail, model versions in use.

The one place fleet SQL is written: the CLI (``fleet``, ``devices list``, ``devices show``) and
the dashboard call these functions, through anything with ``query(sql, params) -> pa.Table``
(an ``Admin`` in the CLI, ``StoreReader`` in the server). They read the aggregates the writer
keeps (``device_health``, ``landed_daily``: see ``ingest/health.py``), never the model tables,
so a page costs the same at 100 million rows as at 100.

A device's state, judged at ``now`` against its sync window (the schedule it declared in its
last status, else ``fleet.default_sync_window_s``)::

    revoked      its token was revoked
    never_seen   registered, but no status and no upload has arrived
    silent       nothing for more than fleet.silent_after_windows windows (+ fleet.grace_s)
    failing      its last sync ended "failed" or "partial"; last_error says why
    late         nothing for more than one window (+ fleet.grace_s)
    ok           syncing normally
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import pyarrow as pa

from edgeloop.ingest.choices import STATES
from edgeloop.ingest.config import FleetSettings
from edgeloop.ingest.dashboard import version_key_sql
from edgeloop.ingest.health import shared_token
from edgeloop.ingest.query import CheckedQuery, readable, run_query, stream_query
from edgeloop.ingest.store import Store, arrow_rows

MAX_DEVICE_VERSIONS = 20  # per model in a device's detail, as its page shows
MAX_RUN_STATUSES = 200  # a device's newest statuses whose run ids tell whether two agents share its token

__all__ = [
    "MAX_DEVICE_VERSIONS",
    "STATES",
    "Reader",
    "StoreReader",
    "device_detail",
    "devices",
    "fleet_overview",
    "fleet_summary",
    "versions",
]


class Reader(Protocol):
    """Runs one allowed SELECT; ``Admin`` is one, ``StoreReader`` another."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table: ...


class StoreReader:
    """The ``Admin`` protocol's ``query`` on the server's own read cursor, through the same allow-list as /v1/sql.

    ``trusted``: the SQL is the server's own constant text with bound parameters (these
    functions, the dashboard's panels), so the allow-list's parse per query is skipped.
    """

    def __init__(self, store: Store, timeout_s: float | None = None, *, trusted: bool = False) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._trusted = trusted

    def query(self, sql: str, params: Sequence[Any] = ()) -> pa.Table:
        if not self._trusted:
            return run_query(self._store.cursor(), sql, params, timeout_s=self._timeout_s)
        batches = stream_query(self._store.cursor(), sql, params, timeout_s=self._timeout_s,
                               checked=CheckedQuery(sql, frozenset(), ours=True))
        first = next(batches)
        return readable(pa.Table.from_batches([first, *batches], schema=first.schema), sql)


# Every device with its aggregates and its state; parameters: now, default window, silent windows, grace.
_DEVICES = """
WITH joined AS (
    SELECT d.name AS device, d.created_at, d.revoked_at, h.* EXCLUDE (device),
           coalesce(h.window_s, $2) AS sync_window_s,
           date_diff('millisecond', h.last_seen_at, $1::TIMESTAMPTZ) / 1000.0 AS silent_for_s
    FROM devices AS d LEFT JOIN device_health AS h ON h.device = d.name
)
SELECT device,
       CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
            WHEN last_seen_at IS NULL THEN 'never_seen'
            WHEN silent_for_s > $3 * sync_window_s + $4 THEN 'silent'
            WHEN last_outcome IN ('failed', 'partial') THEN 'failing'
            WHEN silent_for_s > sync_window_s + $4 THEN 'late'
            ELSE 'ok' END AS state,
       last_seen_at, silent_for_s, sync_window_s, agent_version, last_outcome, last_error, last_sync_at,
       last_success_at, failures_in_a_row, backlog_batches, backlog_records, backlog_bytes, oldest_record_age_s,
       dropped, refused, last_refused_at, last_refused_code, free_disk_bytes, disk_full, clock_offset_s,
       clock_synchronized, last_upload_at, batches, coalesce(rows, 0)::BIGINT AS rows, statuses, last_status_at,
       first_seen_at, created_at, revoked_at
FROM joined
"""

_ORDER = " ORDER BY device"


def _params(now: datetime, settings: FleetSettings) -> list[Any]:
    # Times travel as RFC 3339 text: the admin API carries parameters as JSON.
    return [now.astimezone(UTC).isoformat(), settings.default_sync_window_s, settings.silent_after_windows, settings.grace_s]


def fleet_overview(
    reader: Reader,
    now: datetime,
    settings: FleetSettings,
    *,
    states: Sequence[str] | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> pa.Table:
    """One row per device: its state at ``now`` and the health facts of its latest status; optionally only ``states``."""
    unknown = sorted(set(states or ()) - set(STATES))
    if unknown:
        raise ValueError(f"unknown device state {unknown[0]!r} (states: {', '.join(STATES)})")
    sql, params = f"SELECT * FROM ({_DEVICES}) AS fleet", _params(now, settings)
    if states:
        sql += f" WHERE state IN ({', '.join('$' + str(len(params) + 1 + i) for i in range(len(states)))})"
        params += list(states)
    sql += _ORDER
    if limit is not None:
        sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
    return reader.query(sql, params)


def fleet_summary(reader: Reader, now: datetime, settings: FleetSettings) -> dict[str, int]:
    """How many devices are in each state at ``now`` (every state present, zero or not)."""
    rows = reader.query(f"SELECT state, count(*) AS n FROM ({_DEVICES}) AS fleet GROUP BY state", _params(now, settings))
    counts = dict.fromkeys(STATES, 0)
    counts.update({row["state"]: row["n"] for row in rows.to_pylist()})
    return counts


def devices(reader: Reader, now: datetime, settings: FleetSettings) -> pa.Table:
    """``devices list``: each device with its state, created, last seen, batches and rows (from the aggregates)."""
    return reader.query(
        f"SELECT device AS name, CASE WHEN revoked_at IS NULL THEN 'active' ELSE 'revoked' END AS status, state, "
        f"created_at, revoked_at, last_seen_at AS last_seen, coalesce(batches, 0)::BIGINT AS batches, rows "
        f"FROM ({_DEVICES}) AS fleet{_ORDER}",
        _params(now, settings),
    )


def device_detail(reader: Reader, name: str, now: datetime, settings: FleetSettings, *, history: int = 20) -> dict[str, Any] | None:
    """One device: its overview row, its latest status document, its recent statuses, refusals and model versions
    (per model the ``MAX_DEVICE_VERSIONS`` newest, and in ``versions_total`` how many it ever landed).

    None if no device has that name.
    """
    row = reader.query(f"SELECT * FROM ({_DEVICES}) AS fleet WHERE device = $5", [*_params(now, settings), name])
    if not row.num_rows:
        return None
    latest = reader.query(
        "SELECT document FROM device_status WHERE device = ? ORDER BY sent_at DESC, received_at DESC LIMIT 1", [name]
    ).to_pylist()
    recent = reader.query(
        "SELECT status_id, received_at, sent_at, clock_offset_s, outcome, error, backlog_batches, backlog_records, "
        "backlog_bytes, oldest_record_age_s, dropped, free_disk_bytes, disk_full "
        "FROM device_status WHERE device = ? ORDER BY received_at DESC LIMIT ?", [name, int(history)]
    )
    refusals = reader.query(
        "SELECT status, code, count, first_at, last_at FROM device_refusals WHERE device = ? ORDER BY last_at DESC", [name]
    )
    runs = reader.query(
        "SELECT run_id FROM (SELECT json_extract_string(document, '$.run_id') AS run_id, received_at FROM device_status "
        "WHERE device = ? ORDER BY received_at DESC LIMIT ?) ORDER BY received_at", [name, MAX_RUN_STATUSES]
    ).column("run_id").to_pylist()
    # Devices name their versions, so there is no bound on how many: per model the newest (as people read versions)
    # and the count, so a device that ran thousands of versions costs its page as much as one that ran twenty.
    used = arrow_rows(reader.query(
        "SELECT * EXCLUDE (newness) FROM (SELECT *, count(*) OVER (PARTITION BY model) AS total, "
        f"row_number() OVER (PARTITION BY model ORDER BY {version_key_sql('model_version')} DESC, last_seen DESC) "
        "AS newness FROM (SELECT model, model_version, sum(predictions)::BIGINT AS predictions, "
        "sum(feedback)::BIGINT AS feedback, min(first_at) AS first_seen, max(last_at) AS last_seen FROM landed_daily "
        "WHERE device = ? GROUP BY model, model_version)) WHERE newness <= ? ORDER BY model, last_seen DESC",
        [name, MAX_DEVICE_VERSIONS],
    ))
    totals = {entry["model"]: entry.pop("total") for entry in used}
    return {
        "device": arrow_rows(row)[0],
        "status": orjson.loads(latest[0]["document"]) if latest else None,
        "recent_statuses": arrow_rows(recent),
        "refusals": arrow_rows(refusals),
        "shared_token": shared_token(runs),
        "versions": used,
        "versions_total": totals,
    }


def versions(reader: Reader, *, since: datetime | None = None) -> pa.Table:
    """Per model and version: devices that sent rows of it, predictions and feedback landed, first and last landing,
    and the sampling policy versions that kept those rows.

    ``since`` counts only days from then on (devices still running a version, not every one that ever did).
    """
    where, params = ("WHERE day >= ?::TIMESTAMPTZ::DATE", [since.astimezone(UTC).isoformat()]) if since else ("", [])
    return reader.query(
        "SELECT model, model_version, count(DISTINCT device) AS devices, sum(predictions)::BIGINT AS predictions, "
        "sum(feedback)::BIGINT AS feedback, min(first_at) AS first_seen, max(last_at) AS last_seen, "
        "string_agg(DISTINCT nullif(policy_version, ''), ', ' ORDER BY nullif(policy_version, '')) AS policies "
        f"FROM landed_daily {where} GROUP BY model, model_version ORDER BY model, last_seen DESC",
        params,
    )
