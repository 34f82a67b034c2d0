"""The ingest HTTP app: upload API, admin API, health and metrics.

    PUT    /v1/batches/{batch_id}   device token; Parquet body → 201 / 200 replay / 4xx / 429 / 503
    PUT    /v1/status/{status_id}   device token; a status document (JSON) → 201 stored / 200 replay / 4xx / 429
    POST   /v1/schemas              admin token; a model schema file (TOML) → 201 registered / 200 / 409
    GET    /v1/schemas              admin token; every registered schema
    POST   /v1/sql                  admin or viewer token; {"sql", "params", "export"} → Arrow IPC stream (or JSON), capped
    POST   /v1/devices              admin token; {"name"} → {"name", "token"}
    DELETE /v1/devices/{name}       admin token; revokes at once
    GET    /v1/policies             device token; the sampling policies that apply to it (ETag → 304)
    POST   /v1/policies/{model}     admin token; {"policy": TOML text, "devices", "tag", "source"} → 201
    POST   /v1/policies/{model}/rollback  admin token; {"to": version or null} → 201
    POST   /v1/devices/{name}/tags  admin token; {"add": [...], "remove": [...]} → the device's tags
    POST   /v1/feedback/{model}     admin token; labels from a labelling tool → 200 {"imported", "duplicates", "errors"}
    POST   /v1/deletions            admin token; a deletion's predicate → 200 counts (dry run) or executed + audited
    GET    /healthz, /metrics
    /dashboard..., /v1/dashboard/...   viewer or admin token, or a session (``dashboard_app``)

Every error body is ``{"error": {"code", "message", "details"}}``, aiohttp's own 404/405 included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import hashlib
import itertools
import logging
import os
import resource
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import pyarrow as pa
from aiohttp import web
from pydantic import ValidationError

from edgeloop.errors import (
    AuthError,
    BatchRejected,
    ConfigError,
    DiskFull,
    Forbidden,
    QueryFailed,
    QueryRefused,
    QueryTooExpensive,
    SchemaError,
    ServerOverloaded,
    StoreBusy,
    StoreClosed,
    StoreError,
    TooManyFailures,
)
from edgeloop.ingest.auth import Authenticator, DeviceRegistry, admin_token, token_file
from edgeloop.ingest.batch import EARLIEST_TIME_S, LATEST_TIME_S, check_batch_id, read_batch
from edgeloop.ingest.config import IngestConfig
from edgeloop.ingest.deletion import Deletion, apply
from edgeloop.ingest.export import JSON_OPTIONS, json_default, json_rows, wide_ints_as_text
from edgeloop.ingest.health import Refusals, prune_statuses, store_status
from edgeloop.ingest.label_import import MAX_ROWS as MAX_LABEL_ROWS_PER_CALL
from edgeloop.ingest.label_import import LabelRow, land_labels
from edgeloop.ingest.login_limit import FailedLogins
from edgeloop.ingest.metrics import Metrics
from edgeloop.ingest.pacer import Pacer
from edgeloop.ingest.policies import PolicyBook, PolicyIndex
from edgeloop.ingest.query import check_query, stream_query
from edgeloop.ingest.retention import Retention
from edgeloop.ingest.session import client_key
from edgeloop.ingest.store import Landing, Store
from edgeloop.logs import RateLimitedLogger
from edgeloop.runner import GuardedRunner, read_body
from edgeloop.schemas.device_status import MAX_STATUS_BYTES, DeviceStatus, is_status_id
from edgeloop.schemas.model_schema import ModelSchema
from edgeloop.schemas.registry import SchemaRegistry
from edgeloop.times import from_iso

__all__ = ["CONFIG", "DEVICE_FAILURES", "FAILED_LOGINS", "METRICS", "STORE", "create_app", "create_runner", "ssl_context"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PARQUET_TYPES = frozenset({"application/vnd.apache.parquet", "application/octet-stream"})
ARROW_STREAM = "application/vnd.apache.arrow.stream"
SENT_AT_HEADER = "X-Edgeloop-Sent-At"


@dataclass
class _State:
    pacer: Pacer
    draining: bool = False
    executor: ThreadPoolExecutor | None = None  # checks uploads
    sql_executor: ThreadPoolExecutor | None = None  # runs admin queries, so uploads never wait behind them
    sql_running: int = 0
    admitting: int = 0  # uploads holding a queue slot while their body is read and checked
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)  # uploads in line for a queue slot, bodies unread
    line_bytes: int = 0  # what the uploads in line hold in memory (HELD_CONNECTION_BYTES each and what was read of their bodies)
    policies: PolicyIndex = PolicyIndex()  # rebuilt on the writer after each policy or tag change
    last_status: dict[str, tuple[float, str]] = field(default_factory=dict)  # device → (monotonic time, status id)
    pruned_at: float = float("-inf")  # monotonic time the status history was last pruned
    refused_log: RateLimitedLogger = field(default_factory=lambda: RateLimitedLogger(log))  # wrong tokens: a line a minute


CONFIG = web.AppKey("config", IngestConfig)
STORE = web.AppKey("store", Store)
AUTH = web.AppKey("auth", Authenticator)
METRICS = web.AppKey("metrics", Metrics)
STATE = web.AppKey("state", _State)
REFUSALS = web.AppKey("refusals", Refusals)
FAILED_LOGINS = web.AppKey("failed_logins", FailedLogins)  # wrong admin, viewer and metrics tokens (people's), per address
DEVICE_FAILURES = web.AppKey("device_failures", FailedLogins)  # wrong device tokens, per address
DEVICE = web.RequestKey("device", str)  # the authenticated device, for counting its refused uploads
UNINVITED = web.RequestKey("uninvited", bool)  # sent Expect: 100-continue and not yet told to send its body
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PRUNE_EVERY_S = 3600.0
HELD_CONNECTION_BYTES = 32 * 1024  # an upload in line besides its body bytes: measured ~29 KiB (request, protocol, transport)


def _error(status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _json(status: int, value: Any) -> web.Response:
    try:
        body = orjson.dumps(value, default=str)
    except TypeError:  # a whole number past 64 bits, stored before the bounds: written as its digits
        body = orjson.dumps(wide_ints_as_text(value), default=str)
    return web.Response(status=status, body=body, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Turn every failure into the one error shape; count upload rejects by code."""
    retry = {"Retry-After": str(request.app[CONFIG].server.retry_after_s)}
    wrong_token = False
    try:
        if request.get(UNINVITED) and request.headers.get("Expect", "").lower() != "100-continue":
            raise BatchRejected(417, "expectation_failed", f"Expect: {request.headers['Expect']!r} is not supported; only 100-continue")
        return await handler(request)
    except BatchRejected as exc:
        response = _error(exc.status, exc.code, str(exc), exc.details)
    except Forbidden as exc:
        response = _error(403, "forbidden", str(exc))
    except AuthError as exc:
        response = _error(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
        wrong_token = True
    except TooManyFailures as exc:
        wait = {"Retry-After": str(exc.retry_after_s)}
        response = _error(429, "too_many_requests", str(exc), {"retry_after_s": exc.retry_after_s}, headers=wait)
        wrong_token = True
    except StoreBusy as exc:
        state = request.app[STATE]
        backlog = (request.app[STORE].queued if STORE in request.app else 0) + state.admitting + len(state.waiters)
        retry = {"Retry-After": str(state.pacer.retry_after_s(backlog))}
        response = _error(429, "busy", str(exc), {"retry_after_s": int(retry["Retry-After"])}, headers=retry)
    except StoreClosed as exc:
        response = _error(503, "shutting_down", str(exc), {"retry_after_s": int(retry["Retry-After"])}, headers=retry)
    except DiskFull as exc:
        log.error("disk full", extra={"error": str(exc), "path": request.path})
        response = _error(507, "disk_full", str(exc), {"retry_after_s": int(retry["Retry-After"])}, headers=retry)
    except (ServerOverloaded, MemoryError) as exc:
        # Our fault, not the sender's: a 4xx here would make a device dead-letter a good batch.
        log.error("out of memory", extra={"error": str(exc), "path": request.path})
        response = _error(503, "overloaded", f"the server is out of memory: {exc}; retry later",
                          {"retry_after_s": int(retry["Retry-After"])}, headers=retry)
    except QueryRefused as exc:
        response = _error(403, "read_only", str(exc))
    except QueryTooExpensive as exc:
        # Not 408: the contract makes 408 "retry may work", and this query run again stops at the same bound.
        response = _error(422, "query_too_expensive", str(exc), {"limit": exc.limit, "value": exc.value})
    except QueryFailed as exc:
        response = _error(400, "query_failed", str(exc))
    except StoreError as exc:
        log.error("store error", extra={"error": str(exc), "path": request.path})
        response = _error(500, "store_error", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        if exc.status == 413:
            code = "too_large"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        response = _error(exc.status, code, exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason, headers=headers or None)
        if exc.status == 408:
            response.force_close()  # the sender is mid-body: its leftover bytes are no request
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unhandled error", extra={"path": request.path})
        response = _error(500, "internal", f"internal error: {type(exc).__name__}")
    if request.get(UNINVITED):
        response.force_close()  # its body was never asked for: the connection cannot carry another request
    if wrong_token:  # a flood of them must not fill the disk: one line a minute per status, counting the rest
        request.app[STATE].refused_log.log(logging.INFO, str(response.status), "wrong token refused", status=response.status,
                                           path=request.path[:100], peer=request.remote)
    if request.match_info.route.name == "put_batch":
        payload = orjson.loads(response.body)  # type: ignore[arg-type]
        request.app[METRICS].rejects.labels(payload["error"]["code"]).inc()
        _count_refusal(request, response.status, payload["error"]["code"])
    if request.match_info.route.name == "put_batch" and not wrong_token:
        log.info(
            "upload refused",
            extra={
                "status": response.status,
                "code": payload["error"]["code"],
                "batch_id": request.match_info.get("batch_id"),
                "peer": request.remote,  # a 401 has no device name: the address says who tried
            },
        )
    return response


# Not refusals of the batch: the device is told to come back later (or its own connection timed out).
_NOT_REFUSALS = frozenset({408, 429})


def _count_refusal(request: web.Request, status: int, code: str) -> None:
    """A 4xx answered to a known device's upload is counted against it (a revoked token's 401 too)."""
    if not 400 <= status < 500 or status in _NOT_REFUSALS or REFUSALS not in request.app:
        return
    device = request.get(DEVICE)
    if device is None and status == 401:
        device = request.app[AUTH].revoked_device(request.headers.get("Authorization")) if AUTH in request.app else None
    if device is not None:
        request.app[REFUSALS].add(device, status, code)


def _device(request: web.Request) -> str:
    """The device whose token the request bears; only a wrong token is charged to its address (``DEVICE_FAILURES``).

    A right token never touches the limit (no lock, nothing allocated on the upload path), so a
    device behind the same NAT as a misconfigured one syncs on while the other gets 429.
    """
    try:
        return request.app[AUTH].device(request.headers.get("Authorization"))
    except AuthError:
        if wait_s := request.app[DEVICE_FAILURES].attempt(client_key(request.remote)):
            raise TooManyFailures(wait_s) from None
        raise


def _operator(request: web.Request, check: Callable[[], T]) -> T:
    """``check()`` of an admin, viewer or metrics token as one of the address's tries (``FAILED_LOGINS``), as on the login form.

    The try is taken before the token is looked at, so tries sent at once get no more than the
    burst and an address past it is refused whatever it sends (a person may have chosen the token);
    a right token, or a known one refused for its role (403), gives its try back.
    """
    failures, client = request.app[FAILED_LOGINS], client_key(request.remote)
    if wait_s := failures.attempt(client):
        raise TooManyFailures(wait_s)
    try:
        result = check()
    except Forbidden:
        failures.succeeded(client)
        raise
    failures.succeeded(client)
    return result


async def put_batch(request: web.Request) -> web.Response:
    received_at = datetime.now(UTC)
    started = time.perf_counter()
    app = request.app
    config, store, state = app[CONFIG], app[STORE], app[STATE]
    if state.draining:
        raise StoreClosed("the server is shutting down; retry later")
    device = request[DEVICE] = _device(request)
    batch_id = check_batch_id(request.match_info["batch_id"])
    if request.content_type not in PARQUET_TYPES:
        raise BatchRejected(
            415, "unsupported_media_type",
            f"content type {request.content_type!r} is not accepted; send application/vnd.apache.parquet",
        )
    sent_at = _sent_at(request.headers.get(SENT_AT_HEADER))
    limit = config.limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BatchRejected(
            413, "too_large", f"the body is {request.content_length} bytes, over the limit of {limit}",
            {"bytes": request.content_length, "limit": limit},
        )
    # A slot is held from before the body is read until the batch has landed, so a burst of
    # uploads waits or is refused up front instead of decoded and then refused.
    await _admit(state, store, config, request)
    future = None
    try:
        if request.get(UNINVITED):
            await _invite_body(request)
        body = await read_body(request, max_bytes=limit, timeout_s=config.server.body_timeout_s)
        app[METRICS].bytes_received.labels(device).inc(len(body))
        loop = asyncio.get_running_loop()

        def check() -> Landing:
            # Replays and conflicts are answered by the writer, which reads the ledger once per group.
            batch = read_batch(
                body, batch_id=batch_id, limits=config.limits, schema_for=store.schema_for, reserve=store.reserve,
                sha256=hashlib.sha256(body).hexdigest(),
            )
            return Landing(batch, device, received_at, sent_at)

        landing = await loop.run_in_executor(state.executor, check)
        future = store.submit(landing)  # the queue holds the slot from here
    finally:
        state.admitting -= 1
        if future is None:
            _free_slot(state, store, config.store.queue_depth)
    try:
        status, receipt = await asyncio.wrap_future(future)
    finally:
        _free_slot(state, store, config.store.queue_depth)
    if status == 201:
        app[METRICS].landing_seconds.observe(time.perf_counter() - started)
    if status == 200:
        app[METRICS].replays.inc()
    log.info(
        "upload landed" if status == 201 else "upload already landed",
        extra={"device": device, "batch_id": batch_id, "bytes": len(body), "rows": receipt.get("rows"), "status": status},
    )
    return _json(status, {**receipt, "status": "landed" if status == 201 else "already_landed"})


async def _admit(state: _State, store: Store, config: IngestConfig, request: web.Request) -> None:
    """Take a landing-queue slot, waiting up to ``server.admit_wait_s`` in line for one; StoreBusy if none frees.

    While it waits its connection is not read (``_park``): the body stays in the kernel's socket
    buffers instead of the event loop's heap, and a burst in line costs the loop no reads.
    """
    depth = config.store.queue_depth
    full = f"the landing queue is full ({depth} batches)"
    if store.queued + state.admitting < depth and not state.waiters:
        state.admitting += 1
        return
    if len(state.waiters) >= line_length(config) or config.server.admit_wait_s <= 0:
        raise StoreBusy(full)
    # Read before the handler ran, and no more while it waits (_park): its cost is known now.
    held = request.content.total_bytes + HELD_CONNECTION_BYTES
    budget = config.server.line_max_bytes
    if state.line_bytes + held > budget:
        raise StoreBusy(f"{full} and the uploads waiting for a place hold {state.line_bytes} bytes of the {budget} "
                        "server.line_max_bytes allows")
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    state.waiters.append(waiter)

    def give_up() -> None:
        if not waiter.done():
            state.waiters.remove(waiter)
            waiter.set_exception(StoreBusy(full))

    timer = loop.call_later(config.server.admit_wait_s, give_up)
    unpark = _park(request)
    state.line_bytes += held
    try:
        await waiter
    except asyncio.CancelledError:
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            state.admitting -= 1  # handed a slot as the request went away: pass it on
            _free_slot(state, store, depth)
        elif waiter in state.waiters:
            state.waiters.remove(waiter)
        raise
    finally:
        state.line_bytes -= held
        timer.cancel()
        unpark()


def _park(request: web.Request) -> Callable[[], None]:
    """Stop reading an upload's connection; returns what starts it again.

    Only a connection being read is paused (one aiohttp's flow control holds, or whose body is
    all in, is left alone), so the resume cannot undo aiohttp's own pause; nothing else reads or
    resumes it while its one handler waits. A sender that hangs up meanwhile is seen on resume.
    """
    transport = request.transport
    if transport is None or request.content.is_eof() or not transport.is_reading():
        return lambda: None
    transport.pause_reading()

    def unpark() -> None:
        if not transport.is_closing():
            transport.resume_reading()

    return unpark


async def _expect_continue(request: web.Request) -> None:
    """An upload that sent ``Expect: 100-continue`` is asked for its body only once it holds a queue slot (``put_batch``).

    aiohttp's own handler answers 100 Continue at once, before the token, the size and the
    queue are checked; deferring it means a refused upload, or one waiting in line, has not
    sent its body (a device on a metered link does not pay for a 429), and the bodies the
    server reads are those of the uploads it is about to land.
    """
    if request.version >= (1, 1):  # HTTP/1.0 has no 100 Continue: the expectation is ignored (RFC 9110 10.1.1)
        request[UNINVITED] = True


async def answer_expect(request: web.Request) -> None:
    """Every route but the upload: ``100-continue`` is answered at once, any other value is a JSON 417 (``error_middleware``).

    aiohttp asks a route's expect handler before the middlewares, and its default answers an
    unknown value with a plain-text 417; register every route with this one (the upload with
    ``_expect_continue``) so the answer has the one error shape.
    """
    if request.version < (1, 1):  # HTTP/1.0 has no 100 Continue: the expectation is ignored (RFC 9110 10.1.1)
        return
    request[UNINVITED] = True
    if request.headers.get("Expect", "").lower() == "100-continue":
        await _invite_body(request)


async def _invite_body(request: web.Request) -> None:
    """Send the deferred ``100 Continue``; a sender that has gone away gets a 408 it will not read."""
    try:
        await request.writer.write(CONTINUE)
    except ConnectionError:
        raise web.HTTPRequestTimeout(text="the connection closed before the body was asked for") from None
    request.writer.output_size = 0  # the response proper has not started (aiohttp's own expect handler does the same)
    request[UNINVITED] = False


def line_length(config: IngestConfig) -> int:
    """Uploads that may wait for a slot: the connections the queue leaves, but an eighth kept for quick answers.

    A burst held in line is landed as fast as slots free; one refused sleeps on a Retry-After
    that can only guess the writer's pace. The eighth kept free lets a new connection (a probe,
    a status, another device) be answered at once even while the line is full.
    """
    connections = config.server.max_connections
    return max(0, connections - config.store.queue_depth - connections // 8)


def _free_slot(state: _State, store: Store, depth: int) -> None:
    """Hand free landing-queue slots to the uploads that have waited longest (counted as theirs at once)."""
    while state.waiters and store.queued + state.admitting < depth:
        state.admitting += 1
        state.waiters.popleft().set_result(None)


async def put_status(request: web.Request) -> web.Response:
    """Store a device's status document: 201 stored, 200 the same document again, 409 its id with other content."""
    received_at = datetime.now(UTC)
    app = request.app
    config, store, state = app[CONFIG], app[STORE], app[STATE]
    if state.draining:
        raise StoreClosed("the server is shutting down; retry later")
    device = _device(request)
    status_id = request.match_info["status_id"]
    if not is_status_id(status_id):
        raise BatchRejected(400, "bad_status_id", f"{status_id[:64]!r} is not a status id (a UUID in lower-case text)")
    if request.content_type != "application/json":
        raise BatchRejected(415, "unsupported_media_type",
                            f"content type {request.content_type!r} is not accepted; send application/json")
    if request.content_length is not None and request.content_length > MAX_STATUS_BYTES:
        raise BatchRejected(413, "too_large", f"a status document is at most {MAX_STATUS_BYTES} bytes",
                            {"bytes": request.content_length, "limit": MAX_STATUS_BYTES})
    fleet = config.fleet
    now = time.monotonic()
    last = state.last_status.get(device)
    if last is not None and last[1] != status_id and now - last[0] < fleet.min_status_interval_s:
        wait_s = max(1, int(fleet.min_status_interval_s - (now - last[0]) + 0.999))
        return _error(429, "too_many_requests",
                      f"a status was stored {now - last[0]:.2f}s ago; at most one per {fleet.min_status_interval_s:g}s",
                      {"retry_after_s": wait_s}, headers={"Retry-After": str(wait_s)})
    if store.queued + state.admitting >= config.store.queue_depth:
        raise StoreBusy(f"the landing queue is full ({config.store.queue_depth} batches)")
    body = await read_body(request, max_bytes=MAX_STATUS_BYTES, timeout_s=config.server.body_timeout_s)
    status = _status_document(body)
    if status.status_id != status_id:
        raise BatchRejected(422, "invalid_status", f"the document's status_id {status.status_id} is not the one in the URL",
                            [{"field": "status_id", "message": "must equal the id in the URL"}])
    sha256 = hashlib.sha256(body).hexdigest()
    prune = now - state.pruned_at >= PRUNE_EVERY_S
    if prune:
        state.pruned_at = now

    def write(con: Any) -> tuple[int, dict[str, Any]]:
        if prune:
            pruned = prune_statuses(con, fleet.status_retention_days, received_at)
            if pruned:
                log.info("status history pruned", extra={"rows": pruned, "retention_days": fleet.status_retention_days})
        return store_status(con, device, status, sha256, received_at)

    code, receipt = await asyncio.wrap_future(store.call(write))
    if code == 201:
        state.last_status[device] = (now, status_id)
    log.info("status stored" if code == 201 else "status already stored",
             extra={"device": device, "status_id": status_id, "outcome": status.sync.outcome})
    return _json(code, receipt)


MAX_STATUS_ERRORS = 20


def _status_document(body: bytes) -> DeviceStatus:
    """Validate a status document: 400 if it is not JSON, 422 naming each bad field (never echoing its value)."""
    try:
        return DeviceStatus.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise BatchRejected(400, "bad_json", "the status document is not JSON") from exc
        details = [
            {"field": ".".join(str(part) for part in error["loc"])[:200], "message": error["msg"][:200]}
            for error in errors[:MAX_STATUS_ERRORS]
        ]
        raise BatchRejected(
            422, "invalid_status", f"the status document has {len(errors)} invalid field(s); the first: "
            f"{details[0]['field'] or 'document'}: {details[0]['message']}", details,
        ) from exc


def _sent_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = from_iso(value)
        parsed = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):  # year 1 east of UTC, or year 9999 west of it
        parsed = None
    if parsed is None or not EARLIEST_TIME_S <= parsed.timestamp() <= LATEST_TIME_S:
        raise BatchRejected(
            400, "bad_sent_at", f"{SENT_AT_HEADER} must be an RFC 3339 time with a zone, in years 1 to 9999 in UTC, got {value[:64]!r}"
        )
    return parsed


HEALTH_PROBE_S = 5.0


async def healthz(request: web.Request) -> web.Response:
    """200 only if an upload could land now: not draining, writer alive, database readable, disk above its reserve."""
    state, store = request.app[STATE], request.app[STORE]
    problem = "the server is shutting down" if state.draining else store.problem()
    if problem is None:
        try:
            # A read through DuckDB fails once a fatal error has invalidated the database.
            async with asyncio.timeout(HEALTH_PROBE_S):
                await asyncio.get_running_loop().run_in_executor(None, lambda: store.cursor().execute("SELECT 1").fetchall())
        except TimeoutError:
            problem = f"the database did not answer a probe within {HEALTH_PROBE_S:g}s"
        except Exception as exc:  # noqa: BLE001 - any failure of the probe is what health reports
            problem = f"the database cannot be read: {str(exc)[:300]}"
    status = "draining" if state.draining else "ok" if problem is None else "failing"
    body = {"status": status, "queued": store.queued, "problem": problem}
    return _json(200 if problem is None else 503, body)


async def metrics(request: web.Request) -> web.Response:
    if request.app[CONFIG].server.metrics_token_file is not None:  # its series name the fleet's devices
        _operator(request, lambda: request.app[AUTH].metrics(request.headers.get("Authorization")))
    return web.Response(body=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")


async def _admin_json(request: web.Request, *, read_only: bool = False, max_bytes: int = 0) -> dict[str, Any]:
    header = request.headers.get("Authorization")
    _operator(request, lambda: request.app[AUTH].reader(header) if read_only else request.app[AUTH].admin(header))
    try:
        value = orjson.loads(await _read_small(request, max_bytes or MAX_ADMIN_BODY_BYTES))
    except orjson.JSONDecodeError as exc:
        raise BatchRejected(400, "bad_json", f"the body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BatchRejected(400, "bad_json", "the body must be a JSON object")
    return value


async def post_sql(request: web.Request) -> web.StreamResponse:
    """Stream one allowed SELECT's rows as Arrow IPC (or JSON), capped in rows and bytes unless an export."""
    payload = await _admin_json(request, read_only=True)  # the viewer token reads too: the allow-list keeps it read-only
    sql, params, export = payload.get("sql"), payload.get("params") or [], payload.get("export", False)
    if not isinstance(sql, str) or not isinstance(params, list) or not isinstance(export, bool):
        raise BatchRejected(400, "bad_json", 'send {"sql": "SELECT ...", "params": [...], "export": false}')
    app = request.app
    settings, state = app[CONFIG].store, app[STATE]
    if state.sql_running >= settings.sql_max_concurrent:
        raise StoreBusy(f"{state.sql_running} queries are running, the most store.sql_max_concurrent allows; retry later")
    state.sql_running += 1
    try:
        as_json = "application/json" in request.headers.get("Accept", "")
        limits = None if export else (settings.sql_max_result_rows, settings.sql_max_result_bytes)
        timeout_s = None if export else settings.sql_timeout_s
        stream = _SqlStream(asyncio.get_running_loop(), app[STORE], sql, params, as_json=as_json, limits=limits, timeout_s=timeout_s)
        asyncio.get_running_loop().run_in_executor(state.sql_executor, stream.produce)
        # aiohttp does not cancel a handler whose client left: an export (never timed out) would run on.
        watcher = asyncio.create_task(_stop_when_gone(request, stream))
        try:
            tables = await stream.start()  # refusals and errors arrive here, before any byte is sent
            response = web.StreamResponse(headers={"X-Edgeloop-Tables": ",".join(sorted(tables))})
            response.content_type = "application/json" if as_json else ARROW_STREAM
            await response.prepare(request)
            try:
                async for chunk in stream.chunks():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionError:
                log.info("sql client went away before the end of its result", extra={"path": request.path})
            except _Broken:  # no clean end can be written: a cut connection is the only honest answer
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
            return response
        finally:
            watcher.cancel()
            stream.stop()
    finally:
        state.sql_running -= 1


SQL_CLIENT_CHECK_S = 0.25


async def _stop_when_gone(request: web.Request, stream: _SqlStream) -> None:
    """Interrupt the query once its client's connection is closed."""
    while True:
        await asyncio.sleep(SQL_CLIENT_CHECK_S)
        transport = request.transport
        if transport is None or transport.is_closing():
            stream.stop()
            return


class _SqlStream:
    """Runs a query on the SQL pool and hands its encoded chunks to the event loop, a few at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, store: Store, sql: str, params: list[Any], *,
                 as_json: bool, limits: tuple[int, int] | None, timeout_s: float | None) -> None:
        self.loop, self.store, self.sql, self.params = loop, store, sql, params
        self.as_json, self.limits, self.timeout_s = as_json, limits, timeout_s
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=4)
        self.stopped = threading.Event()
        self.finished = threading.Event()
        self.cursor: Any = None

    async def start(self) -> frozenset[str]:
        kind, value = await self.queue.get()
        if kind == "error":
            raise value
        return value

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            kind, value = await self.queue.get()
            if kind == "end":
                return
            if kind == "abort":
                raise _Broken
            yield value

    def stop(self) -> None:
        self.stopped.set()
        cursor = self.cursor
        if cursor is not None and not self.finished.is_set():
            cursor.interrupt()  # an abandoned query stops now, not at its next batch

    def _put(self, item: tuple[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                if self.stopped.is_set():  # the client went away: stop producing
                    future.cancel()
                    raise _Abandoned from None

    def produce(self) -> None:
        """Run the query; whatever happens the handler gets its last item ("end", or "abort" if the stream broke)."""
        try:
            self._produce()
        except _Abandoned:
            pass
        except Exception:  # even the error tail could not be written: the client must not wait for it
            log.exception("the query's result stream broke")
            try:
                self._put(("abort", None))
            except _Abandoned:
                pass
        finally:
            self.finished.set()

    def _produce(self) -> None:
        cursor = self.cursor = self.store.cursor()
        started = False
        try:
            checked = check_query(cursor, self.sql)
            batches = stream_query(cursor, self.sql, self.params, timeout_s=self.timeout_s, checked=checked)
            try:
                first = next(batches)
                encoder = _JsonEncoder(first.schema) if self.as_json else _ArrowEncoder.checked(first.schema)
                self._put(("start", checked.tables))
                started = True
                self._put(("chunk", encoder.begin()))
                rows = size = 0
                note: dict[str, str] = {}
                for batch in itertools.chain([first], batches):
                    if self.limits is not None:
                        max_rows, max_bytes = self.limits
                        fit = min(batch.num_rows, max_rows - rows)
                        if batch.num_rows and size + batch.nbytes > max_bytes:
                            fit = min(fit, int(batch.num_rows * max(max_bytes - size, 0) / batch.nbytes))
                        if fit < batch.num_rows:
                            batch = batch.slice(0, fit)
                            limit = "sql_max_result_rows" if rows + fit >= max_rows else "sql_max_result_bytes"
                            note = {"truncated": "true", "reason": f"the result is cut at store.{limit}"}
                    chunk = encoder.batch(batch)
                    rows += batch.num_rows
                    size += batch.nbytes
                    self._put(("chunk", chunk))
                    if note:
                        break
                self._put(("chunk", encoder.end(rows, note)))
            finally:
                batches.close()
        except _Abandoned:
            return
        except Exception as exc:
            if not isinstance(exc, (QueryRefused, QueryFailed, StoreError)):
                log.exception("query failed unexpectedly")
                exc = StoreError(f"the query failed: {type(exc).__name__}: {exc}")
            try:
                if not started:
                    self._put(("error", exc))
                    return
                self._put(("chunk", encoder.end(-1, {}, _tail_error(exc))))
            except _Abandoned:
                return
        try:
            self._put(("end", None))
        except _Abandoned:
            return


def _tail_error(exc: Exception) -> dict[str, Any]:
    """The error a stream already under way ends with: the code and details the same error has as a status."""
    if isinstance(exc, QueryTooExpensive):
        return {"code": "query_too_expensive", "message": str(exc), "details": {"limit": exc.limit, "value": exc.value}}
    code = ("read_only" if isinstance(exc, QueryRefused) else "query_failed" if isinstance(exc, QueryFailed)
            else "shutting_down" if isinstance(exc, StoreClosed) else "store_error")
    return {"code": code, "message": str(exc), "details": None}


class _Abandoned(Exception):
    """The HTTP client stopped reading; the producer gives up."""


class _Broken(Exception):
    """The producer failed after the response started and could not write an error tail: cut the connection."""


class _ArrowEncoder:
    """Arrow IPC stream; the last message is an empty batch whose metadata says if the rows were cut."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.sink = _Chunks()
        self.writer = pa.ipc.new_stream(self.sink, schema)

    @classmethod
    def checked(cls, schema: pa.Schema) -> _ArrowEncoder:
        """An encoder for ``schema``, or QueryFailed before any byte is sent if Arrow IPC cannot write its types."""
        try:
            cls(schema).end(0, {})  # an empty stream: the writer refuses a type it cannot carry (a UNION) here
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
            raise QueryFailed(f"the result cannot be sent as Arrow IPC ({exc}): cast that column (e.g. ::VARCHAR) "
                              "or ask for JSON (Accept: application/json)") from exc
        return cls(schema)

    def begin(self) -> bytes:
        return self.sink.take()

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self.writer.write_batch(batch)
        return self.sink.take()

    def end(self, rows: int, note: dict[str, str], error: dict[str, Any] | None = None) -> bytes:
        if error is not None:
            note = {**note, "error": error["message"], "error_code": error["code"]}
            note.update({key: str(value) for key, value in (error["details"] or {}).items() if value is not None})
        metadata = {f"edgeloop.{key}": value for key, value in {"rows": str(rows), **note}.items()}
        self.writer.write_batch(pa.RecordBatch.from_pylist([], schema=self.schema), custom_metadata=metadata)
        self.writer.close()
        return self.sink.take()


class _JsonEncoder:
    """``{"columns", "rows", "truncated"}``, written row by row; an error after the first row is reported last."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.first = True

    def begin(self) -> bytes:
        return b'{"columns":' + orjson.dumps(self.schema.names) + b',"rows":['

    def batch(self, batch: pa.RecordBatch) -> bytes:
        rows = json_rows(batch)
        if not rows:
            return b""
        body = b",".join(orjson.dumps(row, default=json_default, option=JSON_OPTIONS) for row in rows)
        prefix, self.first = (b"" if self.first else b","), False
        return prefix + body

    def end(self, rows: int, note: dict[str, str], error: dict[str, Any] | None = None) -> bytes:
        tail: dict[str, Any] = {"truncated": bool(note) or error is not None, "row_count": rows}
        if "reason" in note:
            tail["reason"] = note["reason"]
        if error is not None:
            tail["error"] = error
        return b"]," + orjson.dumps(tail)[1:]


class _Chunks:
    """A write-only file for the IPC writer; ``take`` hands over what was written since the last take."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


MAX_SCHEMA_BYTES = 1024 * 1024
MAX_ADMIN_BODY_BYTES = 1024 * 1024


async def _read_small(request: web.Request, max_bytes: int) -> bytes:
    return await read_body(request, max_bytes=max_bytes, timeout_s=request.app[CONFIG].server.body_timeout_s)


async def post_schema(request: web.Request) -> web.Response:
    """Register a model schema file (its TOML text); 201 when new, 200 when already registered, 409 when incompatible."""
    _operator(request, lambda: request.app[AUTH].admin(request.headers.get("Authorization")))
    if request.content_length is not None and request.content_length > MAX_SCHEMA_BYTES:
        raise BatchRejected(413, "too_large", f"a schema file is at most {MAX_SCHEMA_BYTES} bytes")
    try:
        text = (await _read_small(request, MAX_SCHEMA_BYTES)).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchRejected(400, "bad_schema", f"the schema file is not UTF-8: {exc}") from exc
    try:
        schema = ModelSchema.from_toml(text, source=request.headers.get("X-Edgeloop-Source", "uploaded schema")[:200])
    except SchemaError as exc:
        raise BatchRejected(422, "bad_schema", str(exc)) from exc
    receipt = await asyncio.wrap_future(request.app[STORE].register(schema))
    return _json(201 if receipt["status"] == "registered" else 200, receipt)


async def get_schemas(request: web.Request) -> web.Response:
    _operator(request, lambda: request.app[AUTH].admin(request.headers.get("Authorization")))
    schemas = sorted(request.app[STORE].catalog, key=lambda schema: (schema.name, schema.version))
    return _json(200, {"schemas": [
        # With the comparison declarations, so a CLI through the server sees the schema the file would give it.
        {"model": schema.name, "version": schema.version, "fingerprint": schema.fingerprint,
         "schema": {**schema.canonical(), **schema.comparison()}}
        for schema in schemas
    ]})


async def post_device(request: web.Request) -> web.Response:
    payload = await _admin_json(request)
    name = payload.get("name")
    if not isinstance(name, str):
        raise BatchRejected(400, "bad_json", 'send {"name": "<device name>"}')
    token = await _device_change(request, lambda con: DeviceRegistry.add(con, name))
    log.info("device added", extra={"device": name})
    return _json(201, {"name": name, "token": token})


async def delete_device(request: web.Request) -> web.Response:
    _operator(request, lambda: request.app[AUTH].admin(request.headers.get("Authorization")))
    name = request.match_info["name"]
    await _device_change(request, lambda con: DeviceRegistry.revoke(con, name))
    log.info("device revoked", extra={"device": name})
    return _json(200, {"name": name, "revoked": True})


async def _device_change(request: web.Request, change: Callable[[Any], Any]) -> Any:
    """Apply a device change on the writer and refresh the in-memory tokens in the same step."""
    auth = request.app[AUTH]

    def apply(con: Any) -> Any:
        result = change(con)
        auth.reload(DeviceRegistry.live(con), DeviceRegistry.revoked(con))
        return result

    try:
        return await asyncio.wrap_future(request.app[STORE].call(apply))
    except (StoreBusy, StoreClosed, DiskFull):
        raise
    except StoreError as exc:  # the registry's own refusals: a name taken, no such device
        raise BatchRejected(400, "device_error", str(exc)) from exc


async def get_policies(request: web.Request) -> web.Response:
    """The sampling policies that apply to the calling device, one per model; 304 when its ETag is current."""
    device = _device(request)
    document, etag = request.app[STATE].policies.for_device(device)
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    response = _json(200, document)
    response.headers["ETag"] = etag
    return response


async def post_policy(request: web.Request) -> web.Response:
    payload = await _admin_json(request)
    text, devices, tag = payload.get("policy"), payload.get("devices"), payload.get("tag")
    if not isinstance(text, str) or not all(value is None or isinstance(value, str) for value in (devices, tag)):
        raise BatchRejected(400, "bad_json", 'send {"policy": "<TOML text>", "devices": null or "pattern", "tag": null or "tag"}')
    model, source = request.match_info["model"], str(payload.get("source") or "uploaded policy")[:200]
    receipt = await _policy_change(
        request, lambda con: PolicyBook.set(con, request.app[STORE].catalog, model, text, source=source, devices=devices, tag=tag)
    )
    log.info("policy set", extra={key: receipt[key] for key in ("model", "version", "devices", "tag")})
    return _json(201, receipt)


async def post_policy_rollback(request: web.Request) -> web.Response:
    payload = await _admin_json(request)
    to = payload.get("to")
    if to is not None and (not isinstance(to, int) or isinstance(to, bool)):
        raise BatchRejected(400, "bad_json", 'send {"to": <version> or null}')
    model = request.match_info["model"]
    receipt = await _policy_change(request, lambda con: PolicyBook.rollback(con, request.app[STORE].catalog, model, to))
    log.info("policy rolled back", extra={key: receipt[key] for key in ("model", "version", "note")})
    return _json(201, receipt)


async def post_device_tags(request: web.Request) -> web.Response:
    payload = await _admin_json(request)
    add, remove = payload.get("add", []), payload.get("remove", [])
    if not isinstance(add, list) or not isinstance(remove, list) or len(add) + len(remove) > 64:
        raise BatchRejected(400, "bad_json", 'send {"add": [tags], "remove": [tags]} (at most 64)')
    name = request.match_info["name"]
    return _json(200, await _policy_change(request, lambda con: PolicyBook.tag(con, name, add, remove)))


async def _policy_change(request: web.Request, change: Callable[[Any], Any]) -> Any:
    """Apply a policy or tag change on the writer and rebuild the index devices are answered from."""
    state = request.app[STATE]

    def apply(con: Any) -> Any:
        result = change(con)
        state.policies = PolicyIndex.load(con)
        return result

    return await asyncio.wrap_future(request.app[STORE].call(apply))
async def post_feedback(request: web.Request) -> web.Response:
    """Land labels from a labelling tool (``edgeloop-ingest feedback import``) on the writer; per-row errors."""
    payload = await _admin_json(request, max_bytes=request.app[CONFIG].limits.max_body_bytes)
    model = request.match_info["model"]
    schema = request.app[STORE].catalog.latest(model)
    if schema is None:
        raise BatchRejected(404, "unknown_model", f"no model named {model!r} is registered")
    rows, source, tag = payload.get("rows"), payload.get("source"), payload.get("tag")
    if not isinstance(rows, list) or not isinstance(source, str) or not isinstance(tag, str) or not 0 < len(tag) <= 200:
        raise BatchRejected(400, "bad_json", 'send {"source": "...", "tag": "...", "rows": [...]}')
    if len(rows) > MAX_LABEL_ROWS_PER_CALL:
        raise BatchRejected(413, "too_many_rows", f"at most {MAX_LABEL_ROWS_PER_CALL} labels per request")
    labels = [LabelRow.from_json(row) for row in rows]
    limit = request.app[CONFIG].limits.max_value_bytes
    result = await asyncio.wrap_future(request.app[STORE].call(
        lambda con: land_labels(con, schema, labels, source=source, tag=f"import:{tag}", max_value_bytes=limit)))
    log.info("labels imported", extra={"model": model, "source": source, "imported": result["imported"],
                                       "duplicates": result["duplicates"], "errors": len(result["errors"])})
    return _json(200, result)


async def post_deletion(request: web.Request) -> web.Response:
    """Count (dry run) or delete a predicate's rows on the writer, audit them, then rewrite the file."""
    payload = await _admin_json(request)
    execute, by = payload.get("execute", False), payload.get("by") or "admin-api"
    if not isinstance(execute, bool) or not isinstance(by, str):
        raise BatchRejected(400, "bad_deletion", '"execute" is true or false and "by" a name')
    deletion = Deletion.from_json(payload)
    store = request.app[STORE]
    keep_days = request.app[CONFIG].store.tombstone_days
    result = await asyncio.wrap_future(store.call(
        lambda con: apply(con, deletion, store.catalog, execute=execute, by=by, tombstone_days=keep_days)))
    if execute and store.lake:  # no file of ours to rewrite: the lake's own compact expires the snapshots
        result["file_note"] = "a lake keeps deleted rows in older snapshots until `edgeloop-ingest compact` expires them"
        log.info("rows deleted", extra=result)
    elif execute:
        try:
            before, after = await asyncio.wrap_future(store.compact())
            result.update(file_bytes_before=before, file_bytes_after=after)
        except StoreError as exc:  # the rows are deleted and audited: say so, and that the bytes may remain
            log.error("rows deleted but the file was not rewritten", extra={"error": str(exc)})
            result["compaction_error"] = str(exc)
        log.info("rows deleted", extra=result)
    return _json(200, result)


M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS_UNDER_LIMIT = 2


def _fit_allocators() -> None:
    """Keep a burst of big uploads from holding memory after it (called before the store starts its threads).

    Freed Arrow buffers go back to the OS at once. Under an address-space limit (RLIMIT_AS), what
    is reserved counts as much as what is used: glibc gives each thread an arena reserving 64 MiB
    and jemalloc keeps its mappings, so the server answered 503 for good after one burst
    (measured: 1.5 GB reserved, 350 MB resident). There Arrow uses the system allocator and
    glibc keeps to two arenas.
    """
    if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
        if pa.default_memory_pool().backend_name == "jemalloc":
            pa.jemalloc_set_decay_ms(0)
        return
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS_UNDER_LIMIT)
    except (AttributeError, OSError):
        pass  # not glibc: its arenas are not the problem
    log.info("address space limited: Arrow on the system allocator, two malloc arenas",
             extra={"rlimit_as_bytes": resource.getrlimit(resource.RLIMIT_AS)[0]})


async def _resources(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    loop = asyncio.get_running_loop()
    state = app[STATE]
    _fit_allocators()
    # One check thread per core: with two more, at a 1,000-upload burst the checks took the writer's core (row 7 pairs).
    state.executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="edgeloop-ingest")
    state.sql_executor = ThreadPoolExecutor(max_workers=config.store.sql_max_concurrent, thread_name_prefix="edgeloop-sql")
    store_class = app[_STORE_CLASS]
    metrics_ = app[METRICS]

    def on_landed(landed: list[tuple[Landing, dict[str, Any], float]]) -> None:
        for landing, receipt, _ in landed:
            metrics_.batches.labels(landing.batch.model).inc()
            metrics_.rows.labels(landing.batch.model).inc(landing.batch.rows - receipt["duplicates"] - receipt["erased"])
            metrics_.duplicates.labels(landing.batch.model).inc(receipt["duplicates"])
            metrics_.erased.labels(landing.batch.model).inc(receipt["erased"])
        metrics_.commit_seconds.observe(landed[0][2])
        metrics_.group_batches.observe(len(landed))
        state.pacer.landed(len(landed), more_waiting=app[STORE].queued + state.admitting > len(landed))

    token = admin_token(config.server.admin_token_file, create=True)  # refused before the database is touched
    viewer = token_file(config.server.viewer_token_path, create=True, what="viewer")
    if viewer == token:
        raise ConfigError(f"{config.server.viewer_token_path}: the viewer token must differ from the admin token")
    metrics_file = config.server.metrics_token_file
    metrics_token = token_file(metrics_file, create=True, what="metrics") if metrics_file else None
    store = await loop.run_in_executor(None, lambda: store_class(config.store.db_path, config.store, on_landed=on_landed))
    app[STORE] = store
    if config.server.schemas_dir is not None:
        await _register_dir(store, config.server.schemas_dir)
    app[AUTH] = Authenticator(DeviceRegistry.live(store.cursor()), token, viewer, DeviceRegistry.revoked(store.cursor()),
                              metrics_token=metrics_token)
    if metrics_token is None:
        log.warning("/metrics is open: anyone who reaches the port reads it, and its series name every device that "
                    "uploads; set server.metrics_token_file to require a bearer token")
    app[REFUSALS] = Refusals(store.call)
    state.policies = PolicyIndex.load(store.cursor())
    log.info("store open", extra={"db_path": str(config.store.db_path), "backend": config.store.backend})
    # Replicas of a lake share tokens and schemas: re-read them, so a revoke through another replica holds here.
    refresher = asyncio.create_task(_refresh(app)) if config.store.backend == "ducklake" else None
    retention = Retention(store, config.store)
    retention.start()
    try:
        yield
    finally:
        await retention.shutdown()
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        state.sql_executor.shutdown(wait=False, cancel_futures=True)
        store.interrupt_readers()
        await loop.run_in_executor(None, store.close, config.server.shutdown_timeout_s)
        state.executor.shutdown(wait=True)
        log.info("store closed", extra={"db_path": str(config.store.db_path)})


async def _refresh(app: web.Application) -> None:
    """Every ``lake_refresh_s``: the lake's live device tokens, schemas and policies; never dies, logs a failure once a minute."""
    period_s = app[CONFIG].store.lake_refresh_s
    loop = asyncio.get_running_loop()
    logged_at = 0.0
    while True:
        await asyncio.sleep(period_s)
        read_at = time.monotonic()
        try:
            store = app[STORE]
            live, policies = await loop.run_in_executor(
                app[STATE].executor, lambda: (store.refresh(), PolicyIndex.load(store.cursor()))
            )
        except Exception as exc:  # the catalog may be briefly unreachable: keep the last tokens
            if loop.time() - logged_at > 60:
                logged_at = loop.time()
                log.warning("re-reading tokens and schemas from the lake failed", extra={"error": str(exc)[:300]})
            continue
        app[AUTH].reload(live, read_at=read_at)
        app[STATE].policies = policies  # policies set through another replica


async def _register_dir(store: Store, folder: Any) -> None:
    """Register every schema file of ``server.schemas_dir``; one that cannot be registered stops the start."""
    try:
        registry = SchemaRegistry.from_dir(folder)
        for schema in registry:
            receipt = await asyncio.wrap_future(store.register(schema))
            log.info("schema from schemas_dir", extra={**receipt, "source": schema.source})
    except (SchemaError, BatchRejected) as exc:
        store.close()
        raise ConfigError(f"server.schemas_dir: {exc}") from exc


async def _drain(app: web.Application) -> None:
    """On shutdown, refuse new uploads with 503 while queued ones finish landing."""
    app[STATE].draining = True
    if STORE in app:
        app[STORE].interrupt_readers()  # a long query or export does not hold up SIGTERM
    log.info("draining: new uploads get 503", extra={"queued": app[STORE].queued if STORE in app else 0})


_STORE_CLASS = web.AppKey("store_class", type)


def create_app(config: IngestConfig, *, store_class: type[Store] | None = None) -> web.Application:
    """Build the ingest app; the database opens when the app starts (cleanup_ctx)."""
    if store_class is None and config.store.backend == "ducklake":
        from edgeloop.ingest.lake import LakeStore  # psycopg and the extensions come with the lake extra only

        store_class = LakeStore
    app = web.Application(middlewares=[error_middleware], client_max_size=config.limits.max_body_bytes)
    app[CONFIG] = config
    server = config.server
    app[FAILED_LOGINS] = FailedLogins(burst=server.login_failures_burst, refill_s=server.login_failure_refill_s)
    app[DEVICE_FAILURES] = FailedLogins(burst=server.login_failures_burst, refill_s=server.login_failure_refill_s)
    app[STATE] = _State(Pacer(default_s=config.server.retry_after_s, max_s=config.server.retry_after_max_s))
    app[_STORE_CLASS] = store_class or Store
    app[METRICS] = Metrics(lambda: app[STORE].queued if STORE in app else 0, lambda: (len(app[STATE].waiters), app[STATE].line_bytes))
    app.cleanup_ctx.append(_resources)
    app.on_shutdown.append(_drain)
    app.router.add_put("/v1/batches/{batch_id}", put_batch, name="put_batch", expect_handler=_expect_continue)
    app.router.add_put("/v1/status/{status_id}", put_status, name="put_status", expect_handler=answer_expect)
    app.router.add_post("/v1/schemas", post_schema, expect_handler=answer_expect)
    app.router.add_get("/v1/schemas", get_schemas, expect_handler=answer_expect)
    app.router.add_post("/v1/sql", post_sql, expect_handler=answer_expect)
    app.router.add_post("/v1/devices", post_device, expect_handler=answer_expect)
    app.router.add_delete("/v1/devices/{name}", delete_device, expect_handler=answer_expect)
    app.router.add_get("/v1/policies", get_policies, expect_handler=answer_expect)
    app.router.add_post("/v1/policies/{model}", post_policy, expect_handler=answer_expect)
    app.router.add_post("/v1/policies/{model}/rollback", post_policy_rollback, expect_handler=answer_expect)
    app.router.add_post("/v1/devices/{name}/tags", post_device_tags, expect_handler=answer_expect)
    app.router.add_post("/v1/feedback/{model}", post_feedback, expect_handler=answer_expect)
    app.router.add_post("/v1/deletions", post_deletion, expect_handler=answer_expect)
    app.router.add_get("/healthz", healthz, expect_handler=answer_expect)
    app.router.add_get("/metrics", metrics, expect_handler=answer_expect)
    # The dashboard's routes need this module's app keys: imported here, not at the top, to avoid a cycle.
    from edgeloop.ingest.dashboard_app import add_dashboard_routes

    add_dashboard_routes(app)
    return app


def create_runner(app: web.Application, *, shutdown_timeout_s: float | None = None) -> GuardedRunner:
    """The runner serving ``app``: connection cap, header and body timeouts (``edgeloop/runner.py``)."""
    server = app[CONFIG].server
    return GuardedRunner(
        app, max_connections=server.max_connections, idle_timeout_s=server.idle_timeout_s, setting="server.max_connections",
        access_log=None,
        shutdown_timeout=shutdown_timeout_s if shutdown_timeout_s is not None else server.shutdown_timeout_s,
    )


def ssl_context(config: IngestConfig) -> ssl.SSLContext | None:
    """A server TLS context from the configured certificate and key, or None for plain HTTP."""
    server = config.server
    if server.tls_cert_file is None or server.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(server.tls_cert_file, server.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{server.tls_cert_file}: cannot load the TLS certificate and key: {exc}") from exc
    return context
