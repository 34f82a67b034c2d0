"""The device agent under a wrong or jumping wall clock: order, budgets and schedule follow real time."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uuid_utils
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.simulator import SimulatedModel
from edgeloop.collector import scheduler as scheduler_module
from edgeloop.collector import sync as sync_module
from edgeloop.collector.config import SamplingRule, SamplingSettings, SpoolSettings
from edgeloop.collector.pipeline import Pipeline
from edgeloop.collector.scheduler import SyncScheduler
from edgeloop.collector.spool import BatchIds, Spool
from edgeloop.collector.sync import Syncer
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.collector.conftest import FLEET_KEY, inject_faults
from tests.collector.sync_peer import IngestPeer, make_batch, make_spool, sync_settings

DAY_S = 86_400
YEAR_S = 365 * DAY_S
SHIM = Path(__file__).parent / "clock_shim"
# Wall-clock offsets a device meets: NTP steps it back a day, an RTC-less Pi boots in 2038 or in 1970.
JUMPS_S = (0.0, -DAY_S, 12 * YEAR_S, 0.0, -56 * YEAR_S, 0.0)

pytestmark = pytest.mark.timeout(120)


def _table(registry: SchemaRegistry, seed: int, rows: int = 50) -> pa.Table:
    records = list(SimulatedModel("vibration", seed=seed).predictions(rows))
    return pa.Table.from_batches([Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY).process(records).batches["vibration"]])


def _ids(paths) -> set[str]:
    return {str(v) for path in paths for v in pq.read_table(path, columns=["record_id"])["record_id"].to_pylist()}


def _clock(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    """Set the wall clock the process reads (and ``uuid_utils`` reads) ``offset_s`` off the real one; monotonic time untouched."""
    monkeypatch.undo()
    real_time, real_time_ns, real_uuid7 = time.time, time.time_ns, uuid_utils.uuid7
    monkeypatch.setattr(time, "time", lambda: real_time() + offset_s)
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + int(offset_s * 1e9))
    monkeypatch.setattr(uuid_utils, "uuid7", lambda nanoseconds=None: real_uuid7(nanoseconds=time.time_ns()))


@settings(max_examples=300, deadline=None)
@given(
    start=st.none() | st.integers(0, 2**48 - 2**30),
    readings_ms=st.lists(st.integers(-(2**40), 2**48 - 2**30), min_size=1, max_size=40),
)
def test_batch_ids_increase_whatever_the_clock_reads(start, readings_ms):
    """Each minted batch id is a UUIDv7 sorting (as text) after every id seen or minted before, for any clock readings."""
    ids = BatchIds()
    seen = []
    if start is not None:
        seen.append(str(uuid_utils.uuid7(nanoseconds=start * 1_000_000)))
        ids.observe(seen[0])
    real = time.time_ns
    try:
        for ms in readings_ms:
            time.time_ns = lambda ms=ms: ms * 1_000_000
            seen.append(ids.mint())
    finally:
        time.time_ns = real
    assert seen == sorted(set(seen))
    assert all(uuid_utils.UUID(batch_id).version == 7 and uuid_utils.UUID(batch_id).variant == uuid_utils.RFC_4122
               for batch_id in seen)


def test_batches_sealed_after_a_clock_jump_sort_after_every_older_batch(tmp_path, monkeypatch):
    """Batches sealed under a clock set back or forward, across a restart, sync and are dropped in the order they were sealed."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    settings = SpoolSettings(reserve_free_bytes=0, seal_reserve_bytes=0, when_full="drop_oldest")
    spool = Spool(tmp_path / "state", settings, agent_version="test")
    sealed = []
    for seed, offset_s in enumerate(JUMPS_S):
        _clock(monkeypatch, offset_s)
        if seed == 3:  # a restart: the new spool learns the order from the files
            spool = Spool(tmp_path / "state", settings, agent_version="test")
        sealed.append(spool.write_batch(_table(registry, seed), schema=registry["vibration"]))
    monkeypatch.undo()
    assert [batch.batch_id for batch in spool.pending()] == [batch.batch_id for batch in sealed]

    kept = sum(batch.bytes for batch in sealed[2:])
    spool = Spool(tmp_path / "state", settings.model_copy(update={"max_bytes": kept}), agent_version="test")
    assert spool.make_room(0)
    assert [batch.batch_id for batch in spool.pending()] == [batch.batch_id for batch in sealed[2:]]
    assert dict(spool.drops_total) == {"spool_full": sealed[0].rows + sealed[1].rows}


def test_an_agent_restarted_under_a_clock_set_back_seals_after_its_old_batches(agent_factory):
    """An agent whose clock is a day (or 56 years) behind its spool's batches seals new ones that sync after them, records intact."""
    agent = agent_factory(spool={"seal_max_rows": 20})
    sent: list[dict] = []
    for run, offset_s in enumerate((0.0, -DAY_S, -56 * YEAR_S)):
        agent.env = {"PYTHONPATH": str(SHIM), "EDGELOOP_TEST_CLOCK_OFFSET_S": str(offset_s)}
        agent.start()
        records = list(SimulatedModel("vibration", seed=run).predictions(20))
        for record in records:
            record.pop("created_at", None)
        status, body = agent.post_records(records)
        assert status == 200 and body["accepted"] == 20, body
        assert agent.stop() == 0
        sent.append({r["record_id"] for r in records})
    files = agent.batch_files()  # sorted by name: the order sync sends them in
    assert len(files) == 3
    assert [_ids([path]) for path in files] == sent
    created = [pq.read_table(path, columns=["created_at"])["created_at"].to_pylist() for path in files]
    years = [{moment.year for moment in moments} for moments in created]
    assert years[1] == years[0] and years[2] == {1970}, years  # each record keeps the time it was stamped with


def test_an_hourly_cap_spent_is_not_reopened_by_the_wall_clock_jumping(monkeypatch):
    """max_per_hour holds over an hour of real time while the wall clock steps back an hour, to 2038 and back, and to 1970."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    settings = SamplingSettings(seed=1, default=SamplingRule(max_per_hour=10))
    pipeline = Pipeline(registry, settings, FLEET_KEY)
    uptime_s = time.clock_gettime(time.CLOCK_BOOTTIME)
    monkeypatch.setattr(time, "clock_gettime", lambda clock: uptime_s)  # the whole test is one instant of real time
    now = datetime.now(UTC)
    kept = 0
    for seed, offset_s in enumerate(JUMPS_S + (-3600.0, 3600.0)):
        records = list(SimulatedModel("vibration", seed=seed).predictions(6))
        kept += pipeline.process(records, now=now + timedelta(seconds=offset_s)).accepted
    assert kept == 10


@pytest.fixture
def sync_spool(tmp_path: Path) -> Spool:
    return make_spool(tmp_path / "state")


@pytest.fixture
async def ingest():
    server = await IngestPeer().start()
    yield server
    await server.stop()


def _shift_schedule_clock(monkeypatch: pytest.MonkeyPatch, offset_s: float, *, modules=()) -> None:
    """Set the wall clock APScheduler and the sync scheduler (and ``modules``) read ``offset_s`` off; their timers stay monotonic."""

    class Shifted(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) + timedelta(seconds=offset_s)

    import apscheduler.schedulers.base
    import apscheduler.triggers.interval

    for module in (apscheduler.schedulers.base, apscheduler.triggers.interval, scheduler_module, *modules):
        monkeypatch.setattr(module, "datetime", Shifted)


async def _started(url: str, tmp_path: Path, spool: Spool, **overrides) -> tuple[SyncScheduler, list[str]]:
    """A started scheduler and the triggers of the syncs it runs, in order."""
    scheduler = SyncScheduler(sync_settings(url, tmp_path, **overrides), spool, agent_version="test")
    runs: list[str] = []
    sync = scheduler._sync

    async def counted(trigger: str):
        runs.append(trigger)
        return await sync(trigger)

    scheduler._sync = counted
    await scheduler.start()
    return scheduler, runs


@pytest.mark.parametrize("offset_s", [DAY_S, 12 * YEAR_S])
async def test_a_clock_set_back_does_not_put_off_the_scheduled_sync(ingest, sync_spool, tmp_path, monkeypatch, offset_s):
    """An agent started under a clock a day (or years) ahead syncs on schedule once NTP sets the clock back."""
    monkeypatch.setattr(scheduler_module, "CLOCK_CHECK_S", 0.1, raising=False)
    make_batch(sync_spool), make_batch(sync_spool)
    with monkeypatch.context() as clock:
        _shift_schedule_clock(clock, offset_s)
        scheduler, runs = await _started(ingest.url, tmp_path, sync_spool, interval_s=0.5, jitter_s=0)
    try:
        for _ in range(100):  # landed on the peer, then removed from the spool once the agent reads the 201
            if len(ingest.landed) == 2 and sync_spool.pending() == []:
                break
            await asyncio.sleep(0.05)
        assert len(ingest.landed) == 2 and sync_spool.pending() == [] and runs[0] == "schedule"
        next_at = datetime.fromisoformat(scheduler.status()["next_sync_at"])
        assert next_at - datetime.now(UTC) <= timedelta(seconds=1)
    finally:
        await scheduler.shutdown()


async def test_a_nightly_schedule_set_by_a_clock_in_2038_moves_to_tonight(ingest, sync_spool, tmp_path, monkeypatch):
    """A nightly cron scheduled under a clock years ahead fires within a day and its jitter once the clock is right."""
    monkeypatch.setattr(scheduler_module, "CLOCK_CHECK_S", 0.1, raising=False)
    with monkeypatch.context() as clock:
        _shift_schedule_clock(clock, 12 * YEAR_S)
        scheduler, _ = await _started(ingest.url, tmp_path, sync_spool, schedule="0 2 * * *", jitter_s=7200, jitter_seed=1)
    try:
        await asyncio.sleep(0.5)
        next_at = datetime.fromisoformat(scheduler.status()["next_sync_at"])
        assert timedelta(0) < next_at - datetime.now(UTC) <= timedelta(days=1, seconds=7200)
    finally:
        await scheduler.shutdown()


@pytest.mark.timeout(60)
async def test_a_clock_jumping_56_years_forward_runs_the_missed_sync_once(ingest, sync_spool, tmp_path, monkeypatch):
    """A scheduler started under a 1970 clock that NTP then sets right syncs once, at once, and next one interval later."""
    monkeypatch.setattr(scheduler_module, "CLOCK_CHECK_S", 0.1, raising=False)
    make_batch(sync_spool)
    with monkeypatch.context() as clock:
        _shift_schedule_clock(clock, -56 * YEAR_S)
        scheduler, runs = await _started(ingest.url, tmp_path, sync_spool, interval_s=60, jitter_s=0)
    try:
        started = time.monotonic()
        scheduler._scheduler.wakeup()  # what its timer does a minute later; the clock check does it sooner
        for _ in range(100):
            if ingest.landed:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert time.monotonic() - started < 10  # the event loop was not held walking 29 million missed minutes
        assert runs == ["schedule"] and len(ingest.landed) == 1
        next_at = datetime.fromisoformat(scheduler.status()["next_sync_at"])
        assert timedelta(0) < next_at - datetime.now(UTC) <= timedelta(seconds=60)
    finally:
        await scheduler.shutdown()


def _faulty_agent(agent_factory):
    """An agent whose state dir fails (``fault.write_text("EROFS")``) and recovers (``fault.unlink()``) while it runs."""
    agent = agent_factory(spool={"seal_max_rows": 1000, "seal_max_age_s": 0.5})
    fault = inject_faults(agent)
    return agent.start(), fault


def _records(seed: int, rows: int = 20) -> list[dict]:
    return list(SimulatedModel("vibration", seed=seed).predictions(rows))


def _stored_ids(agent) -> list[str]:
    return sorted(str(v) for v in agent.read_batches()["vibration"]["record_id"].to_pylist())


@pytest.mark.parametrize("code", ["EROFS", "ENOSPC"])
def test_a_state_dir_that_fails_while_running_refuses_records_says_so_and_recovers(agent_factory, code):
    """A state dir turning read-only (or full) mid-run: records are refused saying why, status says so, nothing accepted is lost, and intake resumes by itself."""
    agent, fault = _faulty_agent(agent_factory)
    first, refused = _records(1), _records(2)
    assert agent.post_records(first)[0] == 200
    fault.write_text(code)
    status, body = agent.post_records(refused)
    assert status in (503, 507) and body["error"]["code"] in ("journal_unavailable", "disk_full"), body
    assert ("Read-only file system" if code == "EROFS" else "disk is full") in body["error"]["message"]
    journal = agent.status()["journal"]
    assert journal["writable"] is False and code in journal["write_error"], journal
    shown = agent.cli("status")
    assert f"CANNOT BE WRITTEN since {journal['write_error_since']} ({journal['write_error']})" in shown.stdout, shown
    assert "edgeloop_journal_writable 0.0" in agent.metrics()
    time.sleep(1.5)  # the timer tries to seal the aged segment, and cannot
    fault.unlink()
    status, body = agent.post_records(refused)  # the app sends them again
    assert status == 200 and body["accepted"] == 20 and body["duplicates"] == 0, body
    assert agent.status()["journal"]["writable"] is True
    assert "edgeloop_journal_writable 1.0" in agent.metrics()
    assert agent.stop() == 0
    assert _stored_ids(agent) == sorted(r["record_id"] for r in first + refused)


def test_records_whose_fsync_failed_are_not_acknowledged_by_their_resend(agent_factory):
    """After an fsync of the journal fails, the resent records are stored again, not answered as duplicates of records the disk may not hold."""
    agent, fault = _faulty_agent(agent_factory)
    first, failed = _records(1), _records(2)
    assert agent.post_records(first)[0] == 200
    fault.write_text("EIO")
    status, body = agent.post_records(failed)
    assert status == 503 and body["error"]["code"] == "journal_unavailable", body
    assert agent.status()["journal"]["writable"] is False
    fault.unlink()
    status, body = agent.post_records(failed)
    assert status == 200 and body["duplicates"] == 0 and body["accepted"] == 20, body
    assert agent.stop() == 0
    stored = _stored_ids(agent)
    assert set(stored) == {r["record_id"] for r in first + failed}
    assert len(stored) == len(set(stored))  # the frames whose fsync failed were cut off, not sealed beside their resend


def test_a_state_dir_turning_read_only_after_the_disk_filled_refuses_records_without_a_500(agent_factory):
    """After a full disk spent the seal reserve, a state dir turned read-only still answers 503 journal_unavailable, not 500."""
    agent, fault = _faulty_agent(agent_factory)
    first = _records(1)
    assert agent.post_records(first)[0] == 200
    fault.write_text("ENOSPC")
    agent.flush()  # the seal meets the full disk and spends the reserve
    assert agent.status()["disk"]["seal_reserve_held_bytes"] == 0
    fault.write_text("EROFS")
    status, body = agent.post_records(_records(2))
    assert status == 503 and body["error"]["code"] == "journal_unavailable", body
    assert "Read-only file system" in body["error"]["message"]
    fault.unlink()
    assert agent.post_records(_records(3))[0] == 200
    assert agent.stop() == 0
    assert _stored_ids(agent) == sorted(r["record_id"] for r in first + _records(3))


@pytest.mark.parametrize("offset_s", [-56 * YEAR_S, DAY_S])
async def test_a_retry_after_date_is_read_against_the_servers_clock_not_the_devices(
    ingest, sync_spool, tmp_path, monkeypatch, offset_s
):
    """A 503 whose Retry-After is an HTTP date 2 s after the server's Date pauses a device with a wrong clock 2 s, not 56 years or none."""
    make_batch(sync_spool)
    ingest.script.append((503, {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)}))
    _shift_schedule_clock(monkeypatch, offset_s, modules=(sync_module,))
    syncer = Syncer(sync_settings(ingest.url, tmp_path, max_throttle_wait_s=60), sync_spool, agent_version="test")
    result = await syncer.run_once()
    assert (result.outcome, result.uploaded) == ("ok", 1), result
    gap = ingest.requests[1]["at"] - ingest.requests[0]["at"]
    assert 0.5 <= gap <= 10 and 0.5 <= result.throttled_s <= 10


def test_batches_sealed_under_a_clock_since_set_back_are_not_reported_negative_ages(agent_factory):
    """After NTP sets a clock back a day, status, offline status and spool list give the batches sealed before an age of 0, not -1 day."""
    agent = agent_factory()
    agent.env = {"PYTHONPATH": str(SHIM), "EDGELOOP_TEST_CLOCK_OFFSET_S": str(DAY_S)}
    agent.start()
    assert agent.post_records(_records(1))[0] == 200
    assert agent.stop() == 0
    agent.env = {}
    agent.start()
    assert 0 <= agent.status()["spool"]["oldest_record_age_s"] < 60
    assert agent.stop() == 0
    offline = agent.cli("status", "--json")
    assert 0 <= orjson.loads(offline.stdout)["spool"]["oldest_record_age_s"] < 60, offline
    listed = agent.cli("spool", "list", "--json")
    assert [0 <= entry["age_s"] < 60 for entry in orjson.loads(listed.stdout)] == [True], listed


def _stepped_agent(agent_factory, offset_s: float, **sections):
    """An agent whose wall clock is ``offset_s`` off until the test writes another offset to ``clock``, on boot ``boot-a``."""
    agent = agent_factory(**sections)
    clock = agent.root / "clock"
    clock.write_text(str(offset_s))
    agent.env = {"PYTHONPATH": str(SHIM), "EDGELOOP_TEST_CLOCK_FILE": str(clock), "EDGELOOP_TEST_BOOT_ID": "boot-a"}
    return agent, clock


def _ages(agent) -> dict[str, float]:
    """Every age and time the agent reports of its oldest batch, as seconds before real now."""
    status = agent.status()
    spool = status["spool"]
    real_now = datetime.now(UTC)
    metric = next(line for line in agent.metrics().splitlines() if line.startswith("edgeloop_spool_oldest_batch_age_seconds "))
    return {
        "status": spool["oldest_record_age_s"],
        "oldest_batch_at": (real_now - datetime.fromisoformat(spool["oldest_batch_at"])).total_seconds(),
        "metric": float(metric.split()[-1]),
        "uptime": status["agent"]["uptime_s"],
        "started_at": (real_now - datetime.fromisoformat(status["agent"]["started_at"])).total_seconds(),
    }


@pytest.mark.parametrize("offset_s", [12 * YEAR_S, -56 * YEAR_S], ids=["2038-then-back", "1970-then-forward"])
def test_a_clock_corrected_while_the_agent_runs_leaves_batch_ages_true(agent_factory, offset_s):
    """A batch sealed under a clock in 2038 (or 1970) that NTP then corrects reads its real age in status and metrics, never negative or decades, through a restart."""
    agent, clock = _stepped_agent(agent_factory, offset_s)
    agent.start()
    assert agent.post_records(_records(1))[0] == 200
    agent.flush()
    clock.write_text("0")  # NTP steps the clock to the right time
    time.sleep(1.5)
    for name, age in _ages(agent).items():
        assert 1.0 <= age < 60, (name, age)
    agent.kill()  # a crash, then systemd starts it again on the same boot
    agent.start()
    for name, age in _ages(agent).items():
        if name not in ("uptime", "started_at"):
            assert 1.0 <= age < 60, (name, age)
    listed = subprocess.run(  # the CLI on the same device: same boot, same clock
        [sys.executable, "-m", "edgeloop.collector.cli", "spool", "list", "--json", "--config", str(agent.config_path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **agent.env},
    )
    assert [1.0 <= entry["age_s"] < 60 for entry in orjson.loads(listed.stdout)] == [True], listed


@pytest.mark.parametrize("offset_s", [12 * YEAR_S, -56 * YEAR_S], ids=["2038", "1970"])
def test_batches_stamped_by_a_wrong_clock_before_a_reboot_count_their_age_from_the_start(agent_factory, offset_s):
    """After a reboot, a batch whose id says 2038 (or 1970) is reported as made when the agent started, with a warning, not in the future or decades ago."""
    agent, clock = _stepped_agent(agent_factory, offset_s)
    agent.start()
    assert agent.post_records(_records(1))[0] == 200
    assert agent.stop() == 0
    clock.write_text("0")
    agent.env["EDGELOOP_TEST_BOOT_ID"] = "boot-b"
    agent.start()
    time.sleep(1.0)
    ages = _ages(agent)
    for name, age in ages.items():
        assert 0.5 <= age < 60, (name, age)
    assert "wall clock" in agent.log() and "counted from now" in agent.log(), agent.log()


def _accepted(agent, seed: int, rows: int) -> int:
    records = _records(seed, rows)
    status, body = agent.post_records(records)
    assert status == 200, body
    return body["accepted"]


def test_an_hourly_quota_spent_before_a_crash_stays_spent_after_the_restart(agent_factory):
    """An agent killed with SIGKILL and restarted by systemd within the hour keeps the hour's count, so a crash loop sends no more than max_per_hour; a reboot starts it again."""
    if time.clock_gettime(time.CLOCK_BOOTTIME) % 3600 > 3540:
        time.sleep(3600 - time.clock_gettime(time.CLOCK_BOOTTIME) % 3600 + 1)  # the test runs inside one hour window
    agent, _ = _stepped_agent(agent_factory, 0.0, sampling={"default": {"max_per_hour": 10}})
    agent.start()
    assert _accepted(agent, 1, 6) == 6
    kept = 6
    for run in range(3):  # Restart=on-failure: crash, start, crash again
        agent.kill()
        agent.start()
        kept += _accepted(agent, 10 + run, 6)
    assert kept == 10
    agent.kill()
    agent.env["EDGELOOP_TEST_BOOT_ID"] = "boot-b"  # the device rebooted: uptime windows start again
    agent.start()
    assert _accepted(agent, 20, 6) == 6


@pytest.mark.parametrize("offset_s", [12 * YEAR_S, -56 * YEAR_S], ids=["2038-then-back", "1970-then-forward"])
async def test_a_clock_stepped_during_a_sync_leaves_its_duration_and_times_true(ingest, sync_spool, tmp_path, monkeypatch, offset_s):
    """A sync that NTP corrects the clock under reports its real duration to the server, and metrics its start and end as today's times."""
    from types import SimpleNamespace

    from edgeloop.collector.journal import Journal
    from edgeloop.collector.metrics import Metrics
    from edgeloop.collector.reporter import StatusReporter

    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    make_batch(sync_spool)
    offset = [offset_s]
    real_time = time.time

    class Stepped(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.now(tz) + timedelta(seconds=offset[0])

    monkeypatch.setattr(sync_module, "datetime", Stepped)
    monkeypatch.setattr(scheduler_module, "time", SimpleNamespace(time=lambda: real_time() + offset[0], monotonic=time.monotonic))
    settings = sync_settings(ingest.url, tmp_path)
    reporter = StatusReporter(
        spool=sync_spool, journal=Journal(sync_spool, registry, sync_spool.settings), sync=settings,
        registry=lambda: registry, sampling=SamplingSettings, agent_version="test",
    )
    metrics = Metrics()
    scheduler = SyncScheduler(settings, sync_spool, agent_version="test", reporter=reporter, metrics=metrics)
    run = scheduler.syncer._run

    async def stepped_run(result):
        await asyncio.sleep(0.2)
        offset[0] = 0.0  # NTP steps the clock right while the sync runs
        await run(result)

    scheduler.syncer._run = stepped_run
    result = await scheduler.sync_now(wait=True)
    assert result["outcome"] == "ok", result
    [document] = ingest.statuses
    assert 0.2 <= document["sync"]["duration_s"] < 30, document["sync"]
    exposed = {line.split()[0]: float(line.split()[1]) for line in metrics.exposition().decode().splitlines()
               if line.startswith("edgeloop_sync_last_")}
    for name, value in exposed.items():
        assert abs(real_time() - value) < 30, (name, value)


@pytest.mark.parametrize("offset_s", [12 * YEAR_S, -56 * YEAR_S], ids=["2038-then-back", "1970-then-forward"])
def test_since_times_noted_under_a_clock_since_corrected_read_as_today(tmp_path, monkeypatch, offset_s):
    """A full disk and a journal write error noted under a clock NTP then corrects are reported as since a moment ago, not since 2038 or 1970."""
    import errno

    from edgeloop.collector.journal import Journal

    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    spool = make_spool(tmp_path / "state")
    journal = Journal(spool, registry, spool.settings)
    _clock(monkeypatch, offset_s)
    spool.note_disk_full()
    journal.note_write_error(OSError(errno.EROFS, "Read-only file system"))
    monkeypatch.undo()
    for since in (spool.disk_status()["full_since"], journal.stats()["write_error_since"]):
        assert timedelta(0) <= datetime.now(UTC) - datetime.fromisoformat(since) < timedelta(seconds=30), since


def test_records_a_crash_left_in_the_journal_keep_their_age_through_a_clock_correction(agent_factory):
    """Records journaled under a clock in 2038, then a crash and a restart on the same boot with the clock right, report the age they have, not an age from the restart."""
    agent, clock = _stepped_agent(agent_factory, 12 * YEAR_S)
    agent.start()
    assert agent.post_records(_records(1))[0] == 200
    time.sleep(4.0)
    agent.kill()  # the segment is still open: recovery seals it
    clock.write_text("0")
    agent.start()
    status = agent.status()
    assert status["agent"]["recovery"]["sealed"] == 1, status["agent"]["recovery"]
    assert 4.0 <= status["spool"]["oldest_record_age_s"] < 60, status["spool"]
