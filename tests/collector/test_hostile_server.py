"""The agent's sync against a hostile or broken server: a captive portal, a compromised ingest, a proxy, a bug.

Each server here is real (aiohttp or raw asyncio on 127.0.0.1); what the agent may not do
whatever it is answered: lose a spooled batch, send its token to another origin or through a
proxy it was not told about, read without a bound, wait without a bound, or take steering
that is out of range.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from edgeloop.collector.config import PolicySettings, SamplingSettings
from edgeloop.collector.policies import Policies
from edgeloop.collector.sync import Syncer
from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry
from tests.collector.sync_peer import TOKEN, make_batch, peer, receipt, spool, sync_settings, syncer  # noqa: F401 (fixtures)
from tests.sockets import listen_on_loopback

REGISTRY = SchemaRegistry.from_dir(EXAMPLES_DIR)
BAND = {"strategies": {"boundary": {"type": "confidence_band", "threshold": 0.5, "epsilon": 0.1}}}




class Recorder:
    """A server on another origin that records every request it gets and answers 200."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str | None]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.answer: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None

    async def start(self) -> Recorder:
        async def handler(request: web.Request) -> web.StreamResponse:
            self.seen.append({"path": request.path_qs, "authorization": request.headers.get("Authorization")})
            await request.read()
            if self.answer is not None:
                return await self.answer(request)
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        self.url = await listen_on_loopback(self.runner)
        return self

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def elsewhere():
    recorder = await Recorder().start()
    yield recorder
    await recorder.stop()


class RawServer:
    """A TCP server on 127.0.0.1 whose ``handle(reader, writer)`` writes whatever bytes it likes."""

    def __init__(self, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        self.handle = handle
        self.connections = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.writers.add(writer)
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                await self.handle(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                self.writers.discard(writer)
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):  # Python 3.11 has no Server.close_clients
            writer.transport.abort()
        for task in list(self.tasks):  # ended here, not cancelled by the loop's teardown (which logs an error)
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request's head and its Content-Length body; returns the body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length) if length else b""


def batch_receipt(batch, **changes):
    return receipt(batch.batch_id, batch.path.read_bytes()) | changes


# -- redirects and proxies: the token stays with sync.url ---------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_an_upload_redirect_is_not_followed_and_the_token_stays_home(spool, tmp_path, elsewhere, status):
    """A 3xx to an upload (to another origin) is not followed: nothing reaches the target, every batch stays spooled."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=status, headers={"Location": f"{elsewhere.url}/steal{request.path}"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    url = await listen_on_loopback(runner)
    try:
        batches = [make_batch(spool) for _ in range(2)]
        result = await syncer(spool, tmp_path, url).run_once()
    finally:
        await runner.cleanup()
    assert elsewhere.seen == []
    assert result.outcome == "failed" and result.reason.startswith(f"unexpected answer {status}")
    assert [b.batch_id for b in spool.pending()] == [b.batch_id for b in batches]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_the_policy_fetch_follows_no_redirect(spool, tmp_path, elsewhere, status):
    """A 3xx to GET /v1/policies is not followed: another origin can neither see the token nor steer the device."""
    elsewhere.answer = lambda request: _json({"policies": {"vibration": {"version": 9, "policy": BAND}}})

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, headers={"Location": f"{elsewhere.url}/v1/policies"})

    app = web.Application()
    app.router.add_get("/v1/policies", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    url = await listen_on_loopback(runner)
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    sync = syncer(spool, tmp_path, url)
    try:
        outcome = await sync.contact(lambda session, token: policies.fetch(session, url, token, REGISTRY))
    finally:
        await runner.cleanup()
    assert elsewhere.seen == []
    assert outcome == f"failed: HTTP {status}" and policies.remote == {}


async def _json(document) -> web.Response:
    return web.json_response(document)


async def test_proxy_variables_in_the_environment_are_not_used(peer, spool, tmp_path, monkeypatch):
    """HTTP_PROXY, HTTPS_PROXY, ALL_PROXY set (not by the operator's config) carry nothing: the batch goes to sync.url."""

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)

    trap = await RawServer(proxy).start()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, trap.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        batch = make_batch(spool)
        result = await syncer(spool, tmp_path, peer.url).run_once()
    finally:
        await trap.stop()
    assert trap.connections == 0
    assert result.outcome == "ok" and list(peer.landed) == [batch.batch_id]


# -- receipts: a batch leaves the spool only for a receipt that names it --------------------------


RECEIPTS = {
    "portal-html": lambda batch: web.Response(status=200, text="<html>Welcome to Hotel Wi-Fi</html>", content_type="text/html"),
    "empty-201": lambda batch: web.Response(status=201),
    "json-list": lambda batch: web.json_response([batch_receipt(batch)], status=201),
    "json-null": lambda batch: web.json_response(None, status=201),
    "other-batch": lambda batch: web.json_response(batch_receipt(batch, batch_id="0190f0f0-0000-7000-8000-000000000000"), status=201),
    "wrong-rows": lambda batch: web.json_response(batch_receipt(batch, rows=batch.rows + 1), status=201),
    "rows-as-text": lambda batch: web.json_response(batch_receipt(batch, rows=str(batch.rows)), status=201),
    "wrong-sha256": lambda batch: web.json_response(batch_receipt(batch, sha256="0" * 64), status=201),
    "wrong-bytes": lambda batch: web.json_response(batch_receipt(batch, bytes=1), status=201),
    "never-had-200": lambda batch: web.json_response({"batch_id": batch.batch_id, "status": "already_landed"}, status=200),
    "gzip-receipt": lambda batch: web.Response(
        status=201, body=gzip.compress(orjson.dumps(batch_receipt(batch))),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    ),
}


@pytest.mark.parametrize("kind", list(RECEIPTS))
async def test_a_2xx_that_does_not_prove_the_batch_landed_keeps_it_spooled(spool, tmp_path, kind):
    """A 200/201 whose body is not this batch's receipt (id, sha256, bytes, rows) stops the sync and keeps every batch."""
    batches = [make_batch(spool) for _ in range(2)]
    by_id = {batch.batch_id: batch for batch in batches}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return RECEIPTS[kind](by_id[request.match_info["batch_id"]])

    app = web.Application()
    app.router.add_put("/v1/batches/{batch_id}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    url = await listen_on_loopback(runner)
    try:
        result = await syncer(spool, tmp_path, url).run_once()
    finally:
        await runner.cleanup()
    assert (result.outcome, result.uploaded, result.already_present) == ("failed", 0, 0)
    assert result.reason.startswith("unexpected answer 20") and "does not prove" in result.reason
    assert [b.batch_id for b in spool.pending()] == list(by_id) and spool.rejected() == []


async def test_a_true_receipt_for_a_batch_the_server_already_had_acknowledges_it(peer, spool, tmp_path):
    """The receipt rule takes the real answers: 201 landed and 200 already landed both let the batch go."""
    make_batch(spool)
    second = make_batch(spool)
    peer.landed[second.batch_id] = "earlier"
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded, result.already_present) == ("ok", 1, 1)
    assert spool.pending() == []


async def test_a_server_that_closes_after_the_body_leaves_the_batch_to_retry(peer, spool, tmp_path):
    """A connection closed after the whole body, before any answer, is retried; the batch lands once and only then leaves."""
    batch = make_batch(spool)

    async def hang_up(request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=500)

    peer.script.extend([hang_up, hang_up])
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded, result.retries) == ("ok", 1, 2)
    assert peer.lands[batch.batch_id] == 1 and spool.pending() == []


# -- bounds on what is read and how long it takes ---------------------------------------------------


def gzip_bomb(mebibytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"0" * (1 << 20)
    return b"".join(packer.compress(block) for _ in range(mebibytes)) + packer.flush()


async def test_a_gzip_bomb_answer_is_never_inflated(spool, tmp_path):
    """A 201 whose body is 1 MiB of gzip inflating to 1 GiB is not inflated: memory stays small, the batch stays."""
    bomb = gzip_bomb(1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=201, body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_put("/v1/batches/{batch_id}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    url = await listen_on_loopback(runner)
    batch = make_batch(spool)
    tracemalloc.start()
    try:
        result = await syncer(spool, tmp_path, url).run_once()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await runner.cleanup()
    assert peak < 16 * 2**20
    assert result.outcome == "failed" and "Content-Encoding" in result.reason
    assert [b.batch_id for b in spool.pending()] == [batch.batch_id]


@pytest.mark.parametrize("shape", ["content-length", "chunked-forever"])
async def test_a_huge_or_endless_answer_is_read_to_a_bound(spool, tmp_path, shape):
    """A 201 announcing 10^12 bytes, or chunked without end, is read to a bound and not taken as a receipt."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if shape == "content-length":
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{")
        else:
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"10000\r\n" + b"[" * 0x10000 + b"\r\n"
        for _ in range(4096):  # up to 256 MiB, unless the agent hangs up first
            writer.write(chunk if shape == "chunked-forever" else b"[" * 0x10000)
            await writer.drain()

    server = await RawServer(handle).start()
    batch = make_batch(spool)
    started = time.monotonic()
    try:
        result = await syncer(spool, tmp_path, server.url).run_once()
    finally:
        await server.stop()
    assert time.monotonic() - started < 10
    assert result.outcome == "failed" and "does not prove" in result.reason
    assert [b.batch_id for b in spool.pending()] == [batch.batch_id]


@pytest.mark.parametrize("shape", ["one-huge-header", "many-headers"])
async def test_huge_headers_fail_the_attempt_and_keep_the_batch(spool, tmp_path, shape):
    """A 1 MiB header or 10,000 headers are refused by the parser: the upload fails, is retried, and the batch stays."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\n")
        if shape == "one-huge-header":
            writer.write(b"X-Pad: " + b"a" * 2**20 + b"\r\n")
        else:
            writer.write(b"".join(b"X-Pad-%d: a\r\n" % i for i in range(10_000)))
        writer.write(b"Content-Length: 0\r\n\r\n")
        await writer.drain()

    server = await RawServer(handle).start()
    batch = make_batch(spool)
    try:
        result = await syncer(spool, tmp_path, server.url, max_attempts=2).run_once()
    finally:
        await server.stop()
    assert result.outcome == "failed" and result.failed == 1 and result.retries == 1
    assert [b.batch_id for b in spool.pending()] == [batch.batch_id]


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer a byte every 0.2 s, for ever: headers first, then a body that never ends."""
    await read_request(reader)
    for byte in b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b" " * 100_000:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)


async def test_a_trickled_upload_answer_is_cut_by_request_timeout_s(spool, tmp_path):
    """An answer trickled a byte at a time is cut at request_timeout_s per attempt: the run ends, the batch stays."""
    server = await RawServer(trickle).start()
    batch = make_batch(spool)
    started = time.monotonic()
    try:
        result = await syncer(spool, tmp_path, server.url, request_timeout_s=1.0, max_attempts=2).run_once()
    finally:
        await server.stop()
    assert time.monotonic() - started < 5
    assert result.outcome == "failed" and "TimeoutError" in result.reason
    assert [b.batch_id for b in spool.pending()] == [batch.batch_id]


async def test_a_trickled_policy_answer_is_cut_by_request_timeout_s(spool, tmp_path):
    """The policy fetch of every sync is bounded by sync.request_timeout_s too, not aiohttp's 5-minute default."""
    server = await RawServer(trickle).start()
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    sync = syncer(spool, tmp_path, server.url, request_timeout_s=1.0)
    started = time.monotonic()
    try:
        outcome = await asyncio.wait_for(
            sync.contact(lambda session, token: policies.fetch(session, server.url, token, REGISTRY)), 30
        )
    finally:
        await server.stop()
    assert time.monotonic() - started < 5
    assert outcome.startswith("failed") and policies.remote == {}


# -- Retry-After: every throttle is bounded, whatever the server says --------------------------------


def http_date_in(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    "retry_after",
    ["0", "-5", "nan", "0.0001", "-inf", "garbage", "past-date", None],
)
@pytest.mark.parametrize("status", [429, 503])
async def test_throttled_forever_ends_the_sync_within_max_throttle_wait_s(peer, spool, tmp_path, status, retry_after):
    """429/503 for ever, with a Retry-After of 0, negative, NaN, tiny, garbage or past, ends the run within its budget."""
    value = http_date_in(-3600) if retry_after == "past-date" else retry_after
    headers = {} if value is None else {"Retry-After": value}
    peer.script.extend([(status, headers)] * 10_000)
    batches = [make_batch(spool) for _ in range(2)]
    sync = syncer(spool, tmp_path, peer.url, backoff_initial_s=0.05, backoff_max_s=0.4, max_throttle_wait_s=2.0)
    result = await asyncio.wait_for(sync.run_once(), 30)
    assert result.outcome == "failed" and result.reason.startswith("server throttled") and result.failed == 2
    assert len(peer.requests) < 40 and result.throttled_s <= 2.0
    assert [b.batch_id for b in spool.pending()] == [b.batch_id for b in batches]


@pytest.mark.parametrize("retry_after", ["1e30", "inf", "99999999999999999999999", "future-date"])
async def test_a_retry_after_past_the_budget_ends_the_sync_at_once(peer, spool, tmp_path, retry_after):
    """A Retry-After of 10^30, inf, a 23-digit number or a date years ahead ends the run at once, keeping every batch."""
    value = http_date_in(10 * 365 * 86400) if retry_after == "future-date" else retry_after
    peer.script.append((429, {"Retry-After": value}))
    batch = make_batch(spool)
    started = time.monotonic()
    result = await syncer(spool, tmp_path, peer.url, max_throttle_wait_s=5.0).run_once()
    assert time.monotonic() - started < 3
    assert result.outcome == "failed" and "over the 5s max_throttle_wait_s" in result.reason
    assert [b.batch_id for b in spool.pending()] == [batch.batch_id]


async def test_a_fractional_retry_after_is_waited_as_told(peer, spool, tmp_path):
    """Retry-After: 0.5 (not RFC delta-seconds, but unambiguous) pauses half a second, then the batch lands."""
    peer.script.append((429, {"Retry-After": "0.5"}))
    batch = make_batch(spool)
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert result.outcome == "ok" and result.throttled_s == 0.5 and list(peer.landed) == [batch.batch_id]


# -- steering: what the server may change on the device ------------------------------------------------


HOSTILE_POLICIES = {
    "rate-above-1": {"strategies": {"all": {"type": "random", "rate": 1.5}}},
    "rate-negative": {"strategies": {"all": {"type": "random", "rate": -0.1}}},
    "rate-as-object": {"strategies": {"all": {"type": "random", "rate": {"value": 1}}}},
    "quota-10^18": {"per_hour": 10**18, "strategies": {"all": {"type": "random", "rate": 1.0}}},
    "quota-negative": {"strategies": {"all": {"type": "random", "rate": 1.0, "per_minute": -1}}},
    "unknown-strategy-field": {"strategies": {"all": {"type": "random", "rate": 1.0, "redact": False}}},
    "privacy-off": {"privacy": {"redact": False}, "strategies": {"all": {"type": "random", "rate": 1.0}}},
    "unknown-type": {"strategies": {"all": {"type": "everything"}}},
    "not-an-object": ["random"],
}


@pytest.mark.parametrize("kind", list(HOSTILE_POLICIES))
async def test_steering_out_of_range_or_of_the_wrong_type_is_refused_whole(tmp_path, kind):
    """A policy with a rate past 1, a quota of 10^30, an unknown field (redact = false) is refused: the last one runs."""
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    policies.accept({"policies": {"vibration": {"version": 1, "policy": BAND}}}, None, REGISTRY)
    body = orjson.dumps({"policies": {"vibration": {"version": 2, "policy": HOSTILE_POLICIES[kind]}}})
    got = await _fetch_from(tmp_path, policies, body)
    assert got.startswith("refused") or got.startswith("failed"), got
    assert policies.resolve(REGISTRY)["vibration"].version == "server:1"


@pytest.mark.parametrize(
    "document",
    [
        b'{"policies": {"vibration": {"version": 2, "policy": {"strategies": {"all": {"type": "random", "rate": NaN}}}}}}',
        b'{"policies": {"vibration": {"version": 1e30, "policy": {}}}}',
        b'{"policies": {"vibration": {"version": 2, "policy": {"per_hour": 1000000000000000000000000000000, "strategies": {}}}}}',
        b'{"policies": {"vibration": {"version": true, "policy": {}}}}',
        b'{"policies": {"vibration": {"version": 2, "policy": {"strategies": {"hot": {"type": "drift", "field": "rpm", "max": 1e400}}}}}}',
        b'{"policies": []}',
        b"\xff\xfe not json",
    ],
    ids=["nan", "version-float", "quota-10^30", "version-bool", "bound-inf", "policies-list", "not-json"],
)
async def test_a_policy_document_that_is_not_valid_json_or_shape_is_refused(tmp_path, document):
    """NaN, 1e400, a float or bool version, a list, bytes that are not JSON: refused; the policy in force stays."""
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    policies.accept({"policies": {"vibration": {"version": 1, "policy": BAND}}}, None, REGISTRY)
    got = await _fetch_from(tmp_path, policies, document)
    assert got.startswith("refused"), got
    assert policies.resolve(REGISTRY)["vibration"].version == "server:1"


async def test_a_policy_for_a_model_the_device_does_not_run_is_ignored(tmp_path):
    """A policy for a schema this device does not know changes nothing here (it is not an error either)."""
    policies = Policies(PolicySettings(), SamplingSettings(), tmp_path)
    document = orjson.dumps({"policies": {"no_such_model": {"version": 7, "policy": BAND}}})
    got = await _fetch_from(tmp_path, policies, document)
    assert got == "unchanged" and policies.remote == {}


async def _fetch_from(tmp_path: Path, policies: Policies, body: bytes) -> str:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/policies", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    url = await listen_on_loopback(runner)
    spool_dir = tmp_path / "fetch-state"
    from tests.collector.sync_peer import make_spool

    sync = syncer(make_spool(spool_dir), tmp_path, url)
    try:
        return await sync.contact(lambda session, token: policies.fetch(session, url, token, REGISTRY))
    finally:
        await runner.cleanup()



# -- the status report's answer: what the device keeps of it ------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b'{"status": "stored", "clock_offset_s": 1e300}',
        b'{"status": "stored", "clock_offset_s": -1000000000000000000000000000000}',
        b'{"status": "stored", "clock_offset_s": true}',
        b'{"status": "stored", "clock_offset_s": 18446744073709551615}',
    ],
    ids=["1e300", "-10^30", "true", "2^64-1"],
)
async def test_a_status_answer_out_of_range_does_not_poison_the_next_reports(spool, tmp_path, answer):
    """A clock_offset_s of 1e300, -10^30, true or 2^64 in a status answer is not kept: the next report stays valid."""
    from edgeloop.collector.journal import Journal
    from edgeloop.collector.reporter import StatusReporter
    from edgeloop.schemas.device_status import DeviceStatus

    documents: list[bytes] = []

    async def status(request: web.Request) -> web.StreamResponse:
        documents.append(await request.read())
        return web.Response(status=201, body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_put("/v1/status/{status_id}", status)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    url = await listen_on_loopback(runner)
    settings = sync_settings(url, tmp_path)
    reporter = StatusReporter(
        spool=spool, journal=Journal(spool, REGISTRY, spool.settings), sync=settings,
        registry=lambda: REGISTRY, sampling=SamplingSettings, agent_version="test",
    )
    sync = Syncer(settings, spool, agent_version="test", reporter=reporter)
    try:
        for _ in range(2):
            assert (await sync.run_once()).outcome == "ok"
    finally:
        await runner.cleanup()
    assert len(documents) == 2
    for document in documents:
        DeviceStatus.model_validate_json(document)  # what ingest checks before it stores a report
    assert reporter.last_offset_s is None
