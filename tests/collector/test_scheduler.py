"""SyncScheduler: fleet spread of the seeded jitter, schedule, on-demand and high-water syncs, status."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

import pytest

from edgeloop.collector.scheduler import SyncScheduler
from tests.collector.sync_peer import make_batch, peer, spool, sync_settings  # noqa: F401 (fixtures)

WINDOW_S = 7200


@pytest.fixture
async def scheduler_for(spool, tmp_path):
    started: list[SyncScheduler] = []

    async def build(url, **overrides):
        scheduler = SyncScheduler(sync_settings(url, tmp_path, **overrides), spool, agent_version="test")
        await scheduler.start()
        started.append(scheduler)
        return scheduler

    yield build
    for scheduler in started:
        await scheduler.shutdown()


async def fleet_offsets(spool, tmp_path, *, devices, jitter_seed):
    """Each simulated device's first fire time, as seconds after the nightly 02:00 it belongs to."""
    offsets = []
    for device in range(devices):
        token_file = tmp_path / f"device-{device}.token"
        token_file.write_text(f"token-{device}-{jitter_seed}")
        token_file.chmod(0o600)
        settings = sync_settings("http://127.0.0.1:9", tmp_path, token_file=token_file, jitter_seed=jitter_seed,
                                 schedule="0 2 * * *", jitter_s=WINDOW_S)
        scheduler = SyncScheduler(settings, spool, agent_version="test")
        await scheduler.start()
        fire = datetime.fromisoformat(scheduler.status()["next_sync_at"])
        await scheduler.shutdown()
        offsets.append((fire - fire.replace(hour=2, minute=0, second=0, microsecond=0)).total_seconds())
    return offsets


async def test_a_seeded_fleet_spreads_its_first_syncs_over_the_window(spool, tmp_path):
    """1,000 devices sharing one config and seed spread their first nightly sync evenly over the jitter window."""
    offsets = await fleet_offsets(spool, tmp_path, devices=1000, jitter_seed=42)
    assert all(0 <= offset < WINDOW_S for offset in offsets)
    buckets = Counter(int(offset // 60) for offset in offsets)
    assert len(buckets) >= 110  # of 120 one-minute buckets, nearly all are used
    assert max(buckets.values()) <= 30  # no minute holds more than 3% of the fleet (8.3 expected)
    assert max(offsets) - min(offsets) >= 0.97 * WINDOW_S
    assert len(set(offsets)) == 1000  # every device has its own moment


async def test_the_offset_is_reproducible_per_device_and_seed(spool, tmp_path):
    """The same seed and token give the same fire time on every start; another seed moves it."""
    first = await fleet_offsets(spool, tmp_path, devices=5, jitter_seed=7)
    again = await fleet_offsets(spool, tmp_path, devices=5, jitter_seed=7)
    other = await fleet_offsets(spool, tmp_path, devices=5, jitter_seed=8)
    assert first == again and first != other


async def test_interval_schedule_fires_within_interval_plus_jitter(scheduler_for):
    """With interval_s the next sync is one interval after start plus an offset within the jitter."""
    before = datetime.now().astimezone()
    scheduler = await scheduler_for("http://127.0.0.1:9", interval_s=600, jitter_s=60, jitter_seed=1)
    fire = datetime.fromisoformat(scheduler.status()["next_sync_at"])
    assert before + timedelta(seconds=600) <= fire <= datetime.now().astimezone() + timedelta(seconds=660)


async def test_the_scheduled_job_really_runs_the_sync(peer, spool, scheduler_for):
    """The APScheduler job fires on its trigger and lands the pending batches."""
    make_batch(spool), make_batch(spool)
    scheduler = await scheduler_for(peer.url, interval_s=0.2, jitter_s=0)
    for _ in range(100):
        if scheduler.status()["last_result"] is not None and not scheduler.running:
            break
        await asyncio.sleep(0.05)
    assert scheduler.status()["last_result"]["outcome"] == "ok"
    assert len(peer.landed) == 2 and spool.pending() == []


async def test_sync_now_waits_for_the_result_and_concurrent_requests_join(peer, spool, scheduler_for):
    """sync_now(wait=True) returns the SyncResult; a request while it runs joins it, so each batch is sent once."""
    batches = [make_batch(spool) for _ in range(3)]
    peer.script.append((429, {"Retry-After": "0.5"}))  # hold the first sync open for a moment
    scheduler = await scheduler_for(peer.url)
    first = asyncio.create_task(scheduler.sync_now(wait=True))
    await asyncio.sleep(0.2)
    assert scheduler.status()["running"] is True
    joined = await scheduler.sync_now(wait=False)
    second = await scheduler.sync_now(wait=True)
    result = await first
    assert joined == {"outcome": "started", "started": True, "joined": True}
    assert result == second and (result["outcome"], result["uploaded"]) == ("ok", 3)
    assert sorted(peer.lands) == sorted(b.batch_id for b in batches) and set(peer.lands.values()) == {1}


async def test_status_reports_the_last_sync_and_what_waits(peer, spool, scheduler_for, tmp_path):
    """status shows last sync time and result, next sync, and batches pending and rejected."""
    make_batch(spool), make_batch(spool), make_batch(spool)
    peer.script.append(422)
    allowed = tmp_path / "on-mains-power"
    scheduler = await scheduler_for(peer.url, only_if=f"test -e {allowed}")
    status = scheduler.status()
    assert (status["last_sync_at"], status["running"], status["batches_pending"]) == (None, False, 3)
    assert datetime.fromisoformat(status["next_sync_at"]) > datetime.now().astimezone()
    skipped = await scheduler.sync_now(wait=True)
    assert skipped["outcome"] == "skipped" and "only_if" in skipped["reason"] and peer.requests == []
    allowed.touch()
    result = await scheduler.sync_now(wait=True)
    status = scheduler.status()
    assert status["last_result"] == result and result["outcome"] == "partial"
    assert status["last_sync_at"] == result["started_at"]
    assert (status["batches_pending"], status["batches_rejected"]) == (0, 1)


async def test_high_water_starts_an_early_sync(peer, spool, scheduler_for):
    """When a seal pushes the spool past high_water_bytes an early sync starts, even when notified from a thread."""
    scheduler = await scheduler_for(peer.url, high_water_bytes=1)
    make_batch(spool)
    await asyncio.to_thread(scheduler.notify_sealed)
    for _ in range(100):
        if spool.pending() == [] and not scheduler.running:
            break
        await asyncio.sleep(0.05)
    assert len(peer.landed) == 1 and scheduler.status()["last_result"]["outcome"] == "ok"


async def test_high_water_below_the_mark_does_nothing(peer, spool, scheduler_for):
    """A seal that leaves the spool under high water starts no sync."""
    scheduler = await scheduler_for(peer.url, high_water_bytes=10**9)
    make_batch(spool)
    scheduler.notify_sealed()
    await asyncio.sleep(0.1)
    assert not scheduler.running and peer.requests == [] and scheduler.status()["last_result"] is None


async def test_a_failed_high_water_sync_is_not_retried_on_every_seal(peer, spool, scheduler_for):
    """After a high-water sync fails, further seals wait backoff_max_s instead of hammering a down server."""
    await peer.stop()
    scheduler = await scheduler_for(peer.url, high_water_bytes=1, max_attempts=1, backoff_max_s=60)
    make_batch(spool)
    scheduler.notify_sealed()
    while scheduler.running or scheduler.status()["last_result"] is None:
        await asyncio.sleep(0.02)
    first = scheduler.status()["last_result"]
    assert first["outcome"] == "failed"
    make_batch(spool)
    scheduler.notify_sealed()
    assert not scheduler.running and scheduler.status()["last_result"] == first


async def test_shutdown_cancels_a_running_sync_and_keeps_its_batch(peer, spool, scheduler_for):
    """Shutting down mid-sync cancels it; the batch it was sending stays in the spool."""
    make_batch(spool)
    peer.script.append((503, {"Retry-After": "30"}))
    scheduler = await scheduler_for(peer.url)
    await scheduler.sync_now(wait=False)
    await asyncio.sleep(0.3)
    await scheduler.shutdown()
    assert not scheduler.running and len(spool.pending()) == 1


@pytest.mark.parametrize(("overrides", "reason"), [({"url": None}, "sync is not configured"), ({"enabled": False}, "sync is disabled")])
async def test_unconfigured_sync_says_so(spool, tmp_path, overrides, reason):
    """Disabled or without a URL, status says so, nothing is scheduled and sync_now is skipped."""
    settings = sync_settings("http://127.0.0.1:9", tmp_path, high_water_bytes=1).model_copy(update=overrides)
    scheduler = SyncScheduler(settings, spool, agent_version="test")
    await scheduler.start()
    make_batch(spool)
    scheduler.notify_sealed()
    status = scheduler.status()
    assert (status["configured"], status["reason"], status["next_sync_at"], status["running"]) == (False, reason, None, False)
    assert await scheduler.sync_now(wait=True) == {"outcome": "skipped", "reason": "sync is not configured"}
    await scheduler.shutdown()
