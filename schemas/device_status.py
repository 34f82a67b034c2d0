"""The status document a device sends at every sync: ``PUT /v1/status/{status_id}``.

The agent builds it (``collector/reporter.py``), the server validates it with this model
before storing anything (``ingest/health.py``). It comes from the wire, so every field has a
bound: string lengths, counts, the number of models, versions and drop reasons. Unknown keys
are refused (a typo would otherwise be stored as nothing). Times are RFC 3339 with a zone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from edgeloop.times import bounded

__all__ = [
    "MAX_COUNT",
    "MAX_DROP_REASONS",
    "MAX_STATUS_BYTES",
    "NAME",
    "DeviceStatus",
    "StatusDisk",
    "StatusClock",
    "StatusJournal",
    "StatusModel",
    "StatusSampling",
    "StatusSpool",
    "StatusSync",
    "is_status_id",
]

MAX_STATUS_BYTES = 64 * 1024  # a real document is about 2 KB
MAX_COUNT = 2**62
STATUS_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

MAX_DROP_REASONS = 64  # reasons one status document, or one batch's metadata, may count
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")  # a drop reason, a counter: no markup, no spaces
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")]
Text = Annotated[str, StringConstraints(max_length=1024)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seconds = Annotated[float, Field(ge=0, le=10 * 365 * 86400, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time needs its zone (RFC 3339, e.g. 2026-11-26T02:00:00Z)")
    return bounded(value)  # stored as given, a time past year 9999 in UTC breaks every reader of the history


Time = Annotated[datetime, AfterValidator(_aware)]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def is_status_id(text: str) -> bool:
    """A status id is a UUID in its canonical lower-case text form (the agent mints UUIDv7)."""
    return STATUS_ID.fullmatch(text) is not None  # not match: "$" also matches before a final newline


class StatusModel(_Part):
    """A model the agent accepts records for: its schema and the model versions the app logged."""

    model: Name
    schema_fingerprint: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8,64}$")]
    versions: Annotated[list[Name], Field(max_length=32)] = []


class StatusSpool(_Part):
    batches: Count
    records: Count
    bytes: Count
    oldest_record_age_s: Seconds | None = None
    rejected: Count = 0
    quarantined: Count = 0
    budget_bytes: Count | None = None


class StatusJournal(_Part):
    records: Count
    bytes: Count
    segments: Count


class StatusSync(_Part):
    """The sync this document reports on (the upload part is over when it is sent) and the schedule."""

    outcome: Literal["ok", "partial", "skipped", "failed"]
    error: Text | None = None
    started_at: Time
    duration_s: Seconds
    uploaded: Count = 0
    already_present: Count = 0
    rejected: Count = 0
    failed: Count = 0
    bytes: Count = 0
    rows: Count = 0
    window_s: Annotated[float, Field(gt=0, le=366 * 86400, allow_inf_nan=False)]  # how often this device syncs
    next_sync_at: Time | None = None
    last_success_at: Time | None = None
    failures_in_a_row: Count = 0
    since_last_report: Annotated[dict[Literal["ok", "partial", "skipped", "failed"], Count], Field(max_length=4)] = {}


class StatusDisk(_Part):
    free_bytes: Count
    full: bool = False


class StatusClock(_Part):
    """What the device knows about its clock; the server computes the offset itself from ``sent_at``."""

    synchronized: bool | None = None  # the kernel's NTP state (adjtimex); None where it cannot tell
    last_offset_s: Annotated[float, Field(ge=-MAX_COUNT, le=MAX_COUNT, allow_inf_nan=False)] | None = None


class StatusRule(_Part):
    keep_rate: Fraction
    always_keep_below_confidence: Fraction | None = None
    max_per_hour: Count | None = None


class StatusSampling(_Part):
    """The local rules, and the sampling policy version each model runs (``server:<n>``, ``file:…``, ``config:…``)."""

    default: StatusRule
    models: Annotated[dict[Name, StatusRule], Field(max_length=256)] = {}
    policies: Annotated[dict[Name, Annotated[str, StringConstraints(max_length=128)]], Field(max_length=256)] = {}


class DeviceStatus(_Part):
    """One status report: who is sending, what the agent holds, how its last sync went."""

    status_id: Annotated[str, StringConstraints(pattern=STATUS_ID.pattern)]
    sent_at: Time
    agent_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    started_at: Time
    # Minted at each agent start, kept nowhere: two that alternate under one token are two machines (a cloned state dir).
    run_id: Annotated[str, StringConstraints(pattern=STATUS_ID.pattern)] | None = None
    models: Annotated[list[StatusModel], Field(max_length=256)] = []
    spool: StatusSpool
    journal: StatusJournal
    drops: Annotated[dict[Name, Count], Field(max_length=MAX_DROP_REASONS)] = {}  # by reason, since the last stored report
    sync: StatusSync
    disk: StatusDisk
    clock: StatusClock = StatusClock()
    sampling: StatusSampling
