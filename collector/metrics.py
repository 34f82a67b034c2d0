"""The agent's Prometheus metrics, in a registry of its own (no process-wide globals)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from edgeloop.collector.bootclock import Moment

if TYPE_CHECKING:
    from edgeloop.collector.sync import SyncResult

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Counters, gauges and histograms one agent exports on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records = Counter(
            "edgeloop_records", "Records received at intake, by model and outcome", ["model", "status"], registry=r
        )
        self.dropped = Counter("edgeloop_records_dropped", "Records dropped, by reason", ["reason"], registry=r)
        self.requests = Histogram(
            "edgeloop_request_seconds", "Intake request latency", ["route", "status"], buckets=_FAST, registry=r
        )
        self.journal_fsyncs = Counter("edgeloop_journal_fsyncs", "Group fsyncs of the journal", registry=r)
        self.journal_fsync_seconds = Histogram(
            "edgeloop_journal_fsync_seconds", "Duration of one group fsync", buckets=_FAST, registry=r
        )
        self.journal_appends = Counter("edgeloop_journal_appends", "Frames appended to the journal", registry=r)
        self.batches_sealed = Counter("edgeloop_batches_sealed", "Batches sealed into the spool", ["model"], registry=r)
        self.seal_seconds = Histogram(
            "edgeloop_seal_seconds", "Duration of sealing one journal segment", buckets=_FAST, registry=r
        )
        self.spool_bytes = Gauge("edgeloop_spool_bytes", "Bytes of sealed batches waiting for sync", registry=r)
        self.spool_batches = Gauge("edgeloop_spool_batches", "Sealed batches waiting for sync", registry=r)
        self.spool_records = Gauge("edgeloop_spool_records", "Records in sealed batches waiting for sync", registry=r)
        self.journal_bytes = Gauge("edgeloop_journal_bytes", "Bytes in journal segments not sealed yet", registry=r)
        self.spool_oldest_age = Gauge(
            "edgeloop_spool_oldest_batch_age_seconds", "Age of the oldest sealed batch waiting for sync (0: none)", registry=r
        )
        self.sync_last_attempt = Gauge(
            "edgeloop_sync_last_attempt_timestamp_seconds", "Unix time the last sync started (0: never)", registry=r
        )
        self.sync_last_success = Gauge(
            "edgeloop_sync_last_success_timestamp_seconds", "Unix time the last sync that sent everything ended (0: never)",
            registry=r,
        )
        self.syncs = Counter("edgeloop_syncs", "Sync runs, by outcome (ok, partial, skipped, failed)", ["outcome"], registry=r)
        self.sync_batches = Counter(
            "edgeloop_sync_batches",
            "Batches by what the server did with them (landed, already_landed, rejected, split, failed)",
            ["result"],
            registry=r,
        )
        self.sync_uploaded_bytes = Counter(
            "edgeloop_sync_uploaded_bytes", "Bytes of batches the server acknowledged", registry=r
        )
        self.sync_uploaded_rows = Counter("edgeloop_sync_uploaded_records", "Records in acknowledged batches", registry=r)
        self.sync_retries = Counter("edgeloop_sync_upload_retries", "Upload attempts retried after a failure", registry=r)
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...; python_info.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)  # collections per generation: the agent runs a full one per seal
        self.disk_free_bytes = Gauge("edgeloop_disk_free_bytes", "Free bytes on the state directory's disk", registry=r)
        self.disk_full = Gauge(
            "edgeloop_disk_full", "1 while the disk is full: a write met ENOSPC, or the seal reserve cannot be held", registry=r
        )
        self.journal_writable = Gauge(
            "edgeloop_journal_writable", "0 while the journal cannot be written (read-only or full state dir, a failed fsync): records are refused", registry=r
        )
        self.seal_reserve_held_bytes = Gauge(
            "edgeloop_seal_reserve_held_bytes", "Disk held in reserve so a seal works on a full disk", registry=r
        )
        self.intake_in_flight_bytes = Gauge(
            "edgeloop_intake_in_flight_bytes", "Memory charged to request bodies in flight (what each costs by its kind: collector/budget.py)", registry=r
        )
        self.intake_budget_bytes = Gauge(
            "edgeloop_intake_budget_bytes", "The memory budget's share for request bodies (agent.memory_budget_mb / 2)", registry=r
        )

    def watch(
        self,
        *,
        spool_bytes: Callable[[], float],
        spool_batches: Callable[[], float],
        spool_records: Callable[[], float],
        journal_bytes: Callable[[], float],
        spool_oldest_age_s: Callable[[], float],
        disk_free_bytes: Callable[[], float] | None = None,
        disk_full: Callable[[], float] | None = None,
        journal_writable: Callable[[], float] | None = None,
        seal_reserve_held_bytes: Callable[[], float] | None = None,
        intake_in_flight_bytes: Callable[[], float] | None = None,
        intake_budget_bytes: Callable[[], float] | None = None,
    ) -> None:
        """Read the gauges from live state at scrape time."""
        self.spool_oldest_age.set_function(spool_oldest_age_s)
        self.spool_bytes.set_function(spool_bytes)
        self.spool_batches.set_function(spool_batches)
        self.spool_records.set_function(spool_records)
        self.journal_bytes.set_function(journal_bytes)
        for gauge, read in (
            (self.disk_free_bytes, disk_free_bytes),
            (self.disk_full, disk_full),
            (self.journal_writable, journal_writable),
            (self.seal_reserve_held_bytes, seal_reserve_held_bytes),
            (self.intake_in_flight_bytes, intake_in_flight_bytes),
            (self.intake_budget_bytes, intake_budget_bytes),
        ):
            if read is not None:
                gauge.set_function(read)

    def note_sync_started(self) -> None:
        self.sync_last_attempt.set_function(Moment.now().unix_s)  # a clock NTP steps since moves it too

    def count_sync(self, result: SyncResult) -> None:
        """Account one finished sync run."""
        self.syncs.labels(result.outcome).inc()
        for kind, count in (
            ("landed", result.uploaded),
            ("already_landed", result.already_present),
            ("rejected", result.rejected),
            ("split", result.split),
            ("failed", result.failed),
        ):
            if count:
                self.sync_batches.labels(kind).inc(count)
        self.sync_uploaded_bytes.inc(result.bytes)
        self.sync_uploaded_rows.inc(result.rows)
        self.sync_retries.inc(result.retries)
        if result.outcome == "ok":
            self.sync_last_success.set_function(Moment.now().unix_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
