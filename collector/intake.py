"""The intake server: HTTP on the agent's unix socket, language-neutral.

    POST /v1/records   JSON object, JSON array or NDJSON → durable (journal fsync'd) or refused
    GET  /v1/status    the truth about spool, journal, drops and sync
    POST /v1/flush     seal the open journal segments now
    POST /v1/sync      {"wait": bool} → start a sync (and wait for its result)
    POST /v1/spool/requeue  {"batches": [id, ...]} or {"all": true} → rejected batches back to pending
    GET  /metrics      Prometheus text

``POST /v1/records`` answers 200 when at least one record was valid (accepted or sampled
out), with per-record results; invalid records in the same request are reported there and
the valid ones kept. A record whose ``record_id`` the agent already holds (a resend after a
lost answer, or the same id twice in one request) is answered ``accepted`` with
``"duplicate": true`` and stored once; the answer counts it in ``accepted`` and in
``duplicates``, and comes only once the first copy is fsync'd. 422 when every record is
invalid, 400 for a body that is not JSON, 413 for a body over ``intake.max_body_bytes`` or
more than ``intake.max_records_per_request`` records, 415 for another content type, 507
``spool_full`` when the spool is full under ``reject_new`` and 507 ``disk_full`` when the
disk is (records already accepted are kept, and still sealed and synced: see
``spool.seal_reserve_bytes``), 503 when the journal cannot be written. ``?results=errors``
(or ``none``) leaves the per-record results of good records out of the answer, for senders
that mint their own record ids. Every error has one shape: ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from edgeloop.collector.bootclock import Moment
from edgeloop.collector.budget import DEFAULT_SLICE_BYTES, MemoryBudget
from edgeloop.collector.config import CollectorConfig
from edgeloop.collector.journal import Journal
from edgeloop.collector.metrics import CONTENT_TYPE_LATEST, Metrics
from edgeloop.collector.pipeline import RequestRecords
from edgeloop.collector.reporter import StatusReporter, clock_synchronized
from edgeloop.collector.spool import Spool, is_batch_id
from edgeloop.errors import CollectorError
from edgeloop.runner import read_body
from edgeloop.units import size

if TYPE_CHECKING:
    from edgeloop.collector.pipeline import Pipeline
    from edgeloop.collector.scheduler import SyncScheduler

__all__ = [
    "BUDGET",
    "CONFIG",
    "INFO",
    "INTAKE_OPEN",
    "JOURNAL",
    "METRICS",
    "PIPELINE",
    "REPORTER",
    "SCHEDULER",
    "SPOOL",
    "create_app",
    "create_metrics_app",
    "error_response",
]

log = logging.getLogger(__name__)

CONFIG: web.AppKey[CollectorConfig] = web.AppKey("config", CollectorConfig)
BUDGET: web.AppKey[MemoryBudget] = web.AppKey("budget", MemoryBudget)
JOURNAL: web.AppKey[Journal] = web.AppKey("journal", Journal)
SPOOL: web.AppKey[Spool] = web.AppKey("spool", Spool)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline")
SCHEDULER: web.AppKey[SyncScheduler | None] = web.AppKey("scheduler")
INFO: web.AppKey[dict[str, Any]] = web.AppKey("info", dict)
REPORTER: web.AppKey[StatusReporter | None] = web.AppKey("reporter")
# Set while records may flow in; a reload clears it while it swaps schemas under the journal.
INTAKE_OPEN: web.AppKey[asyncio.Event] = web.AppKey("intake_open", asyncio.Event)

JSON_TYPES = frozenset({"application/json", "text/json", ""})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines"})
ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    408: "request_timeout",
    415: "unsupported_media_type",
    422: "all_invalid",
    500: "internal",
    503: "unavailable",
    507: "spool_full",
}


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    """The one error shape, ``{"error": {"code", "message", "details"}}``."""
    return json_response({"error": {"code": code, "message": message, "details": details}}, status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure, aiohttp's own 404/405/413 included, in the one error shape."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = ERROR_CODES.get(exc.status, "http_error")
        text = (exc.text or "").strip()
        message = exc.reason if not text or text.startswith(f"{exc.status}:") else text
        response = error_response(exc.status, code, message)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("request failed", extra={"path": request.path})
        response = error_response(500, "internal", f"internal error: {type(exc).__name__}")
    metrics.requests.labels(route, str(response.status)).observe(time.perf_counter() - started)
    return response


# -- POST /v1/records -------------------------------------------------------------------------


Slice = tuple[list[Any], list[int], dict[int, str]]  # records, their indices in the body, lines that were not JSON


def _slices(body: bytes, content_type: str, slice_bytes: int) -> tuple[int, Iterator[Slice]] | web.Response:
    """How many records a JSON body holds, and its records a slice at a time."""
    if content_type not in JSON_TYPES:
        return error_response(
            415,
            "unsupported_media_type",
            f"content type {content_type!r} is not accepted; send application/json or application/x-ndjson",
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error_response(400, "bad_json", f"body is not valid JSON: {exc}")
    if isinstance(parsed, dict):
        parsed = [parsed]
    elif not isinstance(parsed, list):
        return error_response(400, "bad_json", "body must be a JSON object or an array of objects")
    return len(parsed), _array_slices(parsed, max(1, slice_bytes * len(parsed) // max(len(body), 1)))


def process_body(
    pipeline: Pipeline, body: bytes, content_type: str, *, max_records: int,
    listed: frozenset[str] = RequestRecords.listed, slice_bytes: int = DEFAULT_SLICE_BYTES,
) -> RequestRecords | web.Response:
    """Validate, sample and anonymize a request body's records ``slice_bytes`` of body at a time; the error response for a body refused whole.

    An NDJSON slice's lines are parsed and validated in one pass; only a slice with a line
    that is not a valid record is decoded into Python objects first, for its precise answers.
    """
    ndjson = content_type in NDJSON_TYPES
    pieces: Iterator[Slice]
    if ndjson:
        # Line breaks bound the records from above: only a body near the limit pays for a pass counting them.
        bound = body.count(b"\n") + body.count(b"\r") + 1
        count = _ndjson_count(body, slice_bytes) if bound > max_records else 0
    else:
        sliced = _slices(body, content_type, slice_bytes)
        if isinstance(sliced, web.Response):
            return sliced
        count, pieces = sliced
    if count > max_records:
        return error_response(
            413, "too_many_records", f"{count} records in one request; the limit is {max_records}", {"limit": max_records}
        )
    processed = RequestRecords(count=count, listed=listed)
    now = datetime.now(UTC)
    if ndjson:
        pieces = _ndjson_pieces(pipeline, body, slice_bytes, processed, now)
    for records, positions, broken in pieces:
        for index, message in broken.items():
            processed.refuse(index, "record", message)
        if records:
            processed.absorb(pipeline.process(records, now=now, seen=processed.seen, listed=listed), positions)
        del records  # the slice's Python objects go before the next slice is parsed
    return processed


def _ndjson_pieces(
    pipeline: Pipeline, body: bytes, slice_bytes: int, processed: RequestRecords, now: datetime
) -> Iterator[Slice]:
    """Absorb each slice whose lines are all valid records; yield the others decoded, for ``Pipeline.process``."""
    for start, lines in _ndjson_texts(body, slice_bytes):
        processed.count = start + len(lines)
        part = pipeline.process_lines(lines, now=now, seen=processed.seen, listed=processed.listed)
        if part is None:
            yield _decoded(lines, start)
        else:
            processed.absorb(part, range(start, start + len(lines)))
        del lines


def _ndjson_chunks(body: bytes, slice_bytes: int) -> Iterator[bytes]:
    """The body cut after a newline every ``slice_bytes`` or more: only one chunk's lines are ever copies."""
    start = 0
    while start < len(body):
        cut = body.find(b"\n", start + slice_bytes - 1)
        end = len(body) if cut < 0 else cut + 1
        yield body[start:end]
        start = end


def _ndjson_count(body: bytes, slice_bytes: int) -> int:
    return sum(1 for chunk in _ndjson_chunks(body, slice_bytes) for line in chunk.splitlines() if line and not line.isspace())


def _ndjson_texts(body: bytes, slice_bytes: int) -> Iterator[tuple[int, list[bytes]]]:
    """Each slice's non-blank lines, with the index of its first among the body's."""
    index = 0
    for chunk in _ndjson_chunks(body, slice_bytes):
        lines = [line for line in chunk.splitlines() if line and not line.isspace()]  # isspace copies nothing
        del chunk
        yield index, lines
        index += len(lines)


def _decoded(lines: list[bytes], start: int) -> Slice:
    """A slice's lines as Python objects, and the ones that are not JSON, by index in the body."""
    records: list[Any] = []
    positions: list[int] = []
    broken: dict[int, str] = {}
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for index, line in enumerate(lines, start):
        try:
            records.append(loads(line))
            positions.append(index)
        except decode_error as exc:
            broken[index] = f"not valid JSON: {exc}"
    return records, positions, broken


def _ndjson_slices(body: bytes, slice_bytes: int) -> Iterator[Slice]:
    for start, lines in _ndjson_texts(body, slice_bytes):
        yield _decoded(lines, start)


def _array_slices(parsed: list[Any], per_slice: int) -> Iterator[Slice]:
    for start in range(0, len(parsed), per_slice):
        records = parsed[start : start + per_slice]
        parsed[start : start + per_slice] = [None] * len(records)  # a slice's records go once it is processed
        yield records, range(start, start + len(records)), {}  # type: ignore[misc]


async def post_records(request: web.Request) -> web.Response:
    """Charge the body to the memory budget before reading it; refuse it (503, retry) if no room comes soon."""
    budget = request.app[BUDGET]
    max_bytes = request.app[CONFIG].intake.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        return error_response(
            413, "too_large", f"body of {declared} bytes; the limit is {max_bytes}", {"limit": max_bytes}
        )
    charge = await budget.reserve(max_bytes if declared is None else declared, ndjson=request.content_type in NDJSON_TYPES)
    if charge is None:
        response = error_response(
            503, "busy", "the agent's memory budget for request bodies is in use; retry shortly",
            {"in_flight_bytes": budget.in_flight_bytes, "budget_bytes": budget.intake_bytes},
        )
        response.headers["Retry-After"] = "1"
        return response
    try:
        return await _post_records(request)
    finally:
        budget.release(charge)


async def _post_records(request: web.Request) -> web.Response:
    app = request.app
    config, journal, spool, metrics = app[CONFIG], app[JOURNAL], app[SPOOL], app[METRICS]
    want = request.query.get("results", "all")
    if want not in ("all", "errors", "none"):
        return error_response(400, "bad_request", "results must be 'all', 'errors' or 'none'")
    body = await read_body(request, max_bytes=config.intake.max_body_bytes, timeout_s=config.intake.body_timeout_s)
    gate = app[INTAKE_OPEN]
    if not gate.is_set():
        await gate.wait()  # a reload is sealing the journal under the old schemas
    listed = {"all": RequestRecords.listed, "errors": frozenset({"invalid"}), "none": frozenset()}[want]
    processed = process_body(
        app[PIPELINE], body, request.content_type, max_records=config.intake.max_records_per_request, listed=listed,
        slice_bytes=app[BUDGET].slice_bytes,
    )
    if isinstance(processed, web.Response):
        return processed
    await app[PIPELINE].sampler.save()  # the quota counts this request spent, before it is answered
    count = processed.count
    processed.results.sort(key=lambda result: result["index"])
    results, invalid, drops = processed.results, processed.invalid, processed.drops
    accepted = processed.accepted
    duplicates = sum(processed.duplicates.values())
    sampled_out = count - accepted - duplicates - invalid
    frames = [(model, batch) for model, batch in processed.batches().items() if batch.num_rows]

    if frames:
        refused = await _journal_records(app, processed, frames, accepted)
        if refused is not None:
            await app[PIPELINE].sampler.save()
            return refused
    elif duplicates:
        try:
            await journal.commit()  # the first copy may still wait for its fsync: answer only once it is durable
        except OSError as exc:
            return _journal_unavailable(exc)

    _count(spool, metrics, drops)
    reporter = app[REPORTER]
    for model, batch in frames:
        metrics.records.labels(model, "accepted").inc(batch.num_rows)
        if reporter is not None:
            import pyarrow.compute as pc  # loaded on the first record, not at start: 4 MB of an idle agent

            reporter.note_versions(model, pc.unique(batch.column("model_version")).to_pylist())
    for model, count in processed.duplicates.items():
        metrics.records.labels(model, "duplicate").inc(count)
    if invalid:
        metrics.records.labels("", "invalid").inc(invalid)
    if sampled_out:
        metrics.records.labels("", "sampled_out").inc(sampled_out)
    answer = {
        "accepted": accepted + duplicates,
        "duplicates": duplicates,
        "invalid": invalid,
        "sampled_out": sampled_out,
        "results": results,
    }
    if count and invalid == count:
        answer = {"error": {"code": "all_invalid", "message": "no record in the request is valid", "details": answer}}
        return json_response(answer, 422)
    return json_response(answer)


async def _journal_records(
    app: web.Application, processed: RequestRecords, frames: list[tuple[str, Any]], accepted: int
) -> web.Response | None:
    """Append the kept records to the journal and fsync them; the refusal to answer instead, if they are not stored.

    Records refused give back what they were charged (their quota, their remembered ids), so
    the app's resend is kept. A model's frame written before another model's write failed
    stays in the journal (the next fsync makes it durable): its ids stay remembered, so the
    resend of those records is answered as a duplicate once they are synced, not stored twice.
    """
    config, journal, spool, metrics = app[CONFIG], app[JOURNAL], app[SPOOL], app[METRICS]
    recent, sampler = app[PIPELINE].recent, app[PIPELINE].sampler

    def refuse(models: set[str]) -> None:
        for model in models:
            recent.discard(processed.keys[model])
        sampler.refund([charge for charge in processed.charges if charge[0][0] in models])

    incoming = sum(batch.get_total_buffer_size() for _, batch in frames)
    if spool.reserve_held_bytes < config.spool.seal_reserve_bytes:
        spool.ensure_reserve()  # the seal reserve comes before new records
    try:
        room = spool.make_room(incoming, journal_bytes=journal.bytes)
    except OSError as exc:  # drop_oldest could not remove a batch: the state dir refuses writes
        journal.note_write_error(exc)
        refuse({model for model, _ in frames})
        return _journal_unavailable(exc)
    if not room:
        refuse({model for model, _ in frames})
        details = {
            "budget_bytes": config.spool.max_bytes,
            "reserve_free_bytes": config.spool.reserve_free_bytes,
            "free_bytes": spool.free_disk_bytes(),
        }
        if spool.free_disk_bytes() - incoming < config.spool.reserve_free_bytes:
            spool.note_disk_full()
            _count(spool, metrics, {"disk_full": accepted})
            # "Full" with megabytes free reads as a bug: name the setting that keeps them.
            message = (f"the disk is full: {size(details['free_bytes'])} free, under spool.reserve_free_bytes"
                       f" ({size(config.spool.reserve_free_bytes)}) kept for the rest of the device;"
                       " records already accepted are kept")
            return error_response(507, "disk_full", message, details)
        _count(spool, metrics, {"spool_full": accepted})
        return error_response(
            507, "spool_full", "the spool is full (byte budget) and the policy is reject_new", details
        )
    lost = {model for model, _ in frames}  # until written: a failed append loses its frame and the ones after it
    try:
        seq = 0
        for model, batch in frames:
            seq = journal.append(model, batch)
            lost.discard(model)
            recent.add(processed.keys[model])  # in the journal now: a resend of these is a duplicate
        lost = {model for model, _ in frames}  # a failed fsync loses every frame not synced before it
        await journal.commit(seq)
        spool.note_disk_ok()
    except OSError as exc:
        refuse(lost)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            spool.note_disk_full()
            _count(spool, metrics, {"disk_full": sum(batch.num_rows for model, batch in frames if model in lost)})
            return error_response(
                507, "disk_full", f"the disk is full ({exc.strerror}); records already accepted are kept"
            )
        log.error("journal write failed", extra={"error": repr(exc)})
        return _journal_unavailable(exc)
    return None


def _journal_unavailable(exc: OSError) -> web.Response:
    return error_response(503, "journal_unavailable", f"the journal cannot be written: {exc.strerror or exc}")


def _count(spool: Spool, metrics: Metrics, drops: Any) -> None:
    for reason, count in drops.items():
        if count:
            spool.count_drop(reason, count)
            metrics.dropped.labels(reason).inc(count)


# -- status, flush, sync, metrics ------------------------------------------------------------


def status_report(app: web.Application) -> dict[str, Any]:
    """What ``GET /v1/status`` answers; every number read from disk or live counters now."""
    spool, journal, scheduler = app[SPOOL], app[JOURNAL], app[SCHEDULER]
    spool_stats = spool.stats()
    journal_stats = journal.stats()
    pending = spool.pending()
    ages = [age for age in (spool.oldest_age_s() if pending else None, journal_stats["oldest_record_age_s"]) if age is not None]
    info = app[INFO]
    return {
        "agent": {
            "running": True,
            "version": info["version"],
            "pid": os.getpid(),
            "started_at": info["started"].at().isoformat(),
            "uptime_s": round(info["started"].age_s(), 3),
            "socket": str(app[CONFIG].agent.socket),
            "recovery": info.get("recovery"),
            "reloads": info.get("reloads", 0),
            "reloaded_at": info.get("reloaded_at"),
        },
        "spool": {
            **spool_stats,
            "oldest_record_age_s": round(max(ages), 3) if ages else None,  # on the boot clock: see Spool
            "models": _per_model(pending),
        },
        "journal": {**journal_stats, "bytes_on_disk": spool.journal_bytes()},
        "disk": spool.disk_status(),
        "drops": {"total": spool_stats["drops_total"], "since_last_batch": dict(spool.drops)},
        "sync": scheduler.status() if scheduler is not None else {"enabled": False, "available": False},
        "policies": app[PIPELINE].policy_status(),
        "health": _health(app),
    }


def _health(app: web.Application) -> dict[str, Any] | None:
    """What the status document sent at sync carries that the rest of the report does not."""
    reporter = app[REPORTER]
    if reporter is None:
        return None
    return {
        "models": [{"model": schema.name, "schema_fingerprint": schema.fingerprint,
                    "versions": reporter.versions().get(schema.name, [])} for schema in app[PIPELINE].registry],
        "sync_window_s": reporter.window_s,
        "clock": {"synchronized": clock_synchronized(), "last_offset_s": reporter.last_offset_s},
        "sampling": reporter.sampling(),
        "last_report": reporter.last_report,
    }


def _per_model(pending: list[Any]) -> dict[str, dict[str, int]]:
    models: dict[str, dict[str, int]] = {}
    for batch in pending:
        entry = models.setdefault(batch.model, {"batches": 0, "records": 0, "bytes": 0})
        entry["batches"] += 1
        entry["records"] += batch.rows
        entry["bytes"] += batch.bytes
    return models


async def get_status(request: web.Request) -> web.Response:
    return json_response(status_report(request.app))


async def post_flush(request: web.Request) -> web.Response:
    sealed = await request.app[JOURNAL].flush()
    batches = [{"batch_id": b.batch_id, "model": b.model, "rows": b.rows, "bytes": b.bytes} for b in sealed]
    return json_response({"sealed": len(batches), "batches": batches})


async def post_sync(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    if scheduler is None:
        return error_response(503, "sync_unavailable", "sync is not running in this agent")
    wait = False
    body = await request.read()
    if body.strip():
        try:
            options = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error_response(400, "bad_json", f"body is not valid JSON: {exc}")
        if not isinstance(options, dict) or not isinstance(options.get("wait", False), bool):
            return error_response(400, "bad_request", 'body must be {"wait": true|false}')
        wait = options.get("wait", False)
    return json_response(await scheduler.sync_now(wait=wait))


async def post_requeue(request: web.Request) -> web.Response:
    """``{"batches": [id, ...]}`` or ``{"all": true}``: move rejected batches back to the pending spool."""
    spool = request.app[SPOOL]
    try:
        options = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        return error_response(400, "bad_json", f"body is not valid JSON: {exc}")
    wanted = options.get("batches") if isinstance(options, dict) else None
    if isinstance(options, dict) and options.get("all") is True and wanted is None:
        wanted = [path.stem for path in spool.rejected()]
    if not isinstance(wanted, list) or not all(isinstance(item, str) for item in wanted):
        return error_response(400, "bad_request", 'body must be {"batches": ["<batch id>", ...]} or {"all": true}')
    for batch_id in wanted:
        if not is_batch_id(batch_id):
            return error_response(400, "bad_batch_id", f"{batch_id!r} is not a batch id")
        if not (spool.rejected_dir / f"{batch_id}.parquet").is_file():
            return error_response(404, "not_found", f"no rejected batch {batch_id} (see `edgeloop-collector spool list`)")
    requeued = []
    for batch_id in wanted:
        try:
            batch = spool.requeue(batch_id)
        except CollectorError as exc:
            return error_response(409, "requeue_failed", str(exc), {"requeued": requeued})
        requeued.append({"batch_id": batch.batch_id, "model": batch.model, "rows": batch.rows, "bytes": batch.bytes})
    return json_response({"requeued": requeued})


async def get_metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _journal_ctx(app: web.Application) -> AsyncIterator[None]:
    """The journal's age timer runs while the app serves; on the way out, open segments are sealed."""
    journal = app[JOURNAL]
    timer = asyncio.get_running_loop().create_task(journal.run_timer())
    yield
    timer.cancel()
    try:
        await timer
    except asyncio.CancelledError:
        pass
    sealed = await journal.close()
    log.info("journal sealed on shutdown", extra={"batches": len(sealed)})


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sync runs while the app serves; it stops after the journal is sealed."""
    scheduler = app[SCHEDULER]
    if scheduler is not None:
        await scheduler.start()
    yield
    if scheduler is not None:
        await scheduler.shutdown()


def create_app(
    config: CollectorConfig,
    *,
    journal: Journal,
    spool: Spool,
    pipeline: Pipeline,
    scheduler: SyncScheduler | None,
    metrics: Metrics,
    info: dict[str, Any] | None = None,
    reporter: StatusReporter | None = None,
    budget: MemoryBudget | None = None,
) -> web.Application:
    """The intake app; the caller owns the parts and has already recovered the journal."""
    app = web.Application(client_max_size=config.intake.max_body_bytes, middlewares=[error_middleware])
    app[CONFIG] = config
    app[BUDGET] = budget or MemoryBudget.from_mb(config.agent.memory_budget_mb)
    app[JOURNAL] = journal
    app[SPOOL] = spool
    app[PIPELINE] = pipeline
    app[SCHEDULER] = scheduler
    app[METRICS] = metrics
    app[REPORTER] = reporter
    app[INTAKE_OPEN] = asyncio.Event()
    app[INTAKE_OPEN].set()
    app[INFO] = {
        "version": "unknown",
        "started": Moment.now(),
        **(info or {}),
    }
    app.cleanup_ctx.append(_scheduler_ctx)  # registered first, so it stops last
    app.cleanup_ctx.append(_journal_ctx)
    app.router.add_post("/v1/records", post_records)
    app.router.add_get("/v1/status", get_status)
    app.router.add_post("/v1/flush", post_flush)
    app.router.add_post("/v1/sync", post_sync)
    app.router.add_post("/v1/spool/requeue", post_requeue)
    app.router.add_get("/metrics", get_metrics)
    return app


def create_metrics_app(metrics: Metrics) -> web.Application:
    """Only ``GET /metrics``, for ``agent.metrics_listen`` on TCP."""
    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = metrics
    app.router.add_get("/metrics", get_metrics)
    return app
