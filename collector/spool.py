"""The spool: sealed zstd Parquet batches on local disk, waiting for sync.

Layout under the agent's state directory::

    journal/<model>/<segment>.wal    accepted records not yet sealed (see journal.py)
    batches/<batch_id>.parquet       sealed, waiting for upload (oldest id = oldest batch)
    rejected/<batch_id>.parquet      refused by the server with a non-retryable 4xx ...
    rejected/<batch_id>.error.json   ... and the server's answer beside it
    quarantine/<name>                files that could not be read, kept for a human
    seal.reserve                     preallocated space a seal may use when the disk is full

A batch id is a UUIDv7, so sorting ids sorts batches by age: ``BatchIds`` mints each one
past every id the spool and journal hold, whatever the wall clock does (a clock set back by
NTP, a Pi without an RTC booting in 1970 or 2038), so sync order and ``drop_oldest`` follow
the order batches were made in. Ages are not read from ids: a batch's age counts on the
boot clock (``bootclock``) from when its id was minted, saved in its metadata with the boot
id, so a clock stepped either way while the agent runs or between restarts changes no age; a
batch from an earlier boot takes its age from the wall clock, counted from now (with a
warning) when its id is in the future or from before the clock was set. Every file lands through
``write_durably``; a batch leaves ``batches/`` only by ``acknowledge``, ``reject``,
``split`` or the ``drop_oldest`` full-disk policy.

A full disk must not wedge the journal: ``seal.reserve`` holds ``seal_reserve_bytes``
(fallocate'd) so that when a seal meets ENOSPC the journal releases it and seals anyway
(the segment it then deletes gives the space back), and the reserve is taken again once
there is room. ``disk_status`` says whether the disk is full, for status and metrics.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import uuid_utils

from edgeloop.collector.bootclock import Moment, boot_id, uptime_s, wall_age_s
from edgeloop.collector.config import SpoolSettings
from edgeloop.durable import fsync_dir, move_durably, write_durably
from edgeloop.errors import CollectorError, SchemaError
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS, with_declared_types, with_optional_columns
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.settings import MiB

__all__ = ["BatchIds", "SealedBatch", "Spool", "describe_batch", "is_batch_id", "is_space_error", "verify_batch"]

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({"float32", "float64", "vector"})
BATCH_FILE_MODE = 0o640  # records of the fleet: the agent's user and group only, systemd or not
ROW_GROUP_ROWS = 4_096  # rows of one Parquet row group at most; still compresses well
ROW_GROUP_BYTES = 4 * MiB  # Arrow bytes of one row group at most: the agent's memory budget sets it


SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_space_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full; pyarrow's wrapped IO errors included."""
    if isinstance(exc, OSError) and exc.errno in SPACE_ERRNOS:
        return True
    text = str(exc)
    return isinstance(exc, (OSError, pa.ArrowException)) and (
        "No space left on device" in text or "Disk quota exceeded" in text
    )


_COUNTER_BITS = 74  # a UUIDv7's rand_a (12 bits) and rand_b (62 bits), used as one counter
_RAND_B_BITS = 62


class BatchIds:
    """Mints UUIDv7 batch ids, each greater than every id seen or minted before, whatever the wall clock does.

    An id takes the clock's millisecond when that is past the last id's; otherwise (the clock
    went back, or several ids in one millisecond) it is the last id plus a random step in its
    74 random bits, carrying into the millisecond (RFC 9562 section 6.2, method 2). Thread-safe.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def observe(self, batch_id: str) -> None:
        """Mint later ids past ``batch_id`` (one found on disk); ids that are not UUIDv7 carry no order."""
        try:
            value = uuid_utils.UUID(batch_id)
        except ValueError:
            return
        if value.version == 7:
            with self._lock:
                self._last = max(self._last, value.int)

    def mint(self) -> str:
        now_ms = max(0, time.time_ns() // 1_000_000)
        with self._lock:
            last_ms, counter = self._last >> 80, _counter(self._last)
            if now_ms > last_ms:
                ms, counter = now_ms, secrets.randbits(_COUNTER_BITS - 1)  # top bit clear: room to count up
            else:
                ms, counter = last_ms, counter + 1 + secrets.randbits(32)
                if counter >> _COUNTER_BITS:
                    ms, counter = ms + 1, secrets.randbits(_COUNTER_BITS - 1)
            self._last = _uuid7_int(ms, counter)
            return str(uuid_utils.UUID(int=self._last))


def _counter(value: int) -> int:
    return ((value >> 64) & 0xFFF) << _RAND_B_BITS | value & ((1 << _RAND_B_BITS) - 1)


def _uuid7_int(ms: int, counter: int) -> int:
    rand_a, rand_b = counter >> _RAND_B_BITS, counter & ((1 << _RAND_B_BITS) - 1)
    return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """A sealed batch file waiting in the spool."""

    batch_id: str
    path: Path
    model: str
    rows: int
    bytes: int
    schema_fingerprint: str
    made_uptime_s: float = 0.0  # when its id was minted, on this boot's clock (negative: before this boot)
    wall_clock_wrong: bool = False  # from an earlier boot, stamped in the future or before the clock was set

    @property
    def created_at(self) -> datetime:
        """When the batch id was minted by the wall clock of the time (from the UUIDv7 timestamp); wrong if that clock was."""
        millis = uuid_utils.UUID(self.batch_id).timestamp
        return datetime.fromtimestamp(millis / 1000, UTC)

    def age_s(self, now_uptime_s: float | None = None) -> float:
        """Seconds since the id was minted, on the boot clock: a wall clock stepped either way changes nothing."""
        return max(0.0, (uptime_s() if now_uptime_s is None else now_uptime_s) - self.made_uptime_s)


class Spool:
    """Owns the sealed batch files, the disk budget and the drop counters.

    Thread-safe: sealing runs in a worker thread while sync and status read from the loop.
    """

    def __init__(
        self, state_dir: Path, settings: SpoolSettings, *, agent_version: str, row_group_bytes: int = ROW_GROUP_BYTES
    ) -> None:
        self.settings = settings
        self.row_group_bytes = row_group_bytes
        self.agent_version = agent_version
        self.batches_dir = state_dir / "batches"
        self.rejected_dir = state_dir / "rejected"
        self.quarantine_dir = state_dir / "quarantine"
        self.journal_dir = state_dir / "journal"
        self.reserve_path = state_dir / "seal.reserve"
        for folder in (self.batches_dir, self.rejected_dir, self.quarantine_dir, self.journal_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._reserve_held = _allocated(self.reserve_path)
        self.disk_full_since: Moment | None = None  # a write met ENOSPC and none has succeeded since
        self._batches: dict[str, SealedBatch] = {}
        self._minted: dict[str, float] = {}  # ids minted by this process, not sealed yet -> uptime at minting
        self.ids = BatchIds()
        self.drops: Counter[str] = Counter()  # since the last sealed batch; travels in its metadata
        self.drops_total: Counter[str] = Counter()  # since the agent started
        self._scan()

    def _scan(self) -> None:
        """Index sealed batches; quarantine the unreadable and remove interrupted temp files."""
        # New ids sort after every batch and segment here, even if the clock is now behind them.
        for path in (*self.rejected_dir.glob("*.parquet"), *self.journal_dir.glob("*/*.wal")):
            self.ids.observe(path.stem)
        for path in sorted(self.batches_dir.iterdir()):
            if path.name.startswith("."):
                path.unlink(missing_ok=True)  # a write that a crash interrupted
                continue
            try:
                batch = _describe(path)
            except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
                self.quarantine(path, f"unreadable batch file: {exc}")
                continue
            self._batches[batch.batch_id] = batch
            self.ids.observe(batch.batch_id)
        fsync_dir(self.batches_dir)
        wrong = [batch for batch in self._batches.values() if batch.wall_clock_wrong]
        if wrong:
            log.warning(
                "batches from an earlier boot were stamped by a wrong wall clock: their age is counted from now",
                extra={"batches": len(wrong), "stamped": sorted({batch.created_at.isoformat() for batch in wrong})[:3]},
            )

    def write_batch(
        self,
        table: pa.Table | Iterable[pa.RecordBatch],
        *,
        schema: ModelSchema,
        batch_id: str | None = None,
        made_uptime_s: float | None = None,
    ) -> SealedBatch:
        """Seal ``table`` as a zstd Parquet batch file, durably; the pending drop counts go with it.

        ``table`` may also be an iterable of record batches (typed as ``schema.arrow_schema``),
        written a row group at a time so sealing a large journal segment holds little memory.
        The batch is as old as its id (``made_uptime_s`` on the boot clock, if given, says otherwise).
        """
        batch_id = batch_id or self.new_batch_id()
        # Rounded as the metadata keeps it, so the batch read back from disk is this one.
        made_uptime_s = round(self.id_made_uptime_s(batch_id) if made_uptime_s is None else made_uptime_s, 3)
        with self._lock:
            drops, self.drops = self.drops, Counter()
        metadata = {
            BATCH_METADATA_KEYS["batch_id"]: batch_id.encode(),
            BATCH_METADATA_KEYS["model"]: schema.name.encode(),
            BATCH_METADATA_KEYS["schema_fingerprint"]: schema.fingerprint.encode(),
            BATCH_METADATA_KEYS["schema"]: schema.canonical_json().encode(),
            BATCH_METADATA_KEYS["agent_version"]: self.agent_version.encode(),
            BATCH_METADATA_KEYS["drops"]: orjson.dumps(dict(drops)),
            BATCH_METADATA_KEYS["sealed_at"]: datetime.now(UTC).isoformat().encode(),
            BATCH_METADATA_KEYS["made"]: orjson.dumps({"boot_id": boot_id(), "uptime_s": made_uptime_s}),  # see _made
        }
        path = self.batches_dir / f"{batch_id}.parquet"
        rows = 0

        def write(handle) -> None:
            nonlocal rows
            arrow_schema = table.schema if isinstance(table, pa.Table) else schema.arrow_schema
            # Measured floats (and vectors of them) compress far better byte-stream-split than
            # dictionary-encoded: ~16% fewer bytes per vibration record on the wire.
            split = [spec.name for spec in schema.stored_fields if spec.type in FLOAT_TYPES]
            # Ids never repeat, so a dictionary only adds a page (~1.3 B a record). Not byte-stream-split,
            # though that saves 4 B: DuckDB 1.5 reads that encoding only for floats.
            plain = split + [field.name for field in arrow_schema if field.type == pa.uuid()]
            with pq.ParquetWriter(
                handle,
                arrow_schema.remove_metadata(),
                compression="zstd",
                compression_level=self.settings.zstd_level,
                use_byte_stream_split=split or False,
                use_dictionary=[name for name in arrow_schema.names if name not in plain],
                # No ARROW:schema (2.2 KB a batch) and no statistics (~3 KB of a 600-row batch): the
                # registered schema the fingerprint names gives readers the exact Arrow types, and no
                # reader prunes by statistics (see with_declared_types, docs/wire-contract.md).
                store_schema=False,
                write_statistics=False,
            ) as writer:
                for group in _row_groups(table, ROW_GROUP_ROWS, self.row_group_bytes):
                    writer.write_table(group.replace_schema_metadata(None), row_group_size=ROW_GROUP_ROWS)
                    rows += group.num_rows
                writer.add_key_value_metadata(metadata)

        try:
            try:
                write_durably(path, write, mode=BATCH_FILE_MODE)
            except Exception as exc:
                # A table can be written again: on a full disk, once more with the seal reserve's space.
                if not (isinstance(table, pa.Table) and is_space_error(exc)):
                    raise
                self.note_disk_full()
                if not self.release_reserve():
                    raise
                rows = 0
                write_durably(path, write, mode=BATCH_FILE_MODE)
        except BaseException:
            with self._lock:
                self.drops.update(drops)  # not sealed: keep counting them for the next batch
            raise
        batch = SealedBatch(batch_id, path, schema.name, rows, path.stat().st_size, schema.fingerprint, made_uptime_s)
        with self._lock:
            self._batches[batch_id] = batch
            self._minted.pop(batch_id, None)
        return batch

    def new_batch_id(self) -> str:
        """An id for a new batch (or journal segment) that sorts after every one the spool has."""
        batch_id = self.ids.mint()
        with self._lock:
            self._minted[batch_id] = uptime_s()
        return batch_id

    def forget_id(self, batch_id: str) -> None:
        """An id minted here will not be sealed (its segment was empty)."""
        with self._lock:
            self._minted.pop(batch_id, None)

    def id_made_uptime_s(self, batch_id: str, stamp: bytes | None = None) -> float:
        """When ``batch_id`` was minted, on this boot's clock; an id of an earlier run by its ``stamp``, else its wall time (see ``_made``)."""
        with self._lock:
            made = self._minted.get(batch_id)
        return made if made is not None else _made(batch_id, stamp)[0]

    def made_stamp(self, batch_id: str) -> bytes:
        """When ``batch_id`` was minted, as the boot id and uptime (a batch's ``edgeloop.made``; a journal segment's too)."""
        return orjson.dumps({"boot_id": boot_id(), "uptime_s": round(self.id_made_uptime_s(batch_id), 3)})

    def id_age_s(self, batch_id: str) -> float:
        """Seconds since ``batch_id`` was minted (a journal segment's: its oldest record's), on the boot clock."""
        return max(0.0, uptime_s() - self.id_made_uptime_s(batch_id))

    def pending(self) -> list[SealedBatch]:
        """Sealed batches waiting for upload, oldest first."""
        with self._lock:
            return [self._batches[key] for key in sorted(self._batches)]

    def get(self, batch_id: str) -> SealedBatch | None:
        with self._lock:
            return self._batches.get(batch_id)

    def acknowledge(self, batch_id: str) -> None:
        """The server has the batch: remove it from the spool."""
        with self._lock:
            batch = self._batches.pop(batch_id, None)
        if batch is not None:
            batch.path.unlink(missing_ok=True)
            fsync_dir(self.batches_dir)

    def reject(self, batch_id: str, *, status: int, error: Any) -> Path | None:
        """Move a batch the server refused for good to ``rejected/`` with its answer beside it."""
        with self._lock:
            batch = self._batches.pop(batch_id, None)
        if batch is None:
            return None
        write_durably(
            self.rejected_dir / f"{batch_id}.error.json",
            orjson.dumps(
                {"batch_id": batch_id, "status": status, "error": error, "rejected_at": datetime.now(UTC).isoformat()},
                option=orjson.OPT_INDENT_2,
                default=str,
            ),
        )
        return move_durably(batch.path, self.rejected_dir / batch.path.name)

    def split(self, batch_id: str) -> list[SealedBatch]:
        """Replace a batch by two halves (for a 413); returns [] if it has one row."""
        batch = self.get(batch_id)
        if batch is None or batch.rows < 2:
            return []
        parquet = pq.ParquetFile(batch.path)
        schema = ModelSchema.from_canonical_json(
            parquet.metadata.metadata[BATCH_METADATA_KEYS["schema"]].decode()
        )
        table = with_declared_types(parquet.read(), schema.arrow_schema)
        half = table.num_rows // 2
        # Both halves are durable before the original goes, so a crash here duplicates, never loses.
        halves = [
            self.write_batch(part.replace_schema_metadata(None), schema=schema, made_uptime_s=batch.made_uptime_s)
            for part in (table.slice(0, half), table.slice(half))
        ]
        self.acknowledge(batch_id)
        return halves

    def quarantine(self, path: Path, reason: str) -> Path:
        """Keep an unreadable file for a human, out of the way of sync."""
        log.warning("quarantined file", extra={"path": str(path), "reason": reason})
        self.count_drop("quarantined_file")
        target = self.quarantine_dir / path.name
        if target.exists():
            target = self.quarantine_dir / f"{path.name}.{self.ids.mint()}"
        return move_durably(path, target)

    def count_drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.drops[reason] += count
            self.drops_total[reason] += count

    @property
    def bytes_pending(self) -> int:
        with self._lock:
            return sum(batch.bytes for batch in self._batches.values())

    def journal_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.journal_dir.rglob("*.wal") if path.is_file())

    def free_disk_bytes(self) -> int:
        return shutil.disk_usage(self.batches_dir).free

    def make_room(self, incoming_bytes: int, *, journal_bytes: int | None = None) -> bool:
        """Whether ``incoming_bytes`` more fit the budget and reserve, dropping old batches if the policy allows.

        ``journal_bytes`` spares a walk of the journal folder when the caller knows its size.
        """
        journal = self.journal_bytes() if journal_bytes is None else journal_bytes
        while True:
            used = self.bytes_pending + journal
            fits = used + incoming_bytes <= self.settings.max_bytes
            fits = fits and self.free_disk_bytes() - incoming_bytes >= self.settings.reserve_free_bytes
            if fits:
                return True
            if self.settings.when_full != "drop_oldest":
                return False
            oldest = next(iter(self.pending()), None)
            if oldest is None:
                return False
            log.warning("spool full: dropping oldest batch", extra={"batch_id": oldest.batch_id, "rows": oldest.rows})
            self.count_drop("spool_full", oldest.rows)
            self.acknowledge(oldest.batch_id)

    # -- the seal reserve and the full-disk state ---------------------------------------------

    def ensure_reserve(self) -> bool:
        """Hold ``seal_reserve_bytes`` of disk in ``seal.reserve``; False if it cannot (the disk counted full if for want of room)."""
        want = self.settings.seal_reserve_bytes
        if self._reserve_held >= want:
            return True
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, want)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a read-only state dir refuses this too
                self.reserve_path.unlink(missing_ok=True)  # a partial reserve would only hide free space
            self._reserve_held = 0
            if is_space_error(exc):
                self.note_disk_full()
            # Any other error (a read-only state dir) is the journal's to report: it cannot write either.
            return False
        self._reserve_held = want
        log.info("seal reserve held", extra={"bytes": want})
        return True

    def release_reserve(self) -> bool:
        """Give the reserve's space to a seal that met a full disk; False if there was none to give."""
        if not self._reserve_held:
            return False
        self.reserve_path.unlink(missing_ok=True)
        log.warning("disk full: releasing the seal reserve to seal the journal", extra={"bytes": self._reserve_held})
        self._reserve_held = 0
        return True

    @property
    def reserve_held_bytes(self) -> int:
        return self._reserve_held

    def note_disk_full(self) -> None:
        if self.disk_full_since is None:
            self.disk_full_since = Moment.now()
            log.error("disk full", extra={"free_bytes": self.free_disk_bytes()})

    def note_disk_ok(self) -> None:
        """A write succeeded with the reserve in place: the disk has room again."""
        if self.disk_full_since is not None and self._reserve_held >= self.settings.seal_reserve_bytes:
            log.info("disk has room again", extra={"free_bytes": self.free_disk_bytes()})
            self.disk_full_since = None

    @property
    def disk_full(self) -> bool:
        return self.disk_full_since is not None

    def disk_status(self) -> dict[str, Any]:
        since = self.disk_full_since
        return {
            "full": since is not None,
            "full_since": None if since is None else since.at().isoformat(),
            "free_bytes": self.free_disk_bytes(),
            "reserve_free_bytes": self.settings.reserve_free_bytes,
            "seal_reserve_bytes": self.settings.seal_reserve_bytes,
            "seal_reserve_held_bytes": self._reserve_held,
        }

    def rejected(self) -> list[Path]:
        return sorted(self.rejected_dir.glob("*.parquet"))

    def oldest_age_s(self) -> float:
        """Seconds since the oldest waiting batch's id was minted, on the boot clock; 0 when nothing waits."""
        now = uptime_s()
        return max((batch.age_s(now) for batch in self.pending()), default=0.0)

    def requeue(self, batch_id: str) -> SealedBatch:
        """Move a rejected batch back to the pending spool (the next sync sends it); raises CollectorError."""
        if not is_batch_id(batch_id):
            raise CollectorError(f"{batch_id!r} is not a batch id")
        source = self.rejected_dir / f"{batch_id}.parquet"
        target = self.batches_dir / source.name
        if not source.is_file():
            raise CollectorError(f"no rejected batch {batch_id} (see `edgeloop-collector spool list`)")
        if target.exists():
            raise CollectorError(f"batch {batch_id} is already pending")
        try:
            _describe(source)
        except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
            raise CollectorError(f"rejected batch {batch_id} is not readable: {exc}") from exc
        move_durably(source, target)
        batch = _describe(target)
        with self._lock:
            self._batches[batch_id] = batch
        reason = self.rejected_dir / f"{batch_id}.error.json"
        if reason.exists():  # after the move: a crash in between leaves a stray reason, never a lost batch
            reason.unlink()
            fsync_dir(self.rejected_dir)
        return batch

    def stats(self) -> dict[str, Any]:
        """What ``status`` reports about the spool; every number read from disk or counters now."""
        pending = self.pending()
        # On today's wall clock, from the age: never in the future, whatever clock stamped the id.
        oldest = datetime.now(UTC) - timedelta(seconds=self.oldest_age_s()) if pending else None
        return {
            "batches": len(pending),
            "records": sum(batch.rows for batch in pending),
            "bytes": sum(batch.bytes for batch in pending),
            "oldest_batch_at": oldest.isoformat() if oldest else None,
            "journal_bytes": self.journal_bytes(),
            "rejected": len(self.rejected()),
            "quarantined": sum(1 for _ in self.quarantine_dir.iterdir()),
            "free_disk_bytes": self.free_disk_bytes(),
            "budget_bytes": self.settings.max_bytes,
            "drops_total": dict(self.drops_total),
        }


def _row_groups(source: pa.Table | Iterable[pa.RecordBatch], rows: int, max_bytes: int) -> Iterator[pa.Table]:
    """Tables of at most ``rows`` rows and about ``max_bytes`` bytes, never holding more than one plus one input batch."""
    pending: list[pa.RecordBatch] = []
    count = size = 0
    for batch in source.to_batches() if isinstance(source, pa.Table) else source:
        for piece in _pieces(batch, rows, max_bytes):
            if pending and (count + piece.num_rows > rows or size + piece.nbytes > max_bytes):
                yield pa.Table.from_batches(pending)
                pending, count, size = [], 0, 0
            pending.append(piece)
            count += piece.num_rows
            size += piece.nbytes
    if pending:
        yield pa.Table.from_batches(pending)


def _pieces(batch: pa.RecordBatch, rows: int, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """``batch`` in zero-copy slices within the bounds (large records: a request of 200 KB images)."""
    if batch.num_rows <= rows and batch.nbytes <= max_bytes:
        yield batch
        return
    row_bytes = max(1, batch.nbytes // max(1, batch.num_rows))
    step = max(1, min(rows, max_bytes // row_bytes))
    for offset in range(0, batch.num_rows, step):
        yield batch.slice(offset, step)


def describe_batch(path: Path) -> SealedBatch:
    """Read a batch file's footer (not its data) into a SealedBatch; read-only."""
    return _describe(path)


def verify_batch(path: Path) -> SealedBatch:
    """Read a batch file fully and check its metadata, schema and fingerprint; raises ValueError on a problem."""
    try:
        batch = _describe(path)
        parquet = pq.ParquetFile(path)
        kv = parquet.metadata.metadata or {}
        schema = ModelSchema.from_canonical_json(kv[BATCH_METADATA_KEYS["schema"]].decode())
        table = with_declared_types(parquet.read(), schema.arrow_schema)
    except KeyError as exc:
        raise ValueError(f"metadata key {exc.args[0]!r} is missing") from exc
    except (OSError, pa.ArrowException, SchemaError) as exc:
        raise ValueError(str(exc)) from exc
    if schema.fingerprint != batch.schema_fingerprint:
        raise ValueError(f"schema fingerprint {batch.schema_fingerprint} does not match its schema ({schema.fingerprint})")
    if schema.name != batch.model:
        raise ValueError(f"model {batch.model!r} does not match its schema ({schema.name!r})")
    if not with_optional_columns(table, schema.arrow_schema).schema.remove_metadata().equals(schema.arrow_schema):
        raise ValueError("columns do not match the schema it names")
    if table.num_rows != batch.rows:
        raise ValueError(f"footer says {batch.rows} rows, data has {table.num_rows}")
    return batch


def _describe(path: Path) -> SealedBatch:
    """Read a batch file's footer (not its data) into a SealedBatch."""
    meta = pq.read_metadata(path)
    kv = meta.metadata or {}
    batch_id = kv[BATCH_METADATA_KEYS["batch_id"]].decode()
    if f"{batch_id}.parquet" != path.name:
        raise ValueError(f"file name does not match batch id {batch_id}")
    made_uptime_s, wrong = _made(batch_id, kv.get(BATCH_METADATA_KEYS["made"]))
    return SealedBatch(
        batch_id=batch_id,
        path=path,
        model=kv[BATCH_METADATA_KEYS["model"]].decode(),
        rows=meta.num_rows,
        bytes=os.path.getsize(path),
        schema_fingerprint=kv[BATCH_METADATA_KEYS["schema_fingerprint"]].decode(),
        made_uptime_s=made_uptime_s,
        wall_clock_wrong=wrong,
    )


def _made(batch_id: str, made: bytes | None) -> tuple[float, bool]:
    """When an id was minted on this boot's clock, and whether the wall clock that stamped it was wrong.

    Saved on this boot: the uptime saved. Otherwise (an earlier boot, an older agent's file or
    segment) the id's wall time, unless that is in the future or from before the
    clock was set: then it counts from now.
    """
    now = uptime_s()
    try:
        saved = orjson.loads(made) if made else None
        if isinstance(saved, dict) and saved.get("boot_id") == boot_id():
            return min(float(saved["uptime_s"]), now), False
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        pass  # unreadable: the wall clock is all there is
    try:
        age = wall_age_s(uuid_utils.UUID(batch_id).timestamp / 1000)
    except ValueError:
        return now, False
    return (now, True) if age is None else (now - age, False)


def _allocated(path: Path) -> int:
    """Bytes of disk a file holds (0 if absent)."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def is_batch_id(text: str) -> bool:
    """Whether ``text`` is a UUID (batch and segment ids are UUIDv7); checked before it names a file."""
    try:
        uuid_utils.UUID(text)
    except ValueError:
        return False
    return True
