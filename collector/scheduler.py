"""When sync runs: on a cron schedule or an interval, on demand, and when the spool passes high water.

APScheduler (3.x, ``AsyncIOScheduler`` on the agent's loop) owns the schedule. A fleet is
spread over ``jitter_s`` by a per-device offset drawn once from an RNG seeded by
``jitter_seed`` and a digest of the device token, so a device syncs at the same point of
the window every night, different devices at different points, and a test can compute
every device's fire time. (APScheduler's own ``jitter`` draws from the global ``random``
per fire, which no seed can make reproducible per device.) Without a seed and a token the
offset is random, drawn once per start.

Only one sync runs at a time: any request while one runs joins it.

APScheduler keeps fire times on the wall clock, which an edge device gets wrong (a Pi
without an RTC boots in 1970 or 2038 until NTP steps it). So a clock that moves forward
past fire times runs the missed sync once, not once per missed fire (``OffsetTrigger``
skips to the first fire after now, where APScheduler would count out every fire of 56
years on the event loop first); and ``check_clock``, every ``CLOCK_CHECK_S`` of monotonic
time, moves a fire time the clock left in the far future (it was set back) to the
schedule's next fire from now, so the device does not wait years for its sync.

A scheduled (or high-water, or retry) sync that does not send everything — ingest down, the
gate said no, a 5xx — is retried within the same window: after ``retry_initial_s``, then
doubling up to ``retry_max_s`` (minutes, then hours), each wait drawn from its upper half so
a fleet that failed together does not retry together. A retry that would land after the next
scheduled sync is not made: that sync is the retry. ``status`` says when the retry is.

The backoff survives a restart (``collector/sync_state.py``): an agent started during an
outage keeps its failures in a row, and its retry when it is still ahead; a retry whose time
passed while the agent was down is drawn again from now at the same backoff, so a fleet
rebooted together after a power cut spreads its retries rather than retrying at once. While
backing off the agent skips its start-up policy fetch (the retry fetches them), and a
high-water sync waits as it did before the restart. The next scheduled sync is kept too, so
an agent restarted more often than its ``interval_s`` still syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from edgeloop.collector.bootclock import Moment
from edgeloop.collector.config import SyncSettings
from edgeloop.collector.metrics import Metrics
from edgeloop.collector.reporter import StatusReporter
from edgeloop.collector.spool import Spool
from edgeloop.collector.sync import NOT_CONFIGURED, Syncer, SyncResult
from edgeloop.collector.sync_state import SYNC_STATE_FILE, SyncState
from edgeloop.errors import SyncError
from edgeloop.logs import RateLimitedLogger

__all__ = ["SyncScheduler"]

log = logging.getLogger(__name__)

JOB_ID = "sync"
RETRY_JOB_ID = "sync-retry"
CLOCK_CHECK_S = 60.0  # how soon a wall clock set back is noticed (monotonic seconds)


class SyncScheduler:
    """Runs the agent's ``Syncer`` on schedule, on demand and at high water; reports what it did."""

    def __init__(
        self,
        settings: SyncSettings,
        spool: Spool,
        *,
        agent_version: str,
        before_sync: Callable[[], Awaitable[Any]] | None = None,
        metrics: Metrics | None = None,
        reporter: StatusReporter | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """``state_dir``, if given, keeps the backoff and the last results across a restart (``sync.json``)."""
        self.settings = settings
        self.spool = spool
        # The agent seals its open journal segments here, so a sync sends everything logged so far.
        self.before_sync = before_sync
        self.syncer = Syncer(settings, spool, agent_version=agent_version, reporter=reporter)
        if reporter is not None:
            reporter.next_sync_at = self._next_sync_at
        self.jitter_offset_s = 0.0
        self._scheduler: AsyncIOScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[SyncResult] | None = None
        self._last_result: SyncResult | None = None
        self._high_water_not_before = 0.0
        self.metrics = metrics
        self._clock_watch: asyncio.Task[None] | None = None
        self._errors = RateLimitedLogger(log)
        self.reporter = reporter
        self._state_path = state_dir / SYNC_STATE_FILE if state_dir is not None else None
        self._state = SyncState.load(self._state_path) if self._state_path is not None else SyncState()
        if reporter is not None:
            reporter.restore(self._state.report)
        self._retries = self._state.failures_in_a_row  # failed syncs in a row since the last successful one
        self._last_success_at: Moment | None = None
        if metrics is not None:  # an alert on the time since the last success must not fire for a restart
            last = self._state.last_result
            for gauge, stamp in ((metrics.sync_last_attempt, last.get("started_at") if last else None),
                                 (metrics.sync_last_success, self._state.last_success_at)):
                when = _parse(stamp) if isinstance(stamp, str) else None
                if when is not None:
                    gauge.set(when.timestamp())

    @property
    def configured(self) -> bool:
        return self.syncer.configured

    async def start(self) -> None:
        """Schedule the sync job on the running loop (nothing to schedule if sync is not configured)."""
        self._loop = asyncio.get_running_loop()
        if not self.configured:
            log.info("sync is not configured: no scheduled sync", extra={"enabled": self.settings.enabled})
            return
        self.jitter_offset_s = self._offset_s()
        self._scheduler = AsyncIOScheduler(timezone=self.settings.timezone)
        self._scheduler.add_job(
            self._scheduled_sync,
            self._trigger(),
            id=JOB_ID,
            name="sync",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,  # a sync missed while the device slept runs once when it wakes
        )
        self._scheduler.start()
        self._resume()
        await self._save_state(None)  # the offset drawn and the next sync, for a restart before any sync
        self._clock_watch = self._loop.create_task(self._watch_clock(), name="edgeloop-sync-clock")
        log.info("sync scheduled", extra={"next_sync_at": self._next_sync_at(), "jitter_offset_s": self.jitter_offset_s,
                                          "retry_at": self._retry_at(), "retries_in_a_row": self._retries})

    @property
    def backing_off(self) -> bool:
        """Whether the last syncs failed and the retry (or the next scheduled sync) is still to come."""
        return self._retries > 0

    def _resume(self) -> None:
        """Take up the schedule an earlier run of the agent left: its next sync, its retry, its high-water pause."""
        state, now = self._state, datetime.now(UTC)
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None else None
        saved_next = _parse(state.next_sync_at)
        if job is not None and job.next_run_time is not None and saved_next is not None:
            # Earlier than the schedule from now, and still ahead: an interval that a restart must not push back.
            if now < saved_next < job.next_run_time:
                job.modify(next_run_time=saved_next)
            # Missed while the agent was down (a device switched off every night would never sync): run it soon,
            # spread like a first retry so a fleet powered on together does not sync at once (systemd's Persistent=).
            elif saved_next <= now and not (self._retries and state.retry_at):  # a retry still due is the catch-up
                catch_up = now + timedelta(seconds=random.uniform(0, self.settings.retry_initial_s))
                job.modify(next_run_time=min(catch_up, job.next_run_time))  # never later than the schedule's own
                log.info("a scheduled sync was missed while the agent was down: it runs soon",
                         extra={"missed_at": state.next_sync_at, "next_sync_at": self._next_sync_at()})
        not_before = _parse(state.high_water_not_before)
        if not_before is not None and now < not_before <= now + timedelta(seconds=self.settings.backoff_max_s):
            self._high_water_not_before = time.monotonic() + (not_before - now).total_seconds()
        if not self._retries:
            return
        saved_retry = _parse(state.retry_at)
        if saved_retry is None:
            return  # the next scheduled sync is the retry
        if now < saved_retry <= now + timedelta(seconds=self.settings.retry_max_s):
            when = saved_retry
        else:  # due while the agent was down (or saved under a clock set wrong): a fresh draw from now
            when = now + timedelta(seconds=self._retry_delay_s())
        self._add_retry(when)
        log.info("sync backoff carried over from before the restart",
                 extra={"retries_in_a_row": self._retries, "retry_at": self._retry_at(),
                        "last_error": (state.last_result or {}).get("reason")})

    async def shutdown(self) -> None:
        """Stop scheduling and cancel a running sync; an interrupted batch stays in the spool."""
        scheduler, self._scheduler = self._scheduler, None
        watch, self._clock_watch = self._clock_watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sync_now(self, *, wait: bool) -> dict[str, Any]:
        """Start a sync (or join the running one); with ``wait``, its SyncResult as a dict.

        Without ``wait``: ``{"outcome": "started", "started": true, "joined": <a sync was running>}``.
        """
        if not self.configured:
            return {"outcome": "skipped", "reason": NOT_CONFIGURED}
        task, joined = self._begin("on_demand")
        if not wait:
            return {"outcome": "started", "started": True, "joined": joined}
        # Shielded: a client that stops waiting does not cancel the sync.
        result = await asyncio.shield(task)
        return result.as_dict()

    def check_clock(self) -> str | None:
        """One look at the wall clock: reschedule syncs it moved out of reach; what was done, if anything."""
        scheduler = self._scheduler
        job = scheduler.get_job(JOB_ID) if scheduler is not None and scheduler.running else None
        if job is None or job.next_run_time is None:
            return None
        now = datetime.now(job.next_run_time.tzinfo)
        trigger = self._trigger()  # made now: an interval's start is not the one a wrong clock gave it
        fresh = trigger.get_next_fire_time(None, now)
        if fresh is not None and job.next_run_time > fresh:
            # Scheduled later than the schedule puts it from now: the clock was set back since.
            log.warning("wall clock went back: the next sync follows the schedule from now",
                        extra={"was": job.next_run_time.isoformat(), "next_sync_at": fresh.isoformat()})
            job.modify(trigger=trigger, next_run_time=fresh)
            retry = scheduler.get_job(RETRY_JOB_ID)
            if retry is not None and retry.next_run_time is not None and retry.next_run_time >= fresh:
                self._cancel_retry()  # the next scheduled sync is the retry
            return "rescheduled"
        if job.next_run_time < now - timedelta(seconds=CLOCK_CHECK_S):
            # Past due by more than a check: the clock jumped forward over it; run it once now.
            scheduler.wakeup()
            return "woken"
        return None

    async def _watch_clock(self) -> None:
        """``check_clock`` every CLOCK_CHECK_S, forever; errors are logged (rate-limited), never fatal."""
        while True:
            await asyncio.sleep(CLOCK_CHECK_S)
            try:
                self.check_clock()
            except Exception as exc:
                self._errors.log(logging.ERROR, "clock", "checking the sync schedule against the clock failed",
                                 error=repr(exc))

    def notify_sealed(self) -> None:
        """A batch was sealed: start an early sync if the spool is past high water. Safe from any thread."""
        loop = self._loop
        if loop is None or not self.configured or self.settings.high_water_bytes is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._check_high_water()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(self._check_high_water)

    def status(self) -> dict[str, Any]:
        last = self._last_result.as_dict() if self._last_result is not None else self._state.last_result
        last_success = self._last_success_at.at().isoformat() if self._last_success_at else self._state.last_success_at
        status: dict[str, Any] = {
            "enabled": self.settings.enabled,
            "configured": self.configured,
            "url": self.settings.url,
            "schedule": self._describe_schedule(),
            "jitter_offset_s": round(self.jitter_offset_s, 3),
            "last_sync_at": last.get("started_at") if last else None,
            "last_result": last,
            "next_sync_at": self._next_sync_at(),
            "retry_at": self._retry_at(),
            "retries_in_a_row": self._retries,
            "last_success_at": last_success,
            "running": self.running,
            "batches_pending": len(self.spool.pending()),
            "batches_rejected": len(self.spool.rejected()),
        }
        if not self.configured:
            status["reason"] = "sync is disabled" if not self.settings.enabled else NOT_CONFIGURED
        return status

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _begin(self, trigger: str) -> tuple[asyncio.Task[SyncResult], bool]:
        """The running sync task, or a new one; and whether it was already running."""
        if self._task is not None and not self._task.done():
            return self._task, True
        self._task = asyncio.get_running_loop().create_task(self._sync(trigger), name=f"edgeloop-sync-{trigger}")
        return self._task, False

    async def _sync(self, trigger: str) -> SyncResult:
        log.info("sync starting", extra={"trigger": trigger, "batches_pending": len(self.spool.pending())})
        if self.metrics is not None:
            self.metrics.note_sync_started()
        try:
            if self.before_sync is not None:
                try:
                    await self.before_sync()
                except Exception:  # sealing failed: still send what is already sealed
                    log.exception("sealing the journal before sync failed", extra={"trigger": trigger})
            result = await self.syncer.run_once()
        except Exception as exc:  # the scheduler must outlive any bug in one run
            log.exception("sync crashed", extra={"trigger": trigger})
            result = SyncResult(outcome="failed", reason=f"internal error: {type(exc).__name__}: {exc}")
        self._last_result = result
        if self.metrics is not None:
            self.metrics.count_sync(result)
        if result.outcome == "ok":
            self._last_success_at = Moment.now()
            self._retries = 0
            self._cancel_retry()
        elif trigger in ("schedule", "retry", "high_water"):
            self._schedule_retry(result)
        if trigger == "high_water" and result.outcome != "ok":
            # Without this, every seal while ingest is down would start another doomed sync.
            self._high_water_not_before = time.monotonic() + self.settings.backoff_max_s
        await self._save_state(result)
        return result

    async def _save_state(self, result: SyncResult | None) -> None:
        """Write what a restart needs of this sync: the backoff, the result, the report's memory."""
        path = self._state_path
        if path is None:
            return
        state = self._state
        state.failures_in_a_row = self._retries
        state.retry_at = self._retry_at()
        if result is not None:
            state.last_result = result.as_dict()
        if self._last_success_at is not None:
            state.last_success_at = self._last_success_at.at().isoformat()
        pause_s = self._high_water_not_before - time.monotonic()
        state.high_water_not_before = (datetime.now(UTC) + timedelta(seconds=pause_s)).isoformat() if pause_s > 0 else None
        state.next_sync_at = self._next_sync_at()
        if self.reporter is not None:
            state.report = self.reporter.state()
        await asyncio.to_thread(state.save, path, self._errors)

    def _schedule_retry(self, result: SyncResult) -> None:
        """After a failed sync, try again sooner than the next scheduled one: minutes, then hours."""
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            return
        self._retries += 1
        when = datetime.now(UTC) + timedelta(seconds=self._retry_delay_s())
        if not self._add_retry(when):
            log.info("sync failed: the next scheduled sync retries it",
                     extra={"reason": result.reason, "next_sync_at": self._next_sync_at()})
            return
        log.warning("sync did not send everything: retrying",
                    extra={"reason": result.reason, "retry_at": when.isoformat(), "retries_in_a_row": self._retries})

    def _retry_delay_s(self) -> float:
        """The wait before the next retry at the current backoff, drawn from its upper half."""
        settings = self.settings
        delay_s = min(settings.retry_max_s, settings.retry_initial_s * 2 ** (max(self._retries, 1) - 1))
        return random.uniform(delay_s / 2, delay_s)

    def _add_retry(self, when: datetime) -> bool:
        """Schedule the retry at ``when``; False (and no retry) if the next scheduled sync comes first: it is the retry."""
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            return False
        job = scheduler.get_job(JOB_ID)
        if job is not None and job.next_run_time is not None and when >= job.next_run_time:
            self._cancel_retry()
            return False
        scheduler.add_job(
            self._retry_sync, DateTrigger(when), id=RETRY_JOB_ID, name="sync retry",
            replace_existing=True, misfire_grace_time=None,
        )
        return True

    def _cancel_retry(self) -> None:
        scheduler = self._scheduler
        if scheduler is not None and scheduler.running and scheduler.get_job(RETRY_JOB_ID) is not None:
            scheduler.remove_job(RETRY_JOB_ID)

    async def _retry_sync(self) -> None:
        task, _ = self._begin("retry")
        await asyncio.shield(task)

    def _retry_at(self) -> str | None:
        job = self._scheduler.get_job(RETRY_JOB_ID) if self._scheduler is not None else None
        when = job.next_run_time if job is not None else None
        return when.isoformat() if when else None

    async def _scheduled_sync(self) -> None:
        task, _ = self._begin("schedule")
        await asyncio.shield(task)

    def _check_high_water(self) -> None:
        limit = self.settings.high_water_bytes
        if self.running or limit is None or time.monotonic() < self._high_water_not_before:
            return
        pending = self.spool.bytes_pending
        if pending > limit:
            log.info("spool past high water: syncing early", extra={"bytes_pending": pending, "high_water_bytes": limit})
            self._begin("high_water")

    def _trigger(self) -> BaseTrigger:
        settings = self.settings
        base: BaseTrigger
        if settings.interval_s is not None:
            base = IntervalTrigger(seconds=settings.interval_s, timezone=settings.timezone)
        else:
            base = CronTrigger.from_crontab(settings.schedule, timezone=settings.timezone)
        return OffsetTrigger(base, self.jitter_offset_s)

    def _window_s(self) -> float:
        """The spread: jitter_s, but never past the next interval fire."""
        if self.settings.interval_s is not None:
            return min(self.settings.jitter_s, self.settings.interval_s)
        return self.settings.jitter_s

    def _offset_s(self) -> float:
        """The device's offset in the window: from seed and token, or a random draw kept across restarts."""
        window = self._window_s()
        state = self._state
        offset = self._draw_offset_s()
        if offset is None:  # random: the draw an earlier start made in the same window, so the device keeps its place
            if state.jitter_window_s == window and state.jitter_offset_s is not None and state.jitter_offset_s <= window:
                return state.jitter_offset_s
            offset = random.SystemRandom().uniform(0, window)
            state.jitter_window_s, state.jitter_offset_s = window, offset
        else:
            state.jitter_window_s = state.jitter_offset_s = None
        return offset

    def _draw_offset_s(self) -> float | None:
        """The offset seed and token give; None when neither is there (the offset is then random)."""
        window = self._window_s()
        if window <= 0:
            return 0.0
        material = []
        if self.settings.jitter_seed is not None:
            material.append(str(self.settings.jitter_seed).encode())
        try:
            # The token makes the offset per device even when a fleet shares one config file.
            material.append(hashlib.sha256(self.syncer.read_token().encode()).digest())
        except SyncError:
            pass
        if not material:
            return None
        seed = int.from_bytes(hashlib.sha256(b"\0".join(material)).digest()[:8], "big")
        return random.Random(seed).uniform(0, window)

    def _next_sync_at(self) -> str | None:
        job = self._scheduler.get_job(JOB_ID) if self._scheduler is not None else None
        when = job.next_run_time if job is not None else None
        return when.isoformat() if when else None

    def _describe_schedule(self) -> str:
        if self.settings.interval_s is not None:
            return f"every {self.settings.interval_s:g}s"
        return f"cron {self.settings.schedule!r} {self.settings.timezone}"


def _parse(stamp: str | None) -> datetime | None:
    """A saved wall-clock time; None for none, or for one that is not an ISO time with its zone."""
    try:
        when = datetime.fromisoformat(stamp) if stamp is not None else None
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


class OffsetTrigger(BaseTrigger):
    """Fires ``offset_s`` after every fire time of the trigger it wraps."""

    __slots__ = ("offset", "trigger")

    def __init__(self, trigger: BaseTrigger, offset_s: float) -> None:
        self.trigger = trigger
        self.offset = timedelta(seconds=offset_s)

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        previous = previous_fire_time - self.offset if previous_fire_time is not None else None
        base = self.trigger.get_next_fire_time(previous, now - self.offset)
        if base is not None and previous is not None and base + self.offset <= now:
            # Fires missed while the clock jumped forward (or the device slept): the next from now,
            # so APScheduler does not walk every one of them (56 years of minutes after a 1970 boot).
            base = self.trigger.get_next_fire_time(None, now - self.offset)
        if base is None:
            return None
        # In UTC, so an offset across a DST change is still exactly offset_s of real time.
        return (base.astimezone(UTC) + self.offset).astimezone(base.tzinfo)

    def __str__(self) -> str:
        return f"{self.trigger} + {self.offset.total_seconds():g}s"

    def __repr__(self) -> str:
        return f"<OffsetTrigger {self.trigger!r} offset_s={self.offset.total_seconds():g}>"
