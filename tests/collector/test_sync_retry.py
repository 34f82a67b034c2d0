"""After a failed scheduled sync the agent retries within the window: minutes, then hours, and says when."""

from __future__ import annotations

import asyncio
from datetime import datetime

from edgeloop.collector.metrics import Metrics
from edgeloop.collector.scheduler import SyncScheduler
from tests.collector.sync_peer import IngestPeer, make_batch, spool, sync_settings  # noqa: F401 (fixtures)
from tests.ingest.conftest import free_port


def seconds_until(stamp: str) -> float:
    return (datetime.fromisoformat(stamp) - datetime.now().astimezone()).total_seconds()


async def test_a_failed_scheduled_sync_is_retried_with_growing_waits_until_it_lands(spool, tmp_path):
    """A scheduled sync to a down server schedules a retry (shown in status), waits double, and lands once the server is up."""
    port = free_port()
    settings = sync_settings(f"http://127.0.0.1:{port}", tmp_path, interval_s=3600, jitter_s=0, max_attempts=1,
                             retry_initial_s=1.0, retry_max_s=60.0)
    scheduler = SyncScheduler(settings, spool, agent_version="test", metrics=Metrics())
    await scheduler.start()
    peer = IngestPeer()
    try:
        batch = make_batch(spool)
        await scheduler._scheduled_sync()
        status = scheduler.status()
        assert status["last_result"]["outcome"] == "failed" and status["retries_in_a_row"] == 1
        assert 0 < seconds_until(status["retry_at"]) <= 1.0
        assert seconds_until(status["retry_at"]) < seconds_until(status["next_sync_at"])

        for _ in range(400):  # the retry fires on its own and fails again: the next wait doubles
            if scheduler.status()["retries_in_a_row"] == 2 and not scheduler.running:
                break
            await asyncio.sleep(0.05)
        status = scheduler.status()
        assert status["retries_in_a_row"] == 2 and status["retry_at"] is not None
        assert 0 < seconds_until(status["retry_at"]) <= 2.0

        await peer.start(port=port)
        for _ in range(400):
            if scheduler.status()["last_result"]["outcome"] == "ok":
                break
            await asyncio.sleep(0.05)
        status = scheduler.status()
        assert status["last_result"]["outcome"] == "ok" and batch.batch_id in peer.landed
        assert status["retry_at"] is None and status["retries_in_a_row"] == 0 and status["last_success_at"]
    finally:
        await scheduler.shutdown()
        await peer.stop()


async def test_no_retry_is_scheduled_past_the_next_scheduled_sync(spool, tmp_path):
    """When the retry wait would end after the next scheduled sync, that sync is the retry."""
    settings = sync_settings(f"http://127.0.0.1:{free_port()}", tmp_path, interval_s=60, jitter_s=0, max_attempts=1,
                             retry_initial_s=600.0, retry_max_s=3600.0)
    scheduler = SyncScheduler(settings, spool, agent_version="test")
    await scheduler.start()
    try:
        make_batch(spool)
        await scheduler._scheduled_sync()
        status = scheduler.status()
        assert status["last_result"]["outcome"] == "failed"
        assert status["retry_at"] is None and status["next_sync_at"] is not None
    finally:
        await scheduler.shutdown()


async def test_a_failed_on_demand_sync_schedules_no_retry(spool, tmp_path):
    """A sync someone asked for by hand reports its failure to them; it does not start a retry chain."""
    settings = sync_settings(f"http://127.0.0.1:{free_port()}", tmp_path, interval_s=3600, jitter_s=0, max_attempts=1,
                             retry_initial_s=1.0)
    scheduler = SyncScheduler(settings, spool, agent_version="test")
    await scheduler.start()
    try:
        make_batch(spool)
        assert (await scheduler.sync_now(wait=True))["outcome"] == "failed"
        assert scheduler.status()["retry_at"] is None
    finally:
        await scheduler.shutdown()


def test_status_prints_when_the_retry_is():
    """edgeloop-collector status shows the retry time, the failures in a row and the last success."""
    from edgeloop.collector.cli import _format_status

    report = {
        "agent": {"running": True, "pid": 1, "version": "1", "uptime_s": 5, "socket": "/run/edgeloop/agent.sock"},
        "sync": {"enabled": True, "last_sync_at": "2026-11-26T02:10:00+00:00", "last_result": {"outcome": "failed"},
                 "next_sync_at": "2026-11-27T02:10:00+00:00", "retry_at": "2026-11-26T02:20:00+00:00",
                 "retries_in_a_row": 2, "last_success_at": None, "running": False},
    }
    text = _format_status(report)
    assert "(failed)" in text and "retrying at 2026-11-26T02:20:00+00:00 (failed 2 in a row" in text
