"""What the dashboard shows, as plain data: rollout per model, fleet health, data landed, one device.

The pages (``dashboard_html``) and the JSON endpoints (``dashboard_app``) render the same dicts,
so a number on the page is the number the API returns. Every query is ours (no user SQL), runs
on a read cursor of the server's store and reads the ledger (``batches``: one row per landed
batch) and the tallies the writer keeps as rows land (``tallies``), so a page costs a scan of
batches and aggregates, never of the rows themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from edgeloop.errors import QueryFailed
from edgeloop.ingest.store import quote
from edgeloop.schemas.model_schema import NAME_PATTERN

__all__ = ["CLOCK_OUTLIER_S", "MAX_DAYS", "Dashboard", "version_key"]

MAX_DAYS = 366
MAX_DEVICE_BATCHES = 200  # the newest batches a device page lists
CLOCK_OUTLIER_S = 300.0  # a device whose clock is off by more than this is listed (transit is seconds)

Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]


def version_key(version: str) -> tuple[tuple[Any, ...], ...]:
    """Order versions as people read them: 2.10.0 after 2.9.1, and 2.2.0-rc1 after 2.1.9 but before 2.2.0."""
    parts = [(2, int(part)) if part.isdigit() else (0, part) for part in re.findall(r"\d+|[A-Za-z]+", version)]
    return (*parts, (1,))  # the end of a version ranks above a suffix (rc) and below another number


def _days(now: datetime, days: int) -> list[date]:
    end = now.astimezone(UTC).date()
    return [end - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


class Dashboard:
    """The dashboard's facts, read through ``query`` (our own SQL on a read cursor)."""

    def __init__(self, query: Query, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._query = query
        self._now = now

    def models(self) -> list[str]:
        return [row["model"] for row in self._query("SELECT model FROM models ORDER BY model", [])]

    def _model(self, model: str) -> str:
        if not NAME_PATTERN.match(model) or model not in self.models():
            raise QueryFailed(f"no model named {model[:80]!r}")
        return model

    @staticmethod
    def check_days(days: int) -> int:
        if not 1 <= days <= MAX_DAYS:
            raise QueryFailed(f"days must be 1 to {MAX_DAYS}, got {days}")
        return days

    def rollout(self, model: str, days: int = 30) -> dict[str, Any]:
        """Share of devices on each version per day, and the devices not on the newest version.

        A device is on the version of its latest prediction made on or before that day (device
        time, UTC), from its first prediction on; revoked devices are left out. So a day without
        uploads keeps each device where it was, and an upgrade shows the day it happened.
        """
        model = self._model(model)
        days = self.check_days(days)
        axis = _days(self._now(), days)
        table = quote(model)
        start = datetime.combine(axis[0], datetime.min.time(), UTC).isoformat()
        active = "JOIN devices AS d ON d.name = p.device AND d.revoked_at IS NULL"
        changes = self._query(
            f"SELECT p.device, CAST(timezone('UTC', p.created_at) AS DATE) AS day, "
            f"arg_max(p.model_version, p.created_at) AS version FROM {table} AS p {active} "
            f"WHERE p.created_at >= ?::TIMESTAMPTZ GROUP BY ALL "
            f"UNION ALL SELECT p.device, NULL AS day, arg_max(p.model_version, p.created_at) AS version "
            f"FROM {table} AS p {active} WHERE p.created_at < ?::TIMESTAMPTZ GROUP BY ALL ORDER BY 1, 2 NULLS FIRST",
            [start, start],
        )
        current = self._query(
            f"SELECT p.device, arg_max(p.model_version, p.created_at) AS version, max(p.received_at) AS last_seen, "
            f"max(p.created_at) AS last_prediction FROM {table} AS p {active} GROUP BY p.device",
            [],
        )
        versions = sorted({row["version"] for row in changes} | {row["version"] for row in current}, key=version_key)
        newest = versions[-1] if versions else None
        index = {day: i for i, day in enumerate(axis)}
        counts = {version: [0] * len(axis) for version in versions}
        by_device: dict[str, list[tuple[int, str]]] = {}
        for row in changes:  # ordered by device, then day with the state before the window first
            if row["day"] is None or row["day"] in index:
                by_device.setdefault(row["device"], []).append((-1 if row["day"] is None else index[row["day"]], row["version"]))
        for steps in by_device.values():
            for (at, version), (until, _) in zip(steps, [*steps[1:], (len(axis), "")]):
                for i in range(max(at, 0), until):
                    counts[version][i] += 1
        totals = [sum(counts[v][i] for v in versions) for i in range(len(axis))]
        on_version: dict[str, int] = {}
        for row in current:
            on_version[row["version"]] = on_version.get(row["version"], 0) + 1
        behind = sorted((row for row in current if row["version"] != newest), key=lambda row: row["last_seen"])
        return {
            "model": model,
            "days": [day.isoformat() for day in axis],
            "versions": versions,
            "newest": newest,
            "devices": totals,
            "devices_per_day": counts,
            "share_per_day": {v: [n / t if t else 0.0 for n, t in zip(counts[v], totals)] for v in versions},
            "devices_on_version": {v: on_version.get(v, 0) for v in versions},
            "upgraded": bool(current) and not behind,
            "behind": [
                {"device": row["device"], "version": row["version"], "last_seen": row["last_seen"],
                 "last_prediction": row["last_prediction"]}
                for row in behind
            ],
        }

    def data(self, days: int = 30) -> dict[str, Any]:
        """Rows landed per model per day (from the ledger), and per model and version: labels and weights (tallied at landing)."""
        days = self.check_days(days)
        axis = _days(self._now(), days)
        since = datetime.combine(axis[0], datetime.min.time(), UTC).isoformat()
        landed = self._query(
            "SELECT model, CAST(timezone('UTC', received_at) AS DATE) AS day, "
            "sum(rows - duplicates)::BIGINT AS rows, sum(predictions)::BIGINT AS predictions, "
            "sum(feedback)::BIGINT AS feedback FROM batches WHERE received_at >= ?::TIMESTAMPTZ "
            "GROUP BY ALL ORDER BY model, day",
            [since],
        )
        models = self.models()
        per_day = {model: [0] * len(axis) for model in models}
        index = {day: i for i, day in enumerate(axis)}
        for row in landed:
            if row["model"] in per_day and row["day"] in index:
                per_day[row["model"]][index[row["day"]]] = row["rows"]
        coverage = [
            {
                "model": row["model"], "model_version": row["model_version"], "predictions": row["predictions"],
                "labelled": row["labelled"], "coverage": row["labelled"] / row["predictions"] if row["predictions"] else None,
                "weighted": row["weighted"],
                "weighted_coverage": row["weighted_labelled"] / row["weighted"] if row["weighted"] else None,
            }
            for row in self._query(
                "SELECT model, model_version, predictions, labelled, weighted, weighted_labelled FROM label_coverage", []
            )
        ]
        coverage.sort(key=lambda row: (row["model"], version_key(row["model_version"])))
        return {"days": [day.isoformat() for day in axis], "rows_per_day": per_day, "coverage": coverage}

    def drops(self, days: int = 30) -> dict[str, Any]:
        """Records the devices dropped before sealing (sampling, rate caps, a full spool), by reason per day."""
        days = self.check_days(days)
        axis = _days(self._now(), days)
        rows = self._query(
            "SELECT day, reason, sum(records)::BIGINT AS records FROM drops_daily WHERE day >= ?::DATE GROUP BY ALL",
            [axis[0].isoformat()],
        )
        index = {day: i for i, day in enumerate(axis)}
        reasons: dict[str, list[int]] = {}
        for row in rows:
            if row["day"] in index:
                reasons.setdefault(row["reason"], [0] * len(axis))[index[row["day"]]] += row["records"]
        return {"days": [day.isoformat() for day in axis], "by_reason": dict(sorted(reasons.items()))}

    def clock_outliers(self, threshold_s: float = CLOCK_OUTLIER_S) -> list[dict[str, Any]]:
        """Devices whose latest batch says their clock is off by more than ``threshold_s``."""
        return self._query(
            "SELECT device, arg_max(clock_offset_s, received_at) AS clock_offset_s, max(received_at) AS last_seen "
            "FROM batches WHERE clock_offset_s IS NOT NULL GROUP BY device "
            "HAVING abs(arg_max(clock_offset_s, received_at)) > ? ORDER BY abs(arg_max(clock_offset_s, received_at)) DESC",
            [threshold_s],
        )

    def device(self, name: str) -> dict[str, Any]:
        """One device: its registration, the versions it runs per model, and its newest batches."""
        rows = self._query("SELECT name, created_at, revoked_at FROM devices WHERE name = ?", [name])
        if not rows:
            raise LookupError(name)
        batches = self._query(
            "SELECT batch_id, model, rows, duplicates, predictions, feedback, bytes, agent_version, drops, "
            "sealed_at, sent_at, received_at, clock_offset_s FROM batches WHERE device = ? "
            "ORDER BY received_at DESC LIMIT ?",
            [name, MAX_DEVICE_BATCHES],
        )
        totals = self._query(
            "SELECT count(*) AS batches, coalesce(sum(rows - duplicates), 0)::BIGINT AS rows, max(received_at) AS last_seen "
            "FROM batches WHERE device = ?",
            [name],
        )[0]
        versions = []
        for model in sorted({row["model"] for row in self._query("SELECT DISTINCT model FROM batches WHERE device = ?", [name])}):
            for row in self._query(
                f"SELECT model_version, count(*) AS predictions, min(created_at) AS first_prediction, "
                f"max(created_at) AS last_prediction FROM {quote(model)} WHERE device = ? GROUP BY model_version",
                [name],
            ):
                versions.append({"model": model, **row})
        versions.sort(key=lambda row: (row["model"], version_key(row["model_version"])))
        return {**rows[0], **totals, "versions": versions, "recent_batches": batches}
