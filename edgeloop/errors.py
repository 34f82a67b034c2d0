"""Every exception edgeloop raises on purpose, in one tree.

    EdgeloopError
    ├── SchemaError                 a schema file or batch schema is not valid
    ├── ConfigError                 a config file or setting is not valid
    ├── PolicyError                 a sampling policy is not valid (for its model's schema)
    ├── RecordError                 a record sent by an app is not valid (per record)
    ├── CollectorError              device-side failures
    │   ├── SpoolFullError          the spool budget or disk reserve refuses new records
    │   ├── JournalCorruptError     a journal segment has a torn or corrupt tail
    │   └── AgentUnavailableError   the SDK or CLI cannot reach the agent
    ├── SyncError                   an upload failed
    │   ├── RetryableUploadError    network error, 408 or 5xx: try again later
    │   ├── ThrottledError          429/503: pause the whole sync for retry_after_s
    │   └── RejectedBatchError      another 4xx: the batch is never retried
    └── IngestError                 server-side failures
        ├── AuthError               unknown or revoked device token
        │   └── Forbidden           a known token that may not do this (the viewer token on an admin route)
        ├── TooManyFailures         an address's wrong tokens used up its tries: retry later (429)
        ├── BatchRejected           an upload that cannot be landed (carries HTTP status)
        ├── QueryRefused            a SQL statement that is not read-only
        ├── QueryFailed             a read-only statement DuckDB could not run
        │   └── QueryTooExpensive   it ran past a bound (sql_timeout_s, memory_limit): ask for less (422)
        ├── ServerOverloaded        out of memory or another transient fault of ours (503)
        └── StoreError              the database could not land or read
            ├── StoreBusy           the landing queue is full: retry later (429)
            ├── DiskFull            the database's disk is (nearly) full: retry later (507)
            ├── DatabaseInUse       another process (the server) holds the database file
            └── StoreClosed         the store is shutting down or closed (503)

Foreign exceptions are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "AgentUnavailableError",
    "AuthError",
    "BatchRejected",
    "CollectorError",
    "ConfigError",
    "DatabaseInUse",
    "DiskFull",
    "EdgeloopError",
    "Forbidden",
    "IngestError",
    "JournalCorruptError",
    "PolicyError",
    "QueryFailed",
    "QueryRefused",
    "QueryTooExpensive",
    "RecordError",
    "RejectedBatchError",
    "RetryableUploadError",
    "SchemaError",
    "ServerOverloaded",
    "SpoolFullError",
    "StoreBusy",
    "StoreClosed",
    "StoreError",
    "SyncError",
    "ThrottledError",
    "TooManyFailures",
]


class EdgeloopError(Exception):
    """Root of every error edgeloop raises on purpose."""


class SchemaError(EdgeloopError):
    """A schema file or a batch's schema is not valid; the message names file and field (``field`` when known)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(EdgeloopError):
    """A config file or setting is not valid; the message names file and setting."""


class PolicyError(EdgeloopError):
    """A sampling policy is not valid, or not for its model's schema."""


class RecordError(EdgeloopError):
    """One record is not valid; ``field`` names the offending field (dotted path)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CollectorError(EdgeloopError):
    """A device-side failure."""


class SpoolFullError(CollectorError):
    """The spool's byte budget or free-disk reserve refuses new records."""


class JournalCorruptError(CollectorError):
    """A journal segment has a torn or corrupt tail."""


class AgentUnavailableError(CollectorError):
    """The agent's unix socket does not answer."""


class SyncError(EdgeloopError):
    """An upload of a sealed batch failed."""


class RetryableUploadError(SyncError):
    """A network error, 408 or 5xx: the same upload may succeed later."""


class ThrottledError(SyncError):
    """The server said 429 or 503; the whole sync pauses for ``retry_after_s`` (None: no Retry-After, back off)."""

    def __init__(self, message: str, *, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RejectedBatchError(SyncError):
    """Another 4xx: the server will never take this batch as it is."""

    def __init__(self, message: str, *, status: int, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class IngestError(EdgeloopError):
    """A server-side failure."""


class AuthError(IngestError):
    """The bearer token is unknown or revoked."""


class Forbidden(AuthError):
    """A known token that may not do this: the read-only viewer token on an admin route (403)."""


class TooManyFailures(IngestError):
    """A client address's wrong tokens used up its tries (``ingest/login_limit.py``): retry in ``retry_after_s`` (429)."""

    def __init__(self, wait_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(wait_s))
        super().__init__(f"too many wrong tokens from this address; retry in {self.retry_after_s} s")


class BatchRejected(IngestError):
    """An upload that cannot be landed; carries the HTTP status and error details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details


class QueryRefused(IngestError):
    """A SQL statement that writes, attaches or touches files."""


class StoreError(IngestError):
    """The database could not land or read."""


class QueryFailed(IngestError):
    """A read-only statement DuckDB could not run: bad syntax, unknown table, timeout."""


class QueryTooExpensive(QueryFailed):
    """A read-only statement stopped at a bound (``limit`` names the setting, ``value`` its value): retried as is it fails again."""

    def __init__(self, message: str, *, limit: str, value: Any = None) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value


class ServerOverloaded(IngestError):
    """Out of memory (or another transient fault of ours) while handling a request: retry later (503)."""


class StoreBusy(StoreError):
    """The landing queue is full; the upload may succeed after ``retry_after_s``."""


class DiskFull(StoreError):
    """The database's disk is below its free-space reserve, or a write hit ENOSPC; retry later (507)."""


class StoreClosed(StoreError):
    """The store is shutting down or closed; nothing more lands."""


class DatabaseInUse(StoreError):
    """Another process holds the DuckDB file (DuckDB allows one writer process): go through the server."""
