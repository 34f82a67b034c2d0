"""What the dashboard shows, as plain data: rollout per model, data landed, drops, a device's batches.

Fleet health (device states, backlog, refusals, status history) is ``fleet``'s: the CLI and
the dashboard call the same functions. The pages (``dashboard_html``) and the JSON endpoints
(``dashboard_app``) render the same dicts,
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
from edgeloop.ingest.aggregate import MAX_COUNT
from edgeloop.schemas.model_schema import NAME_PATTERN

__all__ = ["MAX_DAYS", "MAX_GROUPS_SHOWN", "MAX_ROLLOUT_VERSIONS", "MAX_VERSION_CHANGES", "Dashboard", "version_key",
           "version_key_sql"]

MAX_DAYS = 366
MAX_DEVICE_BATCHES = 200  # the newest batches a device page lists
MAX_VERSION_CHANGES = 200  # the newest version changes a device page lists (the count says how many in all)
MAX_BEHIND = 500  # devices listed as still on an older version (the count says how many in all)
MAX_GROUPS_SHOWN = 20  # versions (or devices) one field report shows: devices name versions, so there is no bound
MAX_ROLLOUT_VERSIONS = 12  # a rollout's series: the versions most devices run (the newest always), the rest summed as one
MAX_DROP_REASONS_SHOWN = 12  # the drops chart's series: the largest reasons, the rest summed as one
OTHER_REASONS = "(other reasons)"  # not a reason's name (those are letters, digits and ._:+-)

Query = Callable[[str, Sequence[Any]], list[dict[str, Any]]]


def version_key(version: str) -> tuple[tuple[Any, ...], ...]:
    """Order versions as people read them: 2.10.0 after 2.9.1, and 2.2.0-rc1 after 2.1.9 but before 2.2.0.

    ``version_key_sql`` orders the same in SQL; both read ASCII digits and letters only.
    """
    parts = [(2, int(part)) if part[0] in "0123456789" else (0, part) for part in re.findall(r"[0-9]+|[A-Za-z]+", version)]
    return (*parts, (1,))  # the end of a version ranks above a suffix (rc) and below another number


def version_key_sql(column: str) -> str:
    """A DuckDB expression over the VARCHAR ``column`` that sorts as ``version_key`` does (a list of structs).

    A number is compared by its length without leading zeros, then by its digits: as ``int`` does, at any length.
    """
    return (
        f"list_concat(list_transform(regexp_extract_all({column}, '[0-9]+|[A-Za-z]+'), part -> "
        "CASE WHEN regexp_full_match(part, '[0-9]+') "
        "THEN {'rank': 2, 'digits': length(ltrim(part, '0')), 'text': ltrim(part, '0')} "
        "ELSE {'rank': 0, 'digits': 0, 'text': part} END), [{'rank': 1, 'digits': 0, 'text': ''}])"
    )


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

        Devices name versions, so there may be thousands: the ``MAX_ROLLOUT_VERSIONS`` most devices run
        now (then at their peak in the window; the newest always) are named, the others summed as
        ``other_versions``, so each day's shares still add up to one.

        Read from the tallies ``version_changes`` and ``device_versions``: a device is on the
        version of its newest prediction (by ``created_at``) from the day it made its first one
        on it, so a day without uploads keeps each device where it was, and an upgrade shows on
        the day it happened on the device. Revoked devices are left out.
        """
        model = self._model(model)
        days = self.check_days(days)
        axis = _days(self._now(), days)
        first, last = axis[0].isoformat(), axis[-1].isoformat()
        # Each change is +1 for the new version and -1 for the old one from its day on (changes
        # before the window count from its first day); the days sum them up.
        events = self._query(
            "SELECT greatest(c.day, ?::DATE) AS day, c.version, sum(c.delta)::BIGINT AS delta FROM ("
            "SELECT device, day, to_version AS version, 1 AS delta FROM version_changes WHERE model = ? AND day <= ?::DATE "
            "UNION ALL SELECT device, day, from_version, -1 FROM version_changes "
            "WHERE model = ? AND day <= ?::DATE AND from_version IS NOT NULL"
            ") AS c JOIN devices AS d ON d.name = c.device AND d.revoked_at IS NULL GROUP BY ALL",
            [first, model, last, model, last],
        )
        live = "FROM device_versions AS v JOIN devices AS d ON d.name = v.device AND d.revoked_at IS NULL WHERE v.model = ?"
        on_version = {row["version"]: row["devices"] for row in self._query(
            f"SELECT v.model_version AS version, count(*) AS devices {live} GROUP BY 1", [model])}
        versions = sorted({row["version"] for row in events} | set(on_version), key=version_key)
        newest = versions[-1] if versions else None
        behind = self._query(
            f"SELECT v.device, v.model_version AS version, v.since_at AS since, v.last_created_at AS last_prediction, "
            f"v.last_landed_at AS last_seen {live} AND v.model_version <> ? ORDER BY v.last_landed_at, v.device LIMIT ?",
            [model, newest, MAX_BEHIND],
        )
        behind_total = sum(n for version, n in on_version.items() if version != newest)
        index = {day: i for i, day in enumerate(axis)}
        counts = {version: [0] * len(axis) for version in versions}
        for row in events:
            if row["day"] in index:
                counts[row["version"]][index[row["day"]]] += row["delta"]
        for version in versions:  # from changes per day to devices per day
            running = 0
            for i, change in enumerate(counts[version]):
                running += change
                counts[version][i] = running
        totals = [sum(counts[v][i] for v in versions) for i in range(len(axis))]
        versions_total = len(versions)
        shown = set(sorted(versions, key=lambda v: (v != newest, -on_version.get(v, 0), -max(counts[v]), version_key(v)))
                    [:MAX_ROLLOUT_VERSIONS])
        others = [v for v in versions if v not in shown]
        other = None
        if others:
            other_counts = [sum(counts[v][i] for v in others) for i in range(len(axis))]
            other = {"versions": len(others), "devices_now": sum(on_version.get(v, 0) for v in others),
                     "devices_per_day": other_counts, "share_per_day": [n / t if t else 0.0 for n, t in zip(other_counts, totals)]}
            versions = [v for v in versions if v in shown]
        return {
            "model": model,
            "days": [day.isoformat() for day in axis],
            "versions": versions,
            "newest": newest,
            "devices": totals,
            "devices_per_day": counts,
            "share_per_day": {v: [n / t if t else 0.0 for n, t in zip(counts[v], totals)] for v in versions},
            "devices_on_version": {v: on_version.get(v, 0) for v in versions},
            "versions_total": versions_total,
            "other_versions": other,
            "upgraded": bool(on_version) and not behind_total,
            "behind": behind,
            "behind_total": behind_total,
        }

    def data(self, days: int = 30) -> dict[str, Any]:
        """Rows landed per model per day, and per model and version labels and weights (all tallied at landing)."""
        days = self.check_days(days)
        axis = _days(self._now(), days)
        landed = self._query(
            "SELECT model, day, sum(predictions + feedback)::BIGINT AS rows FROM landed_daily WHERE day >= ?::DATE "
            "GROUP BY model, day ORDER BY model, day", [axis[0].isoformat()]
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
        """Records the devices dropped before sealing (sampling, rate caps, a full spool), by reason per day.

        The largest ``MAX_DROP_REASONS_SHOWN`` reasons of the window are named, the others summed as
        ``OTHER_REASONS``: devices name the reasons, so there is no bound on how many there are.
        """
        days = self.check_days(days)
        axis = _days(self._now(), days)
        # Saturating at the landing's cap, as each count does: a database from before it may hold 2^62 per model.
        rows = self._query(
            f"WITH d AS (SELECT day, reason, least(sum(records::HUGEINT), {MAX_COUNT}) AS records FROM drops_daily "
            "WHERE day >= ?::DATE GROUP BY ALL), "
            "top AS (SELECT reason FROM d GROUP BY reason ORDER BY sum(records) DESC, reason LIMIT ?) "
            "SELECT day, CASE WHEN reason IN (SELECT reason FROM top) THEN reason ELSE ? END AS reason, "
            f"least(sum(records), {MAX_COUNT})::BIGINT AS records FROM d GROUP BY ALL",
            [axis[0].isoformat(), MAX_DROP_REASONS_SHOWN, OTHER_REASONS],
        )
        index = {day: i for i, day in enumerate(axis)}
        reasons: dict[str, list[int]] = {}
        for row in rows:
            if row["day"] in index:
                reasons.setdefault(row["reason"], [0] * len(axis))[index[row["day"]]] += row["records"]
        return {"days": [day.isoformat() for day in axis], "by_reason": dict(sorted(reasons.items()))}

    def batches(self, name: str) -> list[dict[str, Any]]:
        """A device's newest batches, as the ledger has them."""
        return self._query(
            "SELECT batch_id, model, rows, duplicates, predictions, feedback, bytes, agent_version, drops, "
            "sealed_at, sent_at, received_at, clock_offset_s FROM batches WHERE device = ? "
            "ORDER BY received_at DESC LIMIT ?",
            [name, MAX_DEVICE_BATCHES],
        )

    def version_changes(self, name: str) -> tuple[list[dict[str, Any]], int]:
        """A device's newest ``MAX_VERSION_CHANGES`` changes of model version, oldest first, and how many it made in all."""
        newest = self._query(
            "SELECT model, day, from_version, to_version FROM version_changes WHERE device = ? "
            "ORDER BY changed_at DESC, model DESC LIMIT ?",
            [name, MAX_VERSION_CHANGES],
        )
        total = self._query("SELECT count(*) AS n FROM version_changes WHERE device = ?", [name])[0]["n"]
        return newest[::-1], total
