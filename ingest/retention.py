"""Retention: the server deletes what ``store.retention_days`` says is too old, daily, audited.

A run makes one ``--before`` deletion per model with a retention (``ingest/deletion.py``) on
the writer, audited with reason ``retention`` and by ``retention``, then rewrites the file so
the rows are gone from the disk. Runs at start and every ``store.retention_interval_s``
(APScheduler); ``run_once`` is the one-iteration entry point tests use. A failed run is logged
and retried at the next interval: the loop never dies.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.deletion import apply, retention_deletions
from edgeloop.ingest.store import Store

__all__ = ["Retention"]

log = logging.getLogger(__name__)
BY = "retention"


class Retention:
    """Applies ``store.retention_days`` (and ``retention_days_by_model``) to a running store."""

    def __init__(self, store: Store, settings: StoreSettings) -> None:
        self.store = store
        self.settings = settings
        self._scheduler: AsyncIOScheduler | None = None

    @property
    def configured(self) -> bool:
        return bool(self.settings.retention_days or self.settings.retention_days_by_model)

    async def run_once(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Delete what is past its retention now; the audit results of the deletions that removed rows."""
        now = now or datetime.now(UTC)
        store = self.store
        deletions = retention_deletions(store.catalog, self.settings.retention_days,
                                        dict(self.settings.retention_days_by_model), now)
        if not deletions:
            return []

        def run(con: Any) -> list[dict[str, Any]]:
            done = []
            for deletion in deletions:
                if apply(con, deletion, store.catalog, execute=False, by=BY, tombstone_days=self.settings.tombstone_days)["rows"]:
                    done.append(apply(con, deletion, store.catalog, execute=True, by=BY,
                                      tombstone_days=self.settings.tombstone_days))
            return done

        results = await asyncio.wrap_future(store.call(run))
        if results and self.settings.backend == "duckdb":  # a lake drops old snapshots with `compact` instead
            before, after = await asyncio.wrap_future(store.compact())
            for result in results:
                log.info("retention deleted rows", extra={**result, "file_bytes_before": before, "file_bytes_after": after})
        return results

    async def _scheduled(self) -> None:
        try:
            await self.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention failed; it runs again at the next interval")

    def start(self) -> None:
        """Run now and then every ``retention_interval_s``; nothing when no retention is set."""
        if not self.configured:
            return
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_job(
            self._scheduled, IntervalTrigger(seconds=self.settings.retention_interval_s), id="retention",
            name="retention", coalesce=True, max_instances=1, misfire_grace_time=None, next_run_time=datetime.now(UTC),
        )
        self._scheduler.start()
        log.info("retention scheduled", extra={"retention_days": self.settings.retention_days,
                                               "retention_days_by_model": dict(self.settings.retention_days_by_model)})

    async def shutdown(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler shuts down in a loop callback
