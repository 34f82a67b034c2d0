"""The journal: accepted records, fsync'd on disk, until they are sealed into the spool.

One append-only segment per model is open at a time::

    journal/<model>/<segment_id>.wal     segment_id = the batch id it will seal into (UUIDv7)

A segment is a run of frames, ``[u32 length][u32 crc32][payload]`` (little-endian), each
payload the Arrow IPC stream of one RecordBatch, already through privacy and sampling. The
first frame's Arrow schema metadata carries the model schema the segment was written under
(``edgeloop.schema``, its canonical JSON), so a segment is sealed with that schema even if
the schema file changed, or went away, before the seal (a crash, then an edit); and when the
segment was opened (``edgeloop.made``: boot id and uptime), so a batch sealed from it after a
crash is as old as its records, whatever the wall clock did meanwhile.

Appending is a plain write into the page cache on the event loop; a request is
acknowledged only after a *group* fsync that covers its appends: one fsync (in a thread)
covers every append made before it started, and requests arriving meanwhile wait for the
next one. A segment is rotated when it passes ``seal_max_rows``, ``seal_max_bytes`` or
``seal_max_age_s``; sealing (read frames → one table → ``Spool.write_batch`` with the
segment id as batch id → unlink the segment) runs in a worker thread.

A journal that cannot be written (the state dir turned read-only or full, the disk failed an
fsync) refuses the records of that moment, says so in ``stats`` (``writable``, ``write_error``)
and takes records again as soon as a write works. An fsync that fails leaves the page cache
holding frames the disk may never get, and a later fsync may report success for them (Linux
drops the error once reported): so every append not yet covered by a good fsync counts as
lost, its request is refused, each segment holding such frames is cut back to what was synced
and sealed, and later appends go to a new segment.

Recovery on start: a segment whose batch file already exists is deleted (the crash came
after the seal, before the unlink); any other is sealed from its valid prefix, under the
schema its first frame names (segments from before that existed: the model's current one). A torn or
CRC-bad tail is cut off and counted as the drop reason ``journal_torn``; a segment that
cannot be read at all goes to ``quarantine/``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from edgeloop.collector.bootclock import Moment
from edgeloop.collector.config import SpoolSettings
from edgeloop.collector.metrics import Metrics
from edgeloop.collector.spool import SealedBatch, Spool, is_batch_id, is_space_error
from edgeloop.durable import fsync_dir
from edgeloop.errors import JournalCorruptError, SchemaError
from edgeloop.logs import RateLimitedLogger
from edgeloop.schemas.envelope import BATCH_METADATA_KEYS, with_optional_columns
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.schemas.registry import SchemaRegistry

__all__ = ["FRAME_HEADER", "Journal", "SegmentReader", "encode_frame", "read_segment"]

log = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct("<II")
SCHEMA_KEY = BATCH_METADATA_KEYS["schema"]
MADE_KEY = BATCH_METADATA_KEYS["made"]
MAX_FRAME_BYTES = 1 << 30  # a longer length field is garbage, not a frame


def encode_frame(batch: pa.RecordBatch) -> list[Any]:
    """The buffers of one frame: header, then the IPC stream of ``batch``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    payload = sink.getvalue()
    return [FRAME_HEADER.pack(payload.size, zlib.crc32(payload)), payload]


class SegmentReader:
    """Iterates the record batches of a segment's valid prefix, one frame in memory at a time.

    After iteration ``valid_bytes`` and ``torn_bytes`` say where the valid prefix ended.
    Raises JournalCorruptError if the file cannot be opened or its first frame is not Arrow.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.valid_bytes = 0
        self.torn_bytes = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            handle = open(self.path, "rb")
            size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise JournalCorruptError(f"{self.path}: cannot read: {exc}") from exc
        with handle:
            pos = 0
            while size - pos >= FRAME_HEADER.size:
                length, crc = FRAME_HEADER.unpack(handle.read(FRAME_HEADER.size))
                if length > MAX_FRAME_BYTES or pos + FRAME_HEADER.size + length > size:
                    break
                payload = handle.read(length)
                if len(payload) != length or zlib.crc32(payload) != crc:
                    break
                try:
                    batches = list(pa.ipc.open_stream(payload))
                except (pa.ArrowException, OSError) as exc:
                    if pos == 0:
                        raise JournalCorruptError(f"{self.path}: first frame is not an Arrow stream: {exc}") from exc
                    break
                pos += FRAME_HEADER.size + length
                self.valid_bytes = pos
                yield from batches
            self.torn_bytes = size - pos


def read_segment(path: Path) -> tuple[list[pa.RecordBatch], int, int]:
    """Every record batch in a segment's valid prefix, its length and the torn tail's length."""
    reader = SegmentReader(path)
    batches = list(reader)
    return batches, reader.valid_bytes, reader.torn_bytes


@dataclass(eq=False)
class Segment:
    """One journal segment file, open for appends until it is rotated."""

    model: str
    schema: ModelSchema  # the schema its records were written under; it seals with this one
    segment_id: str
    path: Path
    fd: int
    rows: int = 0
    bytes: int = 0
    last_seq: int = 0  # the journal's sequence number of its last append
    synced: tuple[int, int, int] = (0, 0, 0)  # (bytes, rows, last_seq) a finished fsync covered
    opened_at: float = field(default_factory=time.monotonic)
    new: bool = True  # its directory entry is not fsync'd yet
    recovered: bool = False  # left by an earlier run: a torn tail is a crash's, cut off rather than fatal


class Journal:
    """Appends accepted records durably and seals them into the spool; one per agent.

    ``append``, ``commit``, ``flush`` and ``tick`` run on the event loop; fsyncs and seals
    run in threads of their own so intake never waits on Parquet.
    """

    def __init__(
        self,
        spool: Spool,
        registry: SchemaRegistry,
        settings: SpoolSettings,
        *,
        metrics: Metrics | None = None,
        on_sealed: Callable[[SealedBatch], None] | None = None,
    ) -> None:
        self.spool = spool
        self.registry = registry
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.on_sealed = on_sealed
        self.dir = spool.journal_dir
        self._active: dict[str, Segment] = {}
        self._closing: dict[str, Segment] = {}  # rotated, not sealed yet
        self._unsealed: list[Segment] = []  # a seal failed; tick retries
        self._dirty: dict[str, Segment] = {}
        self._seq = 0  # appends so far
        self._synced = 0  # appends covered by a finished fsync
        self._lost_through = 0  # appends up to this one met a failed fsync: never acknowledged
        self.write_error: str | None = None  # why the journal could not be written, until a write works again
        self.write_error_since: Moment | None = None
        self._fsync_task: asyncio.Task[None] | None = None
        self._seals: set[asyncio.Task[SealedBatch | None]] = set()
        self._fsync_pool = ThreadPoolExecutor(1, thread_name_prefix="journal-fsync")
        self._seal_pool = ThreadPoolExecutor(1, thread_name_prefix="journal-seal")
        self._errors = RateLimitedLogger(log)
        self._seal_retry_at = 0.0
        self.fsyncs = 0

    # -- recovery -------------------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Seal what a previous run left in the journal; call before serving."""
        report = {
            "segments": 0,
            "sealed": 0,
            "rows": 0,
            "already_sealed": 0,
            "torn_bytes": 0,
            "quarantined": 0,
            "left_unsealed": 0,
        }
        for model_dir in sorted(self.dir.iterdir()):
            if not model_dir.is_dir():
                self.spool.quarantine(model_dir, "stray file in the journal")
                report["quarantined"] += 1
                continue
            for path in sorted(model_dir.iterdir()):
                report["segments"] += 1
                self._recover_segment(model_dir.name, path, report)
            fsync_dir(model_dir)
        if report["segments"]:
            log.info("journal recovered", extra=report)
        return report

    def _recover_segment(self, model: str, path: Path, report: dict[str, int]) -> None:
        segment_id = path.stem
        if path.suffix != ".wal" or not is_batch_id(segment_id):
            self.spool.quarantine(path, "not a journal segment")
            report["quarantined"] += 1
            return
        if (self.spool.batches_dir / f"{segment_id}.parquet").exists():
            path.unlink()  # sealed before the crash, not yet unlinked
            report["already_sealed"] += 1
            return
        try:
            first = next(iter(SegmentReader(path)), None)
            schema = None if first is None else _segment_schema(first, self.registry.get(model))
        except (JournalCorruptError, SchemaError, pa.ArrowException, ValueError) as exc:
            self.spool.quarantine(path, f"unreadable journal segment: {exc}")
            report["quarantined"] += 1
            return
        if first is not None and schema is None:
            self.spool.quarantine(path, f"journal segment for unknown model {model!r}")
            report["quarantined"] += 1
            return
        reader = SegmentReader(path)
        batch = None
        try:
            if schema is None:
                for _ in reader:  # no whole frame: only a torn tail to measure
                    pass
            else:
                made_uptime_s = self.spool.id_made_uptime_s(segment_id, (first.schema.metadata or {}).get(MADE_KEY))
                batch, reader = self._write_segment(path, schema, segment_id, tolerant=True, made_uptime_s=made_uptime_s)
        except Exception as exc:
            if is_space_error(exc) or (isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException)):
                self._leave_for_later(model, schema, path, exc)  # the disk's fault, not the data's
                report["left_unsealed"] += 1
                return
            if not isinstance(exc, (JournalCorruptError, pa.ArrowException, ValueError)):
                raise
            self.spool.quarantine(path, f"unreadable journal segment: {exc}")
            report["quarantined"] += 1
            return
        if reader.torn_bytes:
            log.warning(
                "journal tail cut off",
                extra={"segment": str(path), "valid_bytes": reader.valid_bytes, "torn_bytes": reader.torn_bytes},
            )
            self.spool.count_drop("journal_torn")
            report["torn_bytes"] += reader.torn_bytes
        if batch is not None:
            report["sealed"] += 1
            report["rows"] += batch.rows
        path.unlink()

    def _leave_for_later(self, model: str, schema: ModelSchema, path: Path, exc: BaseException) -> None:
        """A segment recovery could not seal (a full disk): it stays in the journal and the timer retries it."""
        rows = sum(batch.num_rows for batch in SegmentReader(path))
        log.error(
            "cannot seal a recovered journal segment now; will retry",
            extra={"segment": str(path), "rows": rows, "error": repr(exc)},
        )
        size = path.stat().st_size
        segment = Segment(model, schema, path.stem, path, -1, rows=rows, bytes=size, new=False, recovered=True)
        self._unsealed.append(segment)

    def _write_segment(
        self, path: Path, schema: ModelSchema, batch_id: str, *, tolerant: bool, made_uptime_s: float | None = None
    ) -> tuple[SealedBatch, SegmentReader]:
        """Seal a segment file into a batch; on a full disk, once more with the seal reserve's space."""
        for attempt in (1, 2):
            reader = SegmentReader(path)
            frames = iter(reader) if tolerant else _whole(reader)
            try:
                batch = self.spool.write_batch(
                    _checked(frames, schema.arrow_schema), schema=schema, batch_id=batch_id, made_uptime_s=made_uptime_s
                )
            except Exception as exc:
                if not is_space_error(exc):
                    raise
                self.spool.note_disk_full()
                if attempt == 2 or not self.spool.release_reserve():
                    raise
                continue
            return batch, reader
        raise AssertionError("unreachable")

    # -- appends and the group fsync --------------------------------------------------------

    def append(self, model: str, batch: pa.RecordBatch) -> int:
        """Write ``batch`` to the model's open segment (page cache only); returns its sequence number.

        Pass the number to ``commit`` before telling anyone the records are safe.
        """
        schema = self.registry[model]
        segment = self._active.get(model)
        if segment is not None and segment.schema.fingerprint != schema.fingerprint:
            self._rotate(segment)  # the schema changed under a live segment (a reload): one schema per segment
            segment = None
        try:
            if segment is None:
                segment = self._open(model, schema)
        except OSError as exc:
            self.note_write_error(exc)
            raise
        if not segment.rows:
            # When the segment was opened goes with it: a crash later, its batch is still as old as its records.
            batch = batch.replace_schema_metadata(
                {SCHEMA_KEY: schema.canonical_json().encode(), MADE_KEY: self.spool.made_stamp(segment.segment_id)}
            )
        buffers = encode_frame(batch)
        size = sum(len(memoryview(buf)) for buf in buffers)
        try:
            _write_all(segment.fd, buffers, size)
        except OSError as exc:
            self.note_write_error(exc)
            try:
                os.ftruncate(segment.fd, segment.bytes)  # never leave half a frame before the next one
            except OSError:
                # Half a frame may stay: no more appends after it; sealed up to the last whole frame.
                segment.recovered = True
                self._rotate(segment)
            raise
        segment.rows += batch.num_rows
        segment.bytes += size
        self._seq += 1
        segment.last_seq = self._seq
        self._dirty[segment.segment_id] = segment
        self.metrics.journal_appends.inc()
        if segment.rows >= self.settings.seal_max_rows or segment.bytes >= self.settings.seal_max_bytes:
            self._rotate(segment)
        return self._seq

    def _open(self, model: str, schema: ModelSchema) -> Segment:
        folder = self.dir / model
        if not folder.is_dir():
            folder.mkdir()
            fsync_dir(self.dir)
        segment_id = self.spool.new_batch_id()
        path = folder / f"{segment_id}.wal"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        segment = Segment(model, schema, segment_id, path, fd)
        self._active[model] = segment
        return segment

    async def commit(self, seq: int | None = None) -> None:
        """Return once every append up to ``seq`` (default: all so far) is fsync'd.

        Raises OSError if an fsync failed: then that append, and every one not synced before the
        failure, is lost (its request must be refused).
        """
        if seq is None:  # nothing appended since a failed fsync: what is left is synced, or lost and refused
            seq = self._seq if self._seq > self._lost_through else self._synced
        while self._synced < seq:
            if seq <= self._lost_through:
                raise OSError(errno.EIO, "an fsync of the journal failed: records not synced before it are not kept")
            if self._fsync_task is None:
                self._fsync_task = asyncio.get_running_loop().create_task(self._group_fsync())
            await asyncio.shield(self._fsync_task)

    async def _group_fsync(self) -> None:
        target, segments = self._seq, list(self._dirty.values())
        covered = [(segment.bytes, segment.rows, segment.last_seq) for segment in segments]
        self._dirty.clear()
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(self._fsync_pool, _fsync_segments, segments)
        except asyncio.CancelledError:
            for segment in segments:  # not known durable: the next fsync tries again
                self._dirty.setdefault(segment.segment_id, segment)
            raise
        except OSError as exc:
            self.note_write_error(exc)
            self._lose_unsynced(segments)
            raise
        finally:
            self._fsync_task = None
        for segment, synced in zip(segments, covered, strict=True):
            segment.synced = synced
        self._synced = max(self._synced, target)
        if segments:
            self._note_write_ok()
        self.fsyncs += 1
        self.metrics.journal_fsyncs.inc()
        self.metrics.journal_fsync_seconds.observe(time.perf_counter() - started)

    def _lose_unsynced(self, failed: list[Segment]) -> None:
        """After a failed fsync: refuse every append not synced yet and cut each segment back to its synced frames."""
        self._lost_through = self._seq
        for segment in {id(s): s for s in (*failed, *self._dirty.values())}.values():
            self._dirty.pop(segment.segment_id, None)
            size, rows, last_seq = segment.synced
            log.error("journal fsync failed: records since the last good fsync are refused",
                      extra={"segment": str(segment.path), "kept_bytes": size, "cut_bytes": segment.bytes - size})
            try:
                if segment.fd >= 0:
                    os.ftruncate(segment.fd, size)
            except OSError:
                segment.recovered = True  # frames not synced may stay on disk; a tolerant seal takes what is whole
            segment.bytes, segment.rows, segment.last_seq = size, rows, last_seq
            if self._active.get(segment.model) is segment:
                del self._active[segment.model]
                if rows:
                    self._rotate(segment)
                else:  # nothing in it was acknowledged
                    self._discard(segment)

    def _discard(self, segment: Segment) -> None:
        self.spool.forget_id(segment.segment_id)
        try:
            if segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1
            segment.path.unlink()
        except OSError as exc:  # recovery seals what is whole in it after a restart
            log.warning("cannot remove an empty journal segment", extra={"segment": str(segment.path), "error": repr(exc)})

    def note_write_error(self, exc: OSError) -> None:
        """The state dir refused a write: ``stats`` says so until a journal fsync works again."""
        reason = f"{errno.errorcode.get(exc.errno or 0, 'error')}: {exc.strerror or exc}"
        if self.write_error is None:
            self.write_error_since = Moment.now()
            log.error("the journal cannot be written: refusing records until it can", extra={"error": reason})
        self.write_error = reason

    def _note_write_ok(self) -> None:
        if self.write_error is not None:
            log.info("the journal can be written again", extra={"was": self.write_error})
        self.write_error = self.write_error_since = None

    # -- rotation and sealing ---------------------------------------------------------------

    def _rotate(self, segment: Segment) -> asyncio.Task[SealedBatch | None]:
        if self._active.get(segment.model) is segment:
            del self._active[segment.model]
        self._closing[segment.segment_id] = segment
        task = asyncio.get_running_loop().create_task(self._seal_after_commit(segment, segment.last_seq))
        self._seals.add(task)
        task.add_done_callback(self._seals.discard)
        return task

    async def _seal_after_commit(self, segment: Segment, seq: int) -> SealedBatch | None:
        try:
            await self.commit(seq)
            if not segment.rows:  # cut back to nothing after a failed fsync: no record of it was acknowledged
                self._discard(segment)
                return None
            started = time.perf_counter()
            batch = await asyncio.get_running_loop().run_in_executor(self._seal_pool, self._seal, segment)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._errors.log(logging.ERROR, "seal", "sealing a journal segment failed; will retry", error=repr(exc))
            self._unsealed.append(segment)
            return None
        finally:
            self._closing.pop(segment.segment_id, None)
        self.metrics.seal_seconds.observe(time.perf_counter() - started)
        self.metrics.batches_sealed.labels(batch.model).inc()
        if self.on_sealed is not None:
            self.on_sealed(batch)
        return batch

    def _seal(self, segment: Segment) -> SealedBatch:
        """In the seal thread: segment file → sealed batch file; the segment goes only after."""
        if segment.fd >= 0:
            os.close(segment.fd)
            segment.fd = -1
        batch, reader = self._write_segment(
            segment.path, segment.schema, segment.segment_id, tolerant=segment.recovered
        )
        if reader.torn_bytes:
            self.spool.count_drop("journal_torn")
        segment.path.unlink()
        fsync_dir(segment.path.parent)
        return batch

    def unsealed_models(self) -> set[str]:
        """Models with a segment whose seal failed (retried by the timer)."""
        return {segment.model for segment in self._unsealed}

    async def flush(self) -> list[SealedBatch]:
        """Seal every open segment now; returns the batches sealed while waiting."""
        for segment in list(self._active.values()):
            self._rotate(segment)
        self._retry_unsealed(force=True)
        sealed = await asyncio.gather(*self._seals)
        return [batch for batch in sealed if batch is not None]

    def tick(self) -> None:
        """One pass of the timer: rotate segments past their age, retry failed seals."""
        now = time.monotonic()
        for segment in list(self._active.values()):
            if now - segment.opened_at >= self.settings.seal_max_age_s:
                self._rotate(segment)
        if self.spool.reserve_held_bytes < self.settings.seal_reserve_bytes and self.spool.ensure_reserve():
            self.spool.note_disk_ok()  # the reserve was written again: there is room
        self._retry_unsealed()

    def _retry_unsealed(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._unsealed or (not force and now < self._seal_retry_at):
            return
        self._seal_retry_at = now + 30.0
        segments, self._unsealed = self._unsealed, []
        for segment in segments:
            self._rotate(segment)

    async def run_timer(self) -> None:
        """Call ``tick`` forever; errors are logged (rate-limited), never fatal."""
        interval_s = min(1.0, self.settings.seal_max_age_s / 4)
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.tick()
            except Exception as exc:
                self._errors.log(logging.ERROR, "tick", "journal timer failed", error=repr(exc))

    async def close(self) -> list[SealedBatch]:
        """Seal what is open and stop the worker threads."""
        try:
            return await self.flush()
        finally:
            self._fsync_pool.shutdown(wait=True)
            self._seal_pool.shutdown(wait=True)

    def unsealed_segments(self) -> list[tuple[str, Path]]:
        """(model, path) of segments waiting for a seal retry, e.g. those recovery could not seal."""
        return [(segment.model, segment.path) for segment in self._unsealed]

    # -- what status reports ------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes in segments not sealed yet (open, rotating or waiting for a retry)."""
        segments = [*self._active.values(), *self._closing.values(), *self._unsealed]
        return sum(segment.bytes for segment in segments)

    def stats(self) -> dict[str, Any]:
        segments = [*self._active.values(), *self._closing.values(), *self._unsealed]
        # Ages on the boot clock (see Spool.id_age_s); the wall time is today's clock minus the age.
        age_s = max((self.spool.id_age_s(s.segment_id) for s in segments), default=None)
        oldest = None if age_s is None else round(time.time() * 1000 - age_s * 1000)
        since = self.write_error_since
        return {
            "writable": self.write_error is None,
            "write_error": self.write_error,
            "write_error_since": None if since is None else since.at().isoformat(),
            "open_segments": len(self._active),
            "sealing_segments": len(self._closing),
            "unsealed_segments": len(self._unsealed),
            "records": sum(segment.rows for segment in segments),
            "bytes": sum(segment.bytes for segment in segments),
            "oldest_record_ms": oldest,
            "oldest_record_age_s": None if age_s is None else round(age_s, 3),
            "fsyncs": self.fsyncs,
        }


def _write_all(fd: int, buffers: list[Any], size: int) -> None:
    written = os.writev(fd, buffers)
    if written != size:  # rare: a short write; finish it byte by byte from where it stopped
        rest = b"".join(bytes(memoryview(buf)) for buf in buffers)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def _fsync_segments(segments: list[Segment]) -> None:
    folders: set[Path] = set()
    for segment in segments:
        os.fsync(segment.fd)
        if segment.new:
            folders.add(segment.path.parent)
            segment.new = False
    for folder in folders:
        fsync_dir(folder)


def _segment_schema(first: pa.RecordBatch, current: ModelSchema | None) -> ModelSchema | None:
    """The schema a segment was written under, from its first frame; ``current`` for segments older than that."""
    text = (first.schema.metadata or {}).get(SCHEMA_KEY)
    return current if text is None else ModelSchema.from_canonical_json(text.decode())


def _checked(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Pass batches through without metadata, refusing any whose columns differ from the segment's schema."""
    for batch in batches:
        batch = with_optional_columns(batch, schema)  # a frame an agent before sampled_by wrote
        if not batch.schema.equals(schema):
            raise ValueError("journal frame columns do not match the schema the segment was written under")
        yield batch.replace_schema_metadata(None) if batch.schema.metadata else batch


def _whole(reader: SegmentReader) -> Iterator[pa.RecordBatch]:
    """A live segment's frames; a torn tail there is corruption, not a crash: fail the seal."""
    yield from reader
    if reader.torn_bytes:
        raise JournalCorruptError(f"{reader.path}: {reader.torn_bytes} bytes after the last valid frame of a live segment")
