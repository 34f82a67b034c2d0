"""The Store: the one writer that owns the DuckDB database.

A single thread holds the connection's write path. Uploads are queued (bounded); the
thread drains up to ``group_commit_max_batches`` of them and lands them in one transaction,
each batch's rows together with its ledger row, so a crash leaves a batch landed or absent.
Results and errors travel back to the waiting caller through a future, like datasette's
``Database._execute_writes``. Reads run on per-thread cursors of the same database.

Tables (see ``ingest/__init__.py`` for the user-facing description)::

    <model>            predictions: envelope, input and output fields, landing columns
    <model>_feedback   feedback rows: envelope, feedback fields, landing columns
    <model>_training   view: each prediction with its latest value of each feedback field (by created_at)
    batches            the ledger, one row per landed batch
    devices            device names and token hashes
    models             the latest registered schema per model
    schemas            every registered schema (see ``ingest/catalog.py``), by fingerprint
    policies, device_tags  sampling policies pushed to devices (see ``ingest/policies.py``)
    device_status, device_health, device_refusals, landed_daily
                       device health and fleet aggregates (see ``ingest/health.py``)
    deletions          the audit of every deletion (see ``ingest/deletion.py``)
    erasures, tombstones
                       what keeps a deletion from being undone by later uploads (``deletion.Guard``)
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from edgeloop.errors import (
    BatchRejected,
    DiskFull,
    ServerOverloaded,
    StoreBusy,
    StoreClosed,
    StoreError,
)
from edgeloop.ingest import health, tallies
from edgeloop.ingest.batch import RESERVED_SUFFIXES, RESERVED_TABLES, UploadedBatch
from edgeloop.ingest.catalog import Catalog
from edgeloop.ingest.compaction import compact_file
from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.connection import connect, quote
from edgeloop.ingest.deletion import Guard
from edgeloop.schemas.model_schema import FieldSpec, ModelSchema
from edgeloop.times import from_iso

__all__ = ["Landing", "Store", "add_feedback_column", "load_catalog", "register_schema"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DUCKDB_TYPES = {
    "bool": "BOOLEAN",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "binary": "BLOB",
}
TSTZ = "TIMESTAMP WITH TIME ZONE"
PREDICTION_ENVELOPE = (
    ("record_id", "UUID"), ("model_version", "VARCHAR"), ("created_at", TSTZ), ("sample_weight", "DOUBLE"),
    ("sampled_by", "VARCHAR"), ("policy_version", "VARCHAR"),
)
FEEDBACK_ENVELOPE = PREDICTION_ENVELOPE + (("prediction_id", "UUID"), ("source", "VARCHAR"))
LANDING = (("device", "VARCHAR"), ("batch_id", "VARCHAR"), ("received_at", TSTZ), ("clock_offset_s", "DOUBLE"))
LANDING_NAMES = tuple(name for name, _ in LANDING)
DB_FILE_MODE = 0o640  # the most the database and its WAL may allow
DIR_MODE = 0o750

BOOTSTRAP = f"""
CREATE TABLE IF NOT EXISTS devices (
    name VARCHAR PRIMARY KEY,
    token_sha256 VARCHAR NOT NULL UNIQUE,
    created_at {TSTZ} NOT NULL,
    revoked_at {TSTZ}
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id VARCHAR PRIMARY KEY,
    device VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    predictions BIGINT NOT NULL,
    feedback BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    schema_fingerprint VARCHAR NOT NULL,
    agent_version VARCHAR,
    drops VARCHAR,
    sealed_at {TSTZ},
    sent_at {TSTZ},
    received_at {TSTZ} NOT NULL,
    landed_at {TSTZ} NOT NULL,
    clock_offset_s DOUBLE,
    duplicates BIGINT NOT NULL DEFAULT 0,
    erased BIGINT NOT NULL DEFAULT 0
);
-- rows of the batch left out because their record id had already landed (ledgers from before it count 0)
ALTER TABLE batches ADD COLUMN IF NOT EXISTS duplicates BIGINT DEFAULT 0;
-- rows of the batch left out because an executed deletion covers them (ingest/deletion.py)
ALTER TABLE batches ADD COLUMN IF NOT EXISTS erased BIGINT DEFAULT 0;
CREATE TABLE IF NOT EXISTS models (
    model VARCHAR PRIMARY KEY,
    schema_fingerprint VARCHAR NOT NULL,
    schema_json VARCHAR NOT NULL,
    updated_at {TSTZ} NOT NULL
);
CREATE TABLE IF NOT EXISTS schemas (
    fingerprint VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    schema_json VARCHAR NOT NULL,
    registered_at {TSTZ} NOT NULL
);
-- one row per executed deletion (ingest/deletion.py): who, when, what predicate, rows per table
CREATE TABLE IF NOT EXISTS deletions (
    deletion_id VARCHAR PRIMARY KEY,
    deleted_at {TSTZ} NOT NULL,
    deleted_by VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    predicate VARCHAR NOT NULL,
    rows BIGINT NOT NULL,
    tables VARCHAR NOT NULL
);
-- a person's erasure (--where-hashed) holds against later uploads: the pseudonym's sha256, not the pseudonym
CREATE TABLE IF NOT EXISTS erasures (
    deletion_id VARCHAR NOT NULL,
    model VARCHAR,
    field VARCHAR NOT NULL,
    pseudonym_sha256 VARCHAR NOT NULL,
    erased_at {TSTZ} NOT NULL
);
-- record ids of predictions deleted by --device or --where-hashed: later feedback on them is left out
CREATE TABLE IF NOT EXISTS tombstones (
    model VARCHAR NOT NULL,
    record_id UUID NOT NULL,
    deletion_id VARCHAR NOT NULL,
    deleted_at {TSTZ} NOT NULL
);
"""

RECEIPT_COLUMNS = (
    "batch_id", "device", "model", "sha256", "rows", "bytes", "schema_fingerprint",
    "received_at", "landed_at", "clock_offset_s", "duplicates", "erased",
)


def field_type(spec: FieldSpec, *, lake: bool = False) -> str:
    """The DuckDB column type of a stored field, as information_schema spells it.

    DuckLake has no fixed-size arrays: a lake stores a vector as a list (its dimension stays in the schema).
    """
    if spec.privacy.action == "hash":
        return "VARCHAR"
    if spec.type == "vector":
        return "FLOAT[]" if lake else f"FLOAT[{spec.dim}]"
    return DUCKDB_TYPES[spec.type]


def table_columns(schema: ModelSchema, *, lake: bool = False) -> dict[str, dict[str, str]]:
    """The columns each of a model's tables needs for this schema, in order."""
    predictions = dict(PREDICTION_ENVELOPE)
    feedback = dict(FEEDBACK_ENVELOPE)
    for spec in schema.stored_fields:
        (feedback if spec.section == "feedback" else predictions)[spec.name] = field_type(spec, lake=lake)
    predictions.update(LANDING)
    feedback.update(LANDING)
    return {schema.name: predictions, f"{schema.name}_feedback": feedback}


def _out_of_memory(exc: BaseException) -> bool:
    """Out of memory, also when DuckDB reports it as a failed commit ("Failed to allocate block ... (bad allocation)")."""
    if isinstance(exc, MemoryError | duckdb.OutOfMemoryException):
        return True
    text = str(exc)
    return isinstance(exc, duckdb.Error) and ("bad allocation" in text or "Failed to allocate" in text)


@dataclass(frozen=True, slots=True)
class Landing:
    """A validated batch plus what the server knows about its arrival."""

    batch: UploadedBatch
    device: str
    received_at: datetime
    sent_at: datetime | None = None

    @property
    def clock_offset_s(self) -> float | None:
        if self.sent_at is None:
            return None
        return (self.received_at - self.sent_at).total_seconds()


@dataclass(slots=True)
class _Job:
    landing: Landing
    future: Future


@dataclass(slots=True)
class _Call:
    fn: Callable[[duckdb.DuckDBPyConnection], Any]
    future: Future
    after_commit: Callable[[Any], None] | None = None


_STOP = object()


@dataclass(slots=True)
class _Compact:
    future: Future


class Store:
    """Owns the DuckDB database: one writer thread, group commits, read cursors per thread."""

    lake = False  # column types as a DuckLake stores them (see ``field_type``)

    def __init__(
        self,
        path: Path,
        settings: StoreSettings,
        *,
        on_landed: Callable[[list[tuple[Landing, dict[str, Any], float]]], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self._on_landed = on_landed
        self._con = self._open()
        self.catalog = load_catalog(self._con)
        if not self.lake:  # a lake's are made with it (``LakeStore._open``)
            tallies.ensure_tables(self._con)
        _widen_envelopes(self._con, {schema.name for schema in self.catalog})
        self._columns = self._load_columns()
        self._guard = Guard.load(self._con, settings)  # what executed deletions leave out of landings
        self._truths: dict[str, str | None] = {}  # model → tallies.labelled_by; emptied by every schema change
        self._reader_root = self._new_cursor(self._con)  # cursors for other threads branch off this one
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._queued_bytes = 0
        self._reading_bytes = 0  # bounds of batches being decoded right now
        self._failing: str | None = None  # why the last landing failed by our fault; None once one lands
        self._fatal: str | None = None  # DuckDB invalidated the database: nothing lands until a restart
        self._closed = False
        self._pending: Any = None  # an item the writer took from the queue while topping up a group; next in line
        self._topping_up = True  # off while a failed group is landed batch by batch
        self._followers: list[_Job] = []  # the landing group's followers (``land_group``), which ``_top_up`` adds to
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._generation = 0  # bumped when compaction reopens the file: older cursors are dropped
        self._swap_lock = threading.Lock()  # held while the file is swapped: no new cursor meanwhile
        self._thread = threading.Thread(target=self._run, name="edgeloop-store-writer", daemon=True)
        self._thread.start()

    def _open(self) -> duckdb.DuckDBPyConnection:
        """The writer's connection (the lake store attaches a lake instead)."""
        # The fleet's records: the server's user and group only, whatever the umask.
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        con = connect(self.path, read_only=False, threads=self.settings.threads or _server_threads(),
                      memory_limit_bytes=server_memory_limit_bytes(self.settings), spill_max_bytes=self._spill_max_bytes())
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            if path.exists():
                path.chmod(path.stat().st_mode & DB_FILE_MODE)
        return con

    def _new_cursor(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        return con.cursor()

    # -- caller side ----------------------------------------------------------

    def schema_for(self, fingerprint: str) -> ModelSchema | None:
        """The registered schema with this fingerprint, or None."""
        return self.catalog.get(fingerprint)

    @property
    def queued(self) -> int:
        """Landings waiting for or inside the writer."""
        return self._queued

    def submit(self, landing: Landing) -> Future:
        """Queue a batch for landing; the future gives its receipt and HTTP status.

        Raises StoreBusy when ``queue_depth`` landings or ``queue_max_bytes`` of them are
        already waiting (an empty queue takes any batch, so none is refused for good).
        """
        size = landing.batch.decoded_bytes  # what it takes once materialized, not its dictionaries
        self._check_disk()
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is shutting down")
            if self._fatal is not None:
                raise StoreError(f"the database cannot land anything until the server restarts: {self._fatal}")
            if not self._thread.is_alive():
                raise StoreError("the store's writer thread has stopped: restart the server")
            if self._queued >= self.settings.queue_depth:
                raise StoreBusy(f"the landing queue is full ({self.settings.queue_depth} batches)")
            if self._queued and self._queued_bytes + size > self.settings.queue_max_bytes:
                raise StoreBusy(f"the landing queue is full ({self._queued_bytes} bytes waiting)")
            self._queued += 1
            self._queued_bytes += size
        future: Future = Future()
        self._queue.put(_Job(landing, future))
        return future

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the queue's byte budget while a batch is decoded (its bound, before decoding).

        Decoding batches and queued ones share ``queue_max_bytes``, so concurrent uploads cannot
        together inflate past it; when nothing else is held, one batch is always let in.
        """
        with self._lock:
            held = self._queued_bytes + self._reading_bytes
            if held and held + nbytes > self.settings.queue_max_bytes:
                raise StoreBusy(f"the landing queue is full ({held} bytes waiting or being read)")
            self._reading_bytes += nbytes
        try:
            yield
        finally:
            with self._lock:
                self._reading_bytes -= nbytes

    def call(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> Future:
        """Run ``fn(connection)`` on the writer thread, in its own transaction."""
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is shutting down")
        future: Future = Future()
        self._queue.put(_Call(fn, future))
        return future

    def free_bytes(self) -> int:
        """Free bytes on the database's file system (for an unprivileged process)."""
        stats = os.statvfs(self.path.parent)
        return stats.f_bavail * stats.f_frsize

    def _check_disk(self) -> None:
        free = self.free_bytes()
        if free < self.settings.reserve_free_bytes:
            raise DiskFull(
                f"the database's disk has {free} bytes free, under the {self.settings.reserve_free_bytes}-byte reserve"
            )

    def problem(self) -> str | None:
        """Why the store cannot land batches now, or None: what /healthz reports."""
        if self._fatal is not None:
            return f"the database was invalidated by a fatal error (restart the server): {self._fatal}"
        if not self._thread.is_alive():
            return "the writer thread has stopped"
        try:
            self._check_disk()
        except DiskFull as exc:
            return str(exc)
        return self._failing

    def register(self, schema: ModelSchema) -> Future:
        """Register a model schema on the writer (see ``register_schema``); the catalog follows its commit."""

        def registered(result: dict[str, Any]) -> None:
            self._columns = self._load_columns()
            if result["status"] in ("registered", "declarations_updated"):
                self.catalog = self.catalog.with_schema(schema)

        with self._lock:
            if self._closed:
                raise StoreClosed("the store is shutting down")
        future: Future = Future()
        self._queue.put(_Call(lambda con: register_schema(con, schema, lake=self.lake), future, registered))
        return future

    def compact(self) -> Future:
        """Rewrite the database file on the writer (``ingest/compaction.py``); the future gives (bytes before, after).

        Uploads wait in the queue meanwhile; queries running at that moment are interrupted.
        """
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is shutting down")
        future: Future = Future()
        self._queue.put(_Compact(future))
        return future

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A read cursor for the calling thread (DuckDB cursors are not shared across threads)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "generation", None) != self._generation:
            with self._swap_lock, self._lock:
                if self._closed:
                    raise StoreClosed("the store is closed")
                cur = self._new_cursor(self._reader_root)
                self._cursors.append(cur)
            self._local.cursor = cur
            self._local.generation = self._generation
        return cur

    def _spill_max_bytes(self) -> int:
        """``store.spill_max_bytes``, or half the database disk's free space less the upload reserve."""
        if self.settings.spill_max_bytes:
            return self.settings.spill_max_bytes
        stats = os.statvfs(self.path.parent)
        free = stats.f_bavail * stats.f_frsize - self.settings.reserve_free_bytes
        return max(free // 2, 64 * 1024 * 1024)

    def interrupt_readers(self) -> None:
        """Stop every query running on a read cursor (shutdown does not wait for an export)."""
        with self._lock:
            cursors = list(self._cursors)
        for cur in cursors:
            try:
                cur.interrupt()
            except duckdb.Error:
                pass

    def receipt(self, batch_id: str) -> dict[str, Any] | None:
        """The ledger's receipt for a landed batch, or None."""
        return _receipt(self.cursor(), batch_id)

    def close(self, timeout_s: float = 30.0) -> None:
        """Land what is queued, stop the writer, checkpoint and close the database."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("store writer did not stop in time; closing anyway", extra={"timeout_s": timeout_s})
        for cur in [*self._cursors, self._reader_root]:
            try:
                cur.close()
            except duckdb.Error:
                pass
        self._checkpoint()
        self._con.close()

    def _checkpoint(self) -> None:
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.warning("checkpoint on close failed", extra={"error": str(exc)})

    # -- writer thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._pending if self._pending is not None else self._queue.get()
            self._pending = None
            if item is _STOP:
                return
            if isinstance(item, _Call):
                try:
                    self._run_call(item)
                except BaseException as exc:  # the writer never dies: the caller gets the error
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if isinstance(item, _Compact):
                self._run_compact(item)
                continue
            group = [item]
            deadline = time.monotonic() + self.settings.commit_delay_s
            while len(group) < self.settings.commit_max_batches:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _Job):
                    self._pending = nxt
                    break
                group.append(nxt)
            try:
                self.land_group(group)
            except BaseException as exc:  # the writer never dies: fail the group instead
                self._group_failed(group, exc)

    def _group_failed(self, group: list[_Job], exc: BaseException) -> None:
        """Answer every unanswered job of a group that failed outside DuckDB's own errors; out of memory is a 503."""
        if _out_of_memory(exc):
            error: Exception = ServerOverloaded(f"out of memory landing {len(group)} batches: {str(exc)[:300]}")
        else:
            error = StoreError(f"landing failed: {type(exc).__name__}: {str(exc)[:300]}")
        self._failing = f"the last landing failed: {error}"
        try:
            log.error("landing a group failed", exc_info=exc)
        except BaseException:
            pass  # out of memory even for the log line: the answers below matter more
        for job in group:
            if not job.future.done():
                self._settle(job, error=error)

    def _settle(self, job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        """Count the job out of the queue, then answer it: a caller that has its answer sees the queue without it."""
        with self._lock:
            self._queued -= 1
            self._queued_bytes -= job.landing.batch.decoded_bytes
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _run_call(self, call: _Call) -> None:
        con = self._con
        self._truths = {}  # a call may register a schema or add a feedback column
        try:
            con.execute("BEGIN TRANSACTION")
            result = call.fn(con)
            con.execute("COMMIT")
        except BaseException as exc:
            _rollback(con)
            self._columns = self._load_columns()  # the call may have changed tables before failing
            call.future.set_exception(exc)
            return
        try:
            self._guard = self._guard.current(con)  # a call may have run a deletion
        except duckdb.Error as exc:  # the call did commit; the count differs from the old guard's, so the next call reloads
            log.error("reading what deletions leave out failed; the next call reads it again", extra={"error": str(exc)})
        if call.after_commit is not None:
            call.after_commit(result)
        call.future.set_result(result)

    def _run_compact(self, item: _Compact) -> None:
        with self._swap_lock:
            self.interrupt_readers()
            with self._lock:
                cursors, self._cursors = [*self._cursors, self._reader_root], []
                self._generation += 1
            for cur in cursors:
                try:
                    cur.close()
                except duckdb.Error:
                    pass
            error: BaseException | None = None
            result = None
            try:
                self._con.execute("CHECKPOINT")
                self._con.close()
                result = compact_file(self.path)
            except BaseException as exc:  # the old file stays; reopen it below either way
                error = exc
            try:
                self._con = connect(self.path, read_only=False, threads=self.settings.threads or _server_threads(),
                                    memory_limit_bytes=server_memory_limit_bytes(self.settings),
                                    spill_max_bytes=self._spill_max_bytes())
                self._reader_root = self._con.cursor()
            except BaseException as exc:
                self._fatal = f"the database could not be reopened after compaction: {exc}"
                log.critical("reopening the database after compaction failed", extra={"error": str(exc)})
                error = error or exc
        if error is not None:
            item.future.set_exception(error if isinstance(error, StoreError) else StoreError(f"compaction failed: {error}"))
        else:
            item.future.set_result(result)

    def land_group(self, group: list[_Job]) -> None:
        """Land a group of batches in one transaction; replays and conflicts are answered first."""
        con = self._con
        firsts: dict[str, _Job] = {}  # batch id → the job that lands it
        followers: list[_Job] = []  # same id and content as a job earlier in this group
        try:
            self._sort_out(con, group, firsts, followers)
        except duckdb.Error as exc:
            error = self._landing_failed(group[0].landing.batch.batch_id, exc)
            for job in group:
                if not job.future.done():
                    self._settle(job, error=error)
            return
        if not firsts:
            return
        jobs = list(firsts.values())
        started = time.perf_counter()
        try:
            self._followers = followers
            receipts = self._insert(con, jobs)  # jobs and followers grow by the batches it took up
        except duckdb.Error as exc:
            if len(jobs) == 1 or isinstance(exc, duckdb.FatalException | duckdb.IOException) or _out_of_memory(exc):
                error = self._landing_failed(jobs[0].landing.batch.batch_id, exc)
                for job in [*jobs, *followers]:
                    self._settle(job, error=error)
                return
            log.warning("group commit failed; landing its batches one by one", extra={"error": str(exc), "batches": len(jobs)})
            self._topping_up = False
            try:
                for job in [*jobs, *followers]:
                    self.land_group([job])
            finally:
                self._topping_up = True
            return
        except BaseException:
            listed = {id(job) for job in group}
            group.extend(job for job in [*jobs, *followers] if id(job) not in listed)  # _group_failed answers every one
            raise
        elapsed = time.perf_counter() - started
        self._failing = None
        if self._on_landed:  # before the answers, so a caller that has its 201 sees it counted
            try:
                self._on_landed([(job.landing, receipt, elapsed) for job, receipt in zip(jobs, receipts)])
            except Exception:
                log.exception("the on_landed hook failed; the batches did land")
        by_id = {job.landing.batch.batch_id: receipt for job, receipt in zip(jobs, receipts)}
        for job, receipt in zip(jobs, receipts):
            self._settle(job, (201, receipt))
        for job in followers:
            self._settle(job, (200, by_id[job.landing.batch.batch_id]))

    def _sort_out(self, con: duckdb.DuckDBPyConnection, group: list[_Job], firsts: dict[str, _Job], followers: list[_Job]) -> list[_Job]:
        """Answer the replays (200) and conflicts (409) among ``group``; the rest join ``firsts`` or ``followers``.

        Returns the jobs that joined ``firsts``: the batches to land.
        """
        landed = _receipts(con, [job.landing.batch.batch_id for job in group])
        new: list[_Job] = []
        for job in group:
            batch = job.landing.batch
            earlier = landed.get(batch.batch_id)
            sha256 = earlier["sha256"] if earlier else firsts[batch.batch_id].landing.batch.sha256 if batch.batch_id in firsts else None
            if sha256 is not None and sha256 != batch.sha256:
                self._settle(job, error=BatchRejected(
                    409, "conflict", f"batch {batch.batch_id} already landed with other content", {"batch_id": batch.batch_id}
                ))
            elif earlier is not None:
                self._settle(job, (200, earlier))
            elif sha256 is not None:
                followers.append(job)
            else:
                firsts[batch.batch_id] = job  # its tables exist: registering its schema made them
                new.append(job)
        return new

    def _top_up(self, con: duckdb.DuckDBPyConnection, jobs: list[_Job]) -> list[_Job]:
        """Uploads queued while the group's rows were inserted, taken into its open transaction (up to the group's cap).

        Rather than commit and start a group of the few that arrived meanwhile: the rows go in while
        the queue fills, commits are fewer and larger, and a group of a row group (122,880 rows) or more
        is compressed once at its commit instead of logged to the WAL and compressed at a checkpoint.
        A lake's groups do not (``land_group`` claimed their batch ids and devices before the transaction).
        """
        followers = self._followers
        room = self.settings.commit_max_batches - len(jobs) - len(followers)
        if self.lake or not self._topping_up or room <= 0:
            return []
        taken: list[_Job] = []
        while len(taken) < room and self._pending is None:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                taken.append(item)
            else:
                self._pending = item  # a call or the stop runs after this group, as it would have
        if not taken:
            return []
        firsts = {job.landing.batch.batch_id: job for job in jobs}
        try:
            new = self._sort_out(con, taken, firsts, followers)
        except BaseException:
            # Listed with the group, so the failure path that answers its batches answers these too.
            following = {id(job) for job in followers}
            jobs.extend(job for job in taken if not job.future.done() and id(job) not in following)
            raise
        jobs.extend(new)
        return new

    def _landing_failed(self, batch_id: str, exc: duckdb.Error) -> StoreError | ServerOverloaded:
        """Classify a DuckDB failure to land validated rows: always ours, so always a 5xx; remember it for /healthz."""
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if isinstance(exc, duckdb.FatalException) or "invalidated" in text:
            self._fatal = text
            log.critical("the database is invalidated: nothing lands until a restart", extra={"error": text})
        self._failing = f"the last landing failed: {text}"
        if _out_of_memory(exc):
            return ServerOverloaded(f"out of memory landing batch {batch_id}: {text}")
        if isinstance(exc, duckdb.IOException) and ("No space" in text or "disk" in text.lower()):
            return DiskFull(f"landing batch {batch_id} failed: the disk is full: {text}")
        return StoreError(f"landing batch {batch_id} failed: {text}")

    def _insert(self, con: duckdb.DuckDBPyConnection, jobs: list[_Job]) -> list[dict[str, Any]]:
        """One transaction: each model's new rows in one INSERT per table, then every ledger row in one INSERT.

        Uploads queued meanwhile join the transaction (``_top_up``), and ``jobs`` grows by them.
        A record id lands at most once per table: rows whose id the table already holds, or that
        repeat an id earlier in the group, are left out and counted in their batch's ledger row.
        """
        landed_at = datetime.now(UTC)
        duplicates: dict[str, int] = {}
        erased: dict[str, int] = {}  # batch id → rows an executed deletion covers (``Guard``)
        tallied: dict[str, tuple[list[pa.Table], list[pa.Table]]] = {}  # model → new predictions, new feedback
        landed: list[tuple[str, str, pa.Table]] = []  # (model, kind, new rows), for the fleet aggregates
        con.execute("BEGIN TRANSACTION")
        try:
            step = list(jobs)
            while step:
                self._insert_rows(con, step, duplicates, erased, tallied, landed)
                step = self._top_up(con, jobs)
            self._tally(con, jobs, tallied, landed_at)
            ledger = _ledger(jobs, landed_at, duplicates, erased)
            con.register("__edgeloop_ledger", ledger)
            try:
                con.execute("INSERT INTO batches BY NAME SELECT * FROM __edgeloop_ledger")
            finally:
                con.unregister("__edgeloop_ledger")
            health.note_landed(con, landed, ledger, lake=self.lake)
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        return [_receipt_row({name: ledger.column(name)[index].as_py() for name in RECEIPT_COLUMNS}) for index in range(len(jobs))]

    def _insert_rows(self, con: duckdb.DuckDBPyConnection, jobs: list[_Job], duplicates: dict[str, int], erased: dict[str, int],
                     tallied: dict[str, tuple[list[pa.Table], list[pa.Table]]], landed: list[tuple[str, str, pa.Table]]) -> None:
        """Insert the new rows of ``jobs`` into the open transaction (rows of earlier steps count as landed)."""
        by_shape: dict[tuple[str, str], list[pa.Table]] = {}
        shape_batches: dict[tuple[str, str], list[UploadedBatch]] = {}
        kinds: dict[tuple[str, str], list[int]] = {}
        for job in jobs:
            batch = job.landing.batch
            shape = (batch.model, batch.schema.fingerprint)
            by_shape.setdefault(shape, []).append(_with_landing(job.landing))
            shape_batches.setdefault(shape, []).append(batch)
            totals = kinds.setdefault(shape, [0, 0])
            totals[0] += batch.predictions
            totals[1] += batch.feedback
        for shape, tables in by_shape.items():
            model = shape[0]
            combined = pa.concat_tables(tables)
            span = _distinct_span(shape_batches[shape])
            for table, kind, count in ((model, "prediction", kinds[shape][0]), (f"{model}_feedback", "feedback", kinds[shape][1])):
                if not count:
                    continue  # skip a scan that would select nothing
                rows = combined if count == combined.num_rows else combined.filter(pc.equal(combined.column("kind").cast(pa.string()), kind))
                rows = self._guard.left_out(con, model, kind, rows, erased)
                if not rows.num_rows:
                    continue
                rows = _new_rows(con, table, rows, duplicates, span)
                if not rows.num_rows:
                    continue
                landed.append((model, kind, rows))
                present = ", ".join(quote(c) for c in self._columns[table] if c in rows.column_names)
                con.register("__edgeloop_rows", rows)
                try:
                    con.execute(f"INSERT INTO {quote(table)} BY NAME SELECT {present} FROM __edgeloop_rows")
                finally:
                    con.unregister("__edgeloop_rows")
                tallied.setdefault(model, ([], []))[kind == "feedback"].append(rows)

    def _truth(self, con: duckdb.DuckDBPyConnection, model: str) -> str | None:
        """``tallies.labelled_by``, asked once per model between schema changes (they all run as calls on this thread)."""
        if model not in self._truths:
            self._truths[model] = tallies.labelled_by(con, model)
        return self._truths[model]

    def _tally(self, con: duckdb.DuckDBPyConnection, jobs: list[_Job], tallied: dict[str, tuple[list[pa.Table], list[pa.Table]]],
               landed_at: datetime) -> None:
        for model, (predictions, feedback) in tallied.items():
            tallies.note_landed(con, model, predictions, feedback, [job.landing.batch.batch_id for job in jobs],
                                truth=self._truth(con, model), lake=self.lake)
            tallies.note_versions(con, model, predictions, landed_at, lake=self.lake)
        tallies.note_drops(con, [
            (job.landing.received_at.astimezone(UTC).date(), job.landing.batch.model, job.landing.batch.drops) for job in jobs
        ], lake=self.lake)

    def _load_columns(self) -> dict[str, dict[str, str]]:
        return _load_columns(self._con)


def _load_columns(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).to_arrow_table().to_pylist()
    columns: dict[str, dict[str, str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    return columns


def _widen_envelopes(con: duckdb.DuckDBPyConnection, models: set[str]) -> None:
    """Envelope columns added after a model's tables were made (sampled_by, policy_version): added, null in old rows.

    A training view from before labels were picked per field (it took the latest feedback whole, so a
    comment hid an earlier label) is made again.
    """
    have_all = _load_columns(con)
    views = dict(con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall())
    for model in sorted(models):
        changes = [
            f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {type_}"
            for table in (model, f"{model}_feedback") if table in have_all
            for name, type_ in PREDICTION_ENVELOPE if name not in have_all[table]
        ]
        for statement in changes:
            con.execute(statement)
        old_view = "row_number()" in views.get(f"{model}_training", "row_number()").lower()
        if f"{model}_feedback" in have_all and (changes or old_view):
            con.execute(_training_view(model, _load_columns(con), tallies.declared_truth(con, model)))


def load_catalog(con: duckdb.DuckDBPyConnection, *, adopt: bool = True) -> Catalog:
    """Every registered schema. A database from before registration adopts the schemas its models landed with."""
    rows = con.execute("SELECT schema_json FROM schemas").fetchall()
    if not rows:
        rows = con.execute("SELECT schema_json FROM models").fetchall()
        if rows and adopt:
            con.execute(
                "INSERT INTO schemas SELECT schema_fingerprint, model, "
                "coalesce(try_cast(json_extract(schema_json, '$.version') AS INTEGER), 1), schema_json, now() FROM models"
            )
            log.info("adopted the schemas of models landed before registration", extra={"models": len(rows)})
    return Catalog(ModelSchema.from_canonical_json(text) for (text,) in rows)


def register_schema(con: duckdb.DuckDBPyConnection, schema: ModelSchema, *, lake: bool = False) -> dict[str, Any]:
    """Register ``schema`` inside the caller's transaction: create or widen its tables, record it.

    A schema whose columns clash with the tables (a name reserved by ingest, a column with
    another type) is refused with BatchRejected 409 and nothing changes.
    """
    receipt = {"model": schema.name, "fingerprint": schema.fingerprint, "version": schema.version}
    known = con.execute("SELECT schema_json FROM schemas WHERE fingerprint = ?", [schema.fingerprint]).fetchone()
    if known and known[0] != schema.canonical_json():
        # Same stored columns, other comparison declarations (they are not in the fingerprint): take the new ones.
        con.execute("UPDATE schemas SET schema_json = ? WHERE fingerprint = ?", [schema.canonical_json(), schema.fingerprint])
        con.execute("UPDATE models SET schema_json = ?, updated_at = now() WHERE schema_fingerprint = ?",
                    [schema.canonical_json(), schema.fingerprint])
        # The truth field may be another one now, and the view's label provenance follows it.
        con.execute(_training_view(schema.name, _load_columns(con), tallies.declared_truth(con, schema.name)))
        return {**receipt, "status": "declarations_updated", "changes": []}
    if known:
        return {**receipt, "status": "already_registered", "changes": []}
    if schema.name in RESERVED_TABLES or schema.name.endswith(RESERVED_SUFFIXES):
        raise BatchRejected(409, "reserved_model_name", f"model name {schema.name!r} clashes with ingest's own tables")
    have_all = _load_columns(con)
    conflicts: list[dict[str, str]] = []
    changes: list[str] = []
    for table, columns in table_columns(schema, lake=lake).items():
        have = have_all.get(table)
        if have is None:
            body = ", ".join(f"{quote(name)} {type_}" for name, type_ in columns.items())
            changes.append(f"CREATE TABLE {quote(table)} ({body})")
            continue
        for name, type_ in columns.items():
            if name not in have:
                changes.append(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(name)} {type_}")
            elif have[name] != type_:
                conflicts.append({"table": table, "column": name, "stored": have[name], "schema": type_})
    if conflicts:
        names = ", ".join(c["column"] for c in conflicts)
        raise BatchRejected(
            409, "incompatible_schema",
            f"model {schema.name!r} schema {schema.fingerprint} (version {schema.version}) is not compatible: "
            f"the tables already store {names} with another type",
            conflicts,
        )
    for statement in changes:
        con.execute(statement)
    con.execute(
        "INSERT INTO schemas VALUES (?, ?, ?, ?, now())",
        [schema.fingerprint, schema.name, schema.version, schema.canonical_json()],
    )
    # An UPDATE or an INSERT, not ON CONFLICT: a lake's tables have no keys to conflict on.
    current = con.execute(
        "SELECT coalesce(try_cast(json_extract(schema_json, '$.version') AS INTEGER), 0) FROM models WHERE model = ?",
        [schema.name],
    ).fetchone()
    if current is None:
        con.execute("INSERT INTO models VALUES (?, ?, ?, now())", [schema.name, schema.fingerprint, schema.canonical_json()])
    elif current[0] <= schema.version:
        con.execute(
            "UPDATE models SET schema_fingerprint = ?, schema_json = ?, updated_at = now() WHERE model = ?",
            [schema.fingerprint, schema.canonical_json(), schema.name],
        )
    if changes or current is None or current[0] <= schema.version:
        con.execute(_training_view(schema.name, _load_columns(con), tallies.declared_truth(con, schema.name)))
    log.info("schema registered", extra={**receipt, "changes": changes})
    return {**receipt, "status": "registered", "changes": changes}


def add_feedback_column(con: duckdb.DuckDBPyConnection, model: str, name: str, type_: str) -> bool:
    """Give ``<model>_feedback`` a column only the server writes (``labeled_by``), and the training view with it."""
    if name in _load_columns(con).get(f"{model}_feedback", {}):
        return False
    con.execute(f"ALTER TABLE {quote(model + '_feedback')} ADD COLUMN {quote(name)} {type_}")
    con.execute(_training_view(model, _load_columns(con), tallies.declared_truth(con, model)))
    return True


def server_memory_limit_bytes(settings: StoreSettings) -> int:
    """``store.memory_limit_bytes``, or half the memory this process may have: the machine's, or its cgroup's if lower."""
    if settings.memory_limit_bytes:
        return settings.memory_limit_bytes
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        text = "max"
    if text.isdigit():
        total = min(total, int(text))
    return max(total // 2, 64 * 1024 * 1024)


def _server_threads() -> int:
    """DuckDB threads in the server: one per core but one, left to the event loop and the upload checks."""
    return max(1, (os.cpu_count() or 2) - 1)


def _with_landing(landing: Landing) -> pa.Table:
    """The batch's rows plus the landing columns, as constant Arrow arrays (no per-row Python)."""
    table = landing.batch.table
    rows = table.num_rows
    offset = landing.clock_offset_s
    return (
        table.append_column("device", pa.repeat(pa.scalar(landing.device, pa.string()), rows))
        .append_column("batch_id", pa.repeat(pa.scalar(landing.batch.batch_id, pa.string()), rows))
        .append_column("received_at", pa.repeat(pa.scalar(landing.received_at, pa.timestamp("us", tz="UTC")), rows))
        .append_column("clock_offset_s", pa.repeat(pa.scalar(offset, pa.float64()), rows))
    )


def _distinct_span(batches: list[UploadedBatch]) -> tuple[bytes, bytes] | None:
    """The span of the batches' record ids if no id repeats among them (each batch's distinct, their spans apart)."""
    spans = sorted(batch.id_span for batch in batches if batch.id_span is not None)
    if len(spans) < len(batches):
        return None
    if any(earlier[1] >= later[0] for earlier, later in zip(spans, spans[1:])):
        return None
    return spans[0][0], max(high for _, high in spans)


def _new_rows(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, duplicates: dict[str, int],
              span: tuple[bytes, bytes] | None = None) -> pa.Table:
    """The rows whose record id ``table`` does not hold yet, each id once (its first row); counts the rest per batch.

    ``span`` (``_distinct_span`` of the rows' batches) says no id repeats among the rows: then, if the table
    holds no id inside it, every row is new. The writer is the only one inserting, so this check and the
    INSERT after it see the same table.
    """
    if span is not None and not _holds_between(con, table, *span):
        return rows
    ids = pa.chunked_array([chunk.storage for chunk in rows.column("record_id").chunks], pa.binary(16))
    keys = pa.table({"record_id": rows.column("record_id"), "__row": pa.array(range(rows.num_rows), pa.int64())})
    tallies.copy_to_temp(con, "__edgeloop_keys", keys)
    with tallies.dropped_after(con, "__edgeloop_keys"):
        # An inner join, not SEMI: only it pushes the batch's min/max record id into the table
        # scan, and UUIDv7 ids are time-ordered, so the scan skips all but the recent row groups.
        landed = con.execute(
            f"SELECT DISTINCT k.__row FROM temp.__edgeloop_keys AS k JOIN {quote(table)} AS t ON t.record_id = k.record_id"
        ).to_arrow_table().column("__row")
    repeated = span is None and pc.count_distinct(ids).as_py() < rows.num_rows
    if not landed.length() and not repeated:
        return rows
    keep = pc.invert(pc.is_in(keys.column("__row"), value_set=landed.combine_chunks()))
    if repeated:
        firsts = pa.table({"record_id": ids, "__row": keys.column("__row")}).group_by("record_id", use_threads=False).aggregate([("__row", "min")])
        keep = pc.and_(keep, pc.is_in(keys.column("__row"), value_set=firsts.column("__row_min")))
    dropped = rows.column("batch_id").filter(pc.invert(keep))
    for entry in pc.value_counts(dropped).to_pylist():
        duplicates[entry["values"]] = duplicates.get(entry["values"], 0) + entry["counts"]
    return rows.filter(keep)


def _holds_between(con: duckdb.DuckDBPyConnection, table: str, low: bytes, high: bytes) -> bool:
    """Whether ``table`` holds a record id in [low, high]: UUIDv7 ids are time-ordered, so the row groups'
    min/max statistics answer it for a batch of fresh ids without reading one (the join needs a copy of the ids)."""
    found = con.execute(
        f"SELECT 1 FROM {quote(table)} WHERE record_id BETWEEN ?::UUID AND ?::UUID LIMIT 1",
        [str(uuid.UUID(bytes=low)), str(uuid.UUID(bytes=high))],
    ).fetchone()
    return found is not None


LEDGER_SCHEMA = pa.schema([
    ("batch_id", pa.string()), ("device", pa.string()), ("model", pa.string()), ("sha256", pa.string()),
    ("rows", pa.int64()), ("predictions", pa.int64()), ("feedback", pa.int64()), ("bytes", pa.int64()),
    ("schema_fingerprint", pa.string()), ("agent_version", pa.string()), ("drops", pa.string()),
    ("sealed_at", pa.timestamp("us", tz="UTC")), ("sent_at", pa.timestamp("us", tz="UTC")),
    ("received_at", pa.timestamp("us", tz="UTC")), ("landed_at", pa.timestamp("us", tz="UTC")),
    ("clock_offset_s", pa.float64()), ("duplicates", pa.int64()), ("erased", pa.int64()),
])


def _ledger(jobs: list[_Job], landed_at: datetime, duplicates: dict[str, int], erased: dict[str, int]) -> pa.Table:
    rows = []
    for job in jobs:
        landing, batch = job.landing, job.landing.batch
        rows.append({
            "batch_id": batch.batch_id, "device": landing.device, "model": batch.model, "sha256": batch.sha256,
            "rows": batch.rows, "predictions": batch.predictions, "feedback": batch.feedback, "bytes": batch.bytes,
            "schema_fingerprint": batch.schema.fingerprint, "agent_version": batch.agent_version,
            "drops": orjson.dumps(batch.drops).decode(), "sealed_at": _timestamp_or_none(batch.sealed_at),
            "sent_at": landing.sent_at, "received_at": landing.received_at, "landed_at": landed_at,
            "clock_offset_s": landing.clock_offset_s, "duplicates": duplicates.get(batch.batch_id, 0),
            "erased": erased.get(batch.batch_id, 0),
        })
    return pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA)


def _training_view(model: str, columns: dict[str, dict[str, str]], truth: str | None) -> str:
    """Each prediction with its feedback: every feedback field is its latest non-null value, so a later
    feedback that leaves a field out (a comment without a label) never hides an earlier one; feedback_id,
    feedback_created_at, feedback_source and labeled_by name the latest feedback carrying ``truth``
    (the latest feedback of any kind when none carries it)."""
    envelope = {name for name, _ in FEEDBACK_ENVELOPE} | set(LANDING_NAMES)
    feedback_columns = columns[f"{model}_feedback"]
    labels = [name for name in feedback_columns if name not in envelope]
    if truth not in feedback_columns:
        truth = None
    # Ties on created_at go to the later received_at, then the larger record id, as a device's resend would;
    # a created_at after its arrival counts as the arrival, so a clock years ahead cannot outrank every later label.
    latest = "(least(created_at, received_at), received_at, record_id)"
    label_first = f"({quote(truth)} IS NOT NULL, least(created_at, received_at), received_at, record_id)" if truth else latest
    provenance = [name for name in labels if name == "labeled_by"]  # who gave the label goes with the label
    fields = [name for name in labels if name not in provenance]
    # One struct for the label's row: one aggregate instead of one per provenance column.
    label_row = ", ".join(f"{name} := {name}" for name in ("record_id", "created_at", "source", *provenance))
    picked = "".join(
        f", arg_max({quote(name)}, {latest}) FILTER (WHERE {quote(name)} IS NOT NULL) AS {quote(name)}" for name in fields
    )
    chosen = "".join(f", f.label.{name} AS {name}" if name in provenance else f", f.{quote(name)}"
                     for name in labels)
    return (
        f"CREATE OR REPLACE VIEW {quote(model + '_training')} AS "
        f"SELECT p.*, f.label.record_id AS feedback_id, f.label.created_at AS feedback_created_at, "
        f"f.label.source AS feedback_source{chosen} "
        f"FROM {quote(model)} AS p LEFT JOIN ("
        f"SELECT prediction_id, arg_max_null(struct_pack({label_row}), {label_first}) AS label{picked} "
        f"FROM {quote(model + '_feedback')} WHERE prediction_id IS NOT NULL GROUP BY prediction_id"
        f") AS f ON f.prediction_id = p.record_id"
    )


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # no transaction was open


def _timestamp_or_none(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = from_iso(text)
        # Year 1 east of UTC or 9999 west of it: a time no reader of the ledger could hold.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _receipt_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row made JSON-friendly: timestamps as RFC 3339 UTC, whole decimals (e.g. sum() of BIGINT) as int."""
    receipt = dict(row)
    for key, value in receipt.items():
        if isinstance(value, datetime):
            receipt[key] = value.astimezone(UTC).isoformat()
        elif isinstance(value, Decimal):
            receipt[key] = int(value) if value == value.to_integral_value() else float(value)
    return receipt


def _receipts(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, dict[str, Any]]:
    rows = con.execute(
        f"SELECT {', '.join(RECEIPT_COLUMNS)} FROM batches WHERE batch_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
    ).to_arrow_table().to_pylist()
    return {row["batch_id"]: _receipt_row(row) for row in rows}


def _receipt(con: duckdb.DuckDBPyConnection, batch_id: str) -> dict[str, Any] | None:
    return _receipts(con, [batch_id]).get(batch_id)


def arrow_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows of an Arrow table as dicts with timestamps as RFC 3339 text."""
    return [_receipt_row(row) for row in table.to_pylist()]
