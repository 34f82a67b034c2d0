"""The fleet's facts as text for a terminal: the ``fleet`` table and ``devices show``.

Numbers become short human units (``3m``, ``1.2 MB``); the JSON, CSV and Parquet formats
carry the raw columns of ``ingest/fleet.py`` instead.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from edgeloop.units import ago, duration, printable, size

__all__ = ["device_text", "fleet_table"]

FLEET_COLUMNS = ("device", "state", "last_seen", "agent", "last_sync", "backlog", "oldest", "dropped", "refused",
                 "disk_free", "clock_offset", "error")
MAX_ERROR_CHARS = 80


def fleet_table(overview: pa.Table) -> pa.Table:
    """The overview's rows as short text cells, one column per health fact."""
    rows = []
    for row in overview.to_pylist():
        rows.append({
            "device": row["device"],
            "state": row["state"],
            "last_seen": ago(row["silent_for_s"]),
            "agent": row["agent_version"] or "-",
            "last_sync": row["last_outcome"] or "-",
            "backlog": "-" if row["backlog_records"] is None else
            f"{row['backlog_records']} rec, {size(row['backlog_bytes'])}",
            "oldest": duration(row["oldest_record_age_s"]),
            "dropped": str(row["dropped"] or 0),
            "refused": str(row["refused"] or 0) + (f" ({row['last_refused_code']})" if row["last_refused_code"] else ""),
            "disk_free": size(row["free_disk_bytes"]) + (" FULL" if row["disk_full"] else ""),
            "clock_offset": "-" if row["clock_offset_s"] is None else f"{row['clock_offset_s']:+.1f}s",
            "error": _short(row["last_error"]),
        })
    return pa.Table.from_pylist(rows, schema=pa.schema([(name, pa.string()) for name in FLEET_COLUMNS]))


def device_text(detail: dict[str, Any]) -> str:
    """``devices show``: the device's state and latest health, its refusals, versions and recent statuses."""
    device, status = detail["device"], detail["status"]
    lines = [
        f"device        {device['device']}  ({device['state']})",
        f"last seen     {ago(device['silent_for_s'])}; sync window {duration(device['sync_window_s'])}; "
        f"{device['statuses'] or 0} statuses, {device['batches'] or 0} batches, {device['rows']} rows landed",
        f"registered    {device['created_at']}" + (f"; revoked {device['revoked_at']}" if device["revoked_at"] else ""),
    ]
    if device["last_outcome"]:
        lines.append(f"last sync     {device['last_outcome']} at {device['last_sync_at'] or '-'}"
                     + (f": {device['last_error']}" if device["last_error"] else ""))
        lines.append(f"              last success {device['last_success_at'] or 'never'}; "
                     f"{device['failures_in_a_row'] or 0} failed in a row")
    if status is not None:
        spool, journal, disk, clock = status["spool"], status["journal"], status["disk"], status["clock"]
        lines += [
            f"agent         {status['agent_version']}, up since {status['started_at']}",
            f"backlog       {spool['batches']} batches, {spool['records']} records, {size(spool['bytes'])}; "
            f"oldest record {duration(spool['oldest_record_age_s'])}; {spool['rejected']} rejected, "
            f"{spool['quarantined']} quarantined",
            f"journal       {journal['records']} records, {size(journal['bytes'])} in {journal['segments']} segments",
            f"disk          {size(disk['free_bytes'])} free" + (" (FULL)" if disk["full"] else ""),
            f"clock         offset {_offset(device['clock_offset_s'])} (server receipt minus device send); "
            f"NTP {'synchronized' if clock['synchronized'] else 'not synchronized' if clock['synchronized'] is False else 'unknown'}",
            f"next sync     {status['sync'].get('next_sync_at') or '-'}",
        ]
        for model in status["models"]:
            lines.append(f"model         {model['model']} schema {model['schema_fingerprint'][:12]} "
                         f"versions {', '.join(model['versions']) or '-'}")
        sampling = status["sampling"]
        rules = [f"default keep {sampling['default']['keep_rate']:g}"] + [
            f"{name} keep {rule['keep_rate']:g}" + (f" max {rule['max_per_hour']}/h" if rule.get("max_per_hour") else "")
            for name, rule in sampling["models"].items()
        ]
        lines.append(f"sampling      {'; '.join(rules)}")
        if sampling.get("policies"):
            lines.append("policies      " + ", ".join(f"{model} {version}" for model, version in sorted(sampling["policies"].items())))
    lines.append(f"dropped       {device['dropped'] or 0} records reported dropped"
                 + (f" (last report: {', '.join(f'{k} {v}' for k, v in status['drops'].items())})"
                    if status and status["drops"] else ""))
    lines.append(f"refused       {device['refused'] or 0} uploads")
    if detail.get("shared_token"):
        lines.append("shared token  two agents' runs alternate under this name (a state dir copied to another machine, "
                     "e.g. one SD-card image on several devices?): give each its own name and token")
    for refusal in detail["refusals"]:
        lines.append(f"              {refusal['count']} x {refusal['status']} {refusal['code']} (last {refusal['last_at']})")
    for version in detail["versions"]:
        lines.append(f"landed        {version['model']} {version['model_version']}: {version['predictions']} predictions, "
                     f"{version['feedback']} feedback, last {version['last_seen']}")
    if detail["recent_statuses"]:
        lines.append("recent statuses")
        for entry in detail["recent_statuses"]:
            lines.append(f"  {entry['received_at']}  {entry['outcome']:8} backlog {entry['backlog_records']} rec"
                         + (f"  {_short(entry['error'])}" if entry["error"] else ""))
    return "\n".join(printable(line) for line in lines)  # versions, errors and agent versions come from the device


def _short(text: str | None) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _offset(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:+.3f}s"
