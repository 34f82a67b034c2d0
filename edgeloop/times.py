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

import re
from datetime import UTC, datetime

__all__ = ["EARLIEST", "EARLIEST_TIME_S", "LATEST", "LATEST_TIME_S", "bounded", "from_iso", "past_leap_second", "utc_time"]

EARLIEST_TIME_S = -62135596800  # 0001-01-01T00:00:00Z
LATEST_TIME_S = 253402300799  # 9999-12-31T23:59:59Z
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
_RANGE = "years 1 to 9999 in UTC"
_LEAP_SECOND = re.compile(r"(\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d):60(?:[.,]\d+)?(.*)", re.ASCII | re.DOTALL)


def past_leap_second(text: str) -> str:
    """``text`` with RFC 3339's leap second (``23:59:60``, any fraction) as the last microsecond of its minute.

    Python and DuckDB hold no second 60; this keeps the time on its day and after every ``:59`` of its minute.
    """
    leap = _LEAP_SECOND.fullmatch(text.strip())
    return f"{leap[1]}:59.999999{leap[2]}" if leap else text


def from_iso(text: str) -> datetime:
    """``datetime.fromisoformat`` that also reads a leap second (``past_leap_second``); ValueError as it raises."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        leap = past_leap_second(text)
        if leap is text:
            raise
        return datetime.fromisoformat(leap)


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
        value = from_iso(text)
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not an ISO 8601 time (or date)") from None
    return bounded(value)
