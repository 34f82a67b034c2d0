"""Times from outside (ISO 8601 text, a status document's fields), bounded to what every reader of a table can hold.

A batch's times are checked column-wise in ``ingest/batch.py``; the times an admin, a labelling
tool or a device's status document gives (a deletion's ``before``, a report's ``since``, an
imported label's ``created_at``, a status's ``sent_at``) are checked here, one at a time,
against the same bounds: years 1 to 9999 in UTC. Past them Python's ``datetime`` overflows on
the first conversion, and DuckDB stores a time Arrow readers refuse. A database written before these
checks may still hold such times: ``ingest/query.py``'s ``readable`` finds them in a result, so a read
leaves them out instead of failing on them.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["EARLIEST", "EARLIEST_TIME_S", "LATEST", "LATEST_TIME_S", "bounded", "utc_time"]

EARLIEST_TIME_S = -62135596800  # 0001-01-01T00:00:00Z
LATEST_TIME_S = 253402300799  # 9999-12-31T23:59:59Z
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
_RANGE = "years 1 to 9999 in UTC"


def bounded(value: datetime) -> datetime:
    """``value`` in UTC (a naive one is taken as UTC); ValueError if it falls outside years 1 to 9999 in UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 east of UTC, or year 9999 west of it
        raise ValueError(f"{value.isoformat()} is outside {_RANGE}") from None


def utc_time(text: str) -> datetime:
    """An ISO 8601 date or time (``Z`` allowed; no zone is UTC) as an aware UTC time; ValueError saying why not."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not an ISO 8601 time (or date)") from None
    return bounded(value)
