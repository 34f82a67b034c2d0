"""Syncer against a fault-injecting ingest peer on 127.0.0.1: every answer of the upload contract."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import orjson
import pytest

from edgeloop.collector.sync import NOT_CONFIGURED, PARQUET_MEDIA_TYPE
from edgeloop.errors import RetryableUploadError
from tests.collector.sync_peer import TOKEN, make_batch, peer, receipt, spool, sync_settings, syncer  # noqa: F401 (fixtures)


async def test_batches_land_oldest_first_with_the_contract_headers(peer, spool, tmp_path):
    """Each batch is PUT oldest first with token, Parquet media type, length and sent-at, then leaves the spool."""
    batches = [make_batch(spool) for _ in range(3)]
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded, result.rows) == ("ok", 3, 30)
    assert result.bytes == sum(batch.bytes for batch in batches)
    assert [r["batch_id"] for r in peer.requests] == [batch.batch_id for batch in batches]
    for request, batch in zip(peer.requests, batches, strict=True):
        assert request["authorization"] == f"Bearer {TOKEN}"
        assert request["content_type"] == PARQUET_MEDIA_TYPE
        assert request["content_length"] == batch.bytes
        sent_at = datetime.fromisoformat(request["sent_at"])
        assert sent_at.tzinfo is not None and abs(datetime.now(UTC) - sent_at) < timedelta(seconds=10)
    assert spool.pending() == [] and spool.rejected() == []


async def test_already_landed_counts_as_success(peer, spool, tmp_path):
    """A 200 (the server has the batch already) acknowledges it like a 201."""
    batch = make_batch(spool)
    peer.landed[batch.batch_id] = "earlier"
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded, result.already_present) == ("ok", 0, 1)
    assert spool.pending() == []


async def test_422_moves_the_batch_to_rejected_and_the_rest_continue(peer, spool, tmp_path):
    """A 422 puts the batch in rejected/ with the server's error beside it, never retried; later batches land."""
    bad, *good = [make_batch(spool) for _ in range(3)]
    peer.script.append(422)
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.rejected, result.uploaded) == ("partial", 1, 2)
    assert [path.stem for path in spool.rejected()] == [bad.batch_id]
    saved = orjson.loads((spool.rejected_dir / f"{bad.batch_id}.error.json").read_bytes())
    assert saved["status"] == 422 and saved["error"]["error"]["code"] == "status_422"
    assert sorted(peer.landed) == sorted(batch.batch_id for batch in good)
    assert [r["batch_id"] for r in peer.requests].count(bad.batch_id) == 1


def http_date_in(seconds: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("status", "retry_after", "at_least_s"),
    [(429, "1.2", 1.2), (503, None, 1.0)],
    ids=["429-seconds", "503-http-date"],
)
async def test_throttle_pauses_the_whole_sync_as_told(peer, spool, tmp_path, status, retry_after, at_least_s):
    """429/503 with Retry-After (seconds or an HTTP date) pause the whole sync for that long, then it goes on."""
    batches = [make_batch(spool) for _ in range(3)]
    peer.script.append((status, {"Retry-After": retry_after or http_date_in(2.0)}))
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded) == ("ok", 3)
    gap = peer.requests[1]["at"] - peer.requests[0]["at"]
    assert gap >= at_least_s and result.throttled_s >= at_least_s
    assert [r["batch_id"] for r in peer.requests] == [batches[0].batch_id, *(b.batch_id for b in batches)]


async def test_throttle_longer_than_the_budget_ends_the_run_keeping_batches(peer, spool, tmp_path):
    """A Retry-After beyond max_throttle_wait_s ends the run at once; every batch waits for the next sync."""
    make_batch(spool), make_batch(spool)
    peer.script.append((429, {"Retry-After": "3600"}))
    started = time.monotonic()
    result = await syncer(spool, tmp_path, peer.url, max_throttle_wait_s=5).run_once()
    assert time.monotonic() - started < 4  # it did not wait out even the 5 s budget
    assert (result.outcome, result.failed) == ("failed", 2) and "throttled" in result.reason
    assert len(spool.pending()) == 2 and spool.rejected() == []


async def test_server_errors_are_retried_with_backoff_and_land_once(peer, spool, tmp_path):
    """500, 502 and 408 are retried with backoff; the batch lands exactly once."""
    batch = make_batch(spool)
    peer.script.extend([500, 502, 408])
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded) == ("ok", 1)
    assert len(peer.requests) == 4 and result.retries == 3 and peer.lands[batch.batch_id] == 1


async def test_a_batch_that_keeps_failing_stays_for_the_next_sync_and_others_land(peer, spool, tmp_path):
    """After max_attempts 5xx the batch stays in the spool, the next batch still lands, and a later sync lands the first."""
    first, second = make_batch(spool), make_batch(spool)
    peer.script.extend([500] * 4)
    result = await syncer(spool, tmp_path, peer.url, max_attempts=4).run_once()
    assert (result.outcome, result.failed, result.uploaded) == ("partial", 1, 1)
    assert [batch.batch_id for batch in spool.pending()] == [first.batch_id]
    assert list(peer.landed) == [second.batch_id]
    again = await syncer(spool, tmp_path, peer.url).run_once()
    assert (again.outcome, again.uploaded) == ("ok", 1) and spool.pending() == []


async def test_413_splits_the_batch_and_both_halves_land(peer, spool, tmp_path):
    """A 413 splits the batch in two halves that both land; no row is lost."""
    batch = make_batch(spool, rows=10)
    peer.script.append(413)
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.split, result.uploaded, result.rows) == ("ok", 1, 2, 10)
    assert batch.batch_id not in peer.landed and len(peer.landed) == 2
    assert spool.pending() == []


async def test_413_on_a_single_row_rejects_it(peer, spool, tmp_path):
    """A one-row batch that is still too large cannot be split, so it goes to rejected/."""
    batch = make_batch(spool, rows=1)
    peer.script.append(413)
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.rejected) == ("failed", 1)
    assert [path.stem for path in spool.rejected()] == [batch.batch_id]


async def test_connection_dropped_mid_body_is_retried_and_lands_once(peer, spool, tmp_path):
    """The server cutting the connection during the upload is a network error: the retry lands the batch once."""
    batch = make_batch(spool, rows=20, thumbnail_bytes=16_000)
    peer.script.append("drop")
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded) == ("ok", 1)
    assert len(peer.requests) == 2 and peer.lands[batch.batch_id] == 1


async def test_server_down_for_the_first_syncs_then_up_loses_and_duplicates_nothing(peer, spool, tmp_path):
    """While ingest is down each sync fails fast keeping every batch; once it is up every batch lands exactly once."""
    batches = [make_batch(spool) for _ in range(4)]
    await peer.stop()
    for _ in range(2):
        result = await syncer(spool, tmp_path, peer.url).run_once()
        assert (result.outcome, result.failed) == ("failed", 4) and "unreachable" in result.reason
        assert len(spool.pending()) == 4
    await peer.start()
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.uploaded) == ("ok", 4)
    assert peer.lands == {batch.batch_id: 1 for batch in batches}
    assert spool.pending() == [] and spool.rejected() == []


async def test_network_errors_are_translated_with_their_cause(peer, spool, tmp_path):
    """A foreign aiohttp error leaves _put as RetryableUploadError raised from it."""
    batch = make_batch(spool)
    await peer.stop()
    sync = syncer(spool, tmp_path, peer.url)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetryableUploadError) as caught:
            await sync._put(session, batch, TOKEN, None)
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_device_stops_the_sync_without_rejecting(peer, spool, tmp_path, status, caplog):
    """401/403 means the device is not allowed: the run stops after one request and no batch is rejected."""
    make_batch(spool), make_batch(spool)
    peer.script.append(status)
    result = await syncer(spool, tmp_path, peer.url).run_once()
    assert (result.outcome, result.failed) == ("failed", 2) and "not allowed" in result.reason
    assert len(peer.requests) == 1 and len(spool.pending()) == 2 and spool.rejected() == []
    assert any(record.levelname == "ERROR" and "refused this device" in record.message for record in caplog.records)


async def test_wrong_url_stops_the_sync_without_rejecting(peer, spool, tmp_path):
    """A 404 from a mistyped URL stops the run; it would otherwise reject every batch."""
    make_batch(spool)
    result = await syncer(spool, tmp_path, peer.url + "/wrong-prefix").run_once()
    assert result.outcome == "failed" and "check sync.url" in result.reason
    assert len(spool.pending()) == 1 and spool.rejected() == []


async def test_bandwidth_cap_holds_the_rate(peer, spool, tmp_path):
    """With a cap of R bytes/s, uploading N bytes takes at least N/R seconds."""
    for _ in range(3):
        make_batch(spool, rows=10, thumbnail_bytes=5_000)
    rate = 100_000
    started = time.monotonic()
    result = await syncer(spool, tmp_path, peer.url, bandwidth_bytes_per_s=rate).run_once()
    elapsed = time.monotonic() - started
    assert result.outcome == "ok" and result.bytes > 100_000
    assert result.bytes / rate <= elapsed < result.bytes / rate * 2 + 1


@pytest.mark.parametrize(
    ("command", "outcome", "reason"),
    [("false", "skipped", "exited 1"), ("echo metered >&2; exit 3", "skipped", "exited 3: metered"), ("true", "ok", None)],
)
async def test_only_if_gates_the_sync(peer, spool, tmp_path, command, outcome, reason):
    """only_if exiting non-zero skips the sync with its reason and sends nothing; exit 0 lets it run."""
    make_batch(spool)
    result = await syncer(spool, tmp_path, peer.url, only_if=command).run_once()
    assert result.outcome == outcome
    if reason is None:
        assert result.reason is None and len(peer.landed) == 1
    else:
        assert reason in result.reason and peer.requests == [] and len(spool.pending()) == 1


async def test_only_if_that_hangs_is_killed_and_skips(peer, spool, tmp_path):
    """An only_if command that outlives only_if_timeout_s is killed and the sync skipped."""
    make_batch(spool)
    started = time.monotonic()
    result = await syncer(spool, tmp_path, peer.url, only_if="sleep 30", only_if_timeout_s=0.3).run_once()
    assert time.monotonic() - started < 5
    assert result.outcome == "skipped" and "did not finish" in result.reason and peer.requests == []


async def test_unconfigured_sync_is_skipped(spool, tmp_path):
    """Without a URL, or disabled, a sync is skipped with the reason."""
    make_batch(spool)
    for sync in (syncer(spool, tmp_path, None), syncer(spool, tmp_path, "http://127.0.0.1:9", enabled=False)):
        result = await sync.run_once()
        assert (result.outcome, result.reason) == ("skipped", NOT_CONFIGURED)


async def test_unreadable_token_fails_the_sync_with_the_reason(peer, spool, tmp_path):
    """A missing token file fails the sync, names the file, and sends nothing."""
    make_batch(spool)
    sync = syncer(spool, tmp_path, peer.url, token_file=tmp_path / "missing.token")
    result = await sync.run_once()
    assert result.outcome == "failed" and "missing.token" in result.reason and peer.requests == []


async def test_a_world_readable_token_is_not_sent(peer, spool, tmp_path):
    """A device token file everybody can read fails the sync naming it, and nothing is sent (as for the fleet key)."""
    make_batch(spool)
    token = tmp_path / "open.token"
    token.write_text("a-device-token\n")
    token.chmod(0o644)
    result = await syncer(spool, tmp_path, peer.url, token_file=token).run_once()
    assert result.outcome == "failed" and "readable by everyone" in result.reason and peer.requests == []
    token.chmod(0o600)
    assert (await syncer(spool, tmp_path, peer.url, token_file=token).run_once()).outcome == "ok"


async def test_a_large_batch_asks_before_sending_and_a_refusal_costs_no_body(peer, spool, tmp_path):
    """Batches of expect_continue_bytes or more wait for 100 Continue: a 429 refuses one before its body is sent, and the sync pauses and lands it; smaller ones go at once."""
    small, large = make_batch(spool, rows=2), make_batch(spool, rows=10, thumbnail_bytes=20_000)
    assert small.bytes < 50_000 <= large.bytes
    peer.landed[small.batch_id] = "earlier"  # the small one already landed (its 200 carries the receipt)
    peer.script.extend([None, (429, {"Retry-After": "1"})])  # the large one refused once
    result = await syncer(spool, tmp_path, peer.url, expect_continue_bytes=50_000).run_once()
    assert (result.outcome, result.uploaded, result.already_present) == ("ok", 1, 1) and result.throttled_s >= 1
    first, refused, landed = peer.requests
    assert (first["batch_id"], first["expect"], first["body_bytes"]) == (small.batch_id, None, small.bytes)
    assert (refused["batch_id"], refused["expect"], "body_bytes" in refused) == (large.batch_id, "100-continue", False)
    assert (landed["batch_id"], landed["expect"], landed["body_bytes"]) == (large.batch_id, "100-continue", large.bytes)
    assert peer.lands[large.batch_id] == 1 and spool.pending() == []


async def test_a_large_batch_is_sent_after_expect_continue_timeout_s_when_no_100_comes(spool, tmp_path):
    """A peer that never sends 100 Continue (a proxy that drops it) gets the body after expect_continue_timeout_s, not after the request timeout, and the batch lands."""
    batch = make_batch(spool, rows=10, thumbnail_bytes=20_000)
    sent = batch.path.read_bytes()
    seen: dict[str, object] = {}

    async def never_continue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        fields = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in head.split("\r\n")[1:])}
        seen["expect"] = fields.get("expect")
        seen["body"] = await reader.readexactly(int(fields["content-length"]))
        answer = orjson.dumps(receipt(batch.batch_id, seen["body"]))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(never_continue, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        started = time.monotonic()
        result = await syncer(spool, tmp_path, url, expect_continue_bytes=1, expect_continue_timeout_s=0.5,
                              request_timeout_s=60.0, max_attempts=1).run_once()
        elapsed_s = time.monotonic() - started
    finally:
        server.close()
        await server.wait_closed()
    assert (result.outcome, result.uploaded) == ("ok", 1), result.reason
    assert seen["expect"] == "100-continue" and seen["body"] == sent
    assert 0.5 <= elapsed_s < 30  # the timeout's wait, far from the request's 60 s
