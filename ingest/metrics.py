"""Prometheus metrics for one ingest app, in its own registry (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["Metrics"]


class Metrics:
    """Batches and rows landed, rejects by reason, landing latency, queue depth, the line for the queue."""

    def __init__(self, queue_depth: Callable[[], float], line: Callable[[], tuple[int, int]] = lambda: (0, 0)) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.batches = Counter("edgeloop_ingest_batches_landed", "Batches landed", ["model"], registry=self.registry)
        self.rows = Counter("edgeloop_ingest_rows_landed", "Rows landed", ["model"], registry=self.registry)
        self.duplicates = Counter(
            "edgeloop_ingest_duplicate_rows", "Rows left out because their record id had already landed", ["model"],
            registry=self.registry,
        )
        self.erased = Counter(
            "edgeloop_ingest_erased_rows", "Rows left out because an executed deletion covers them (an erased pseudonym, "
            "feedback on a deleted prediction)", ["model"], registry=self.registry,
        )
        self.replays = Counter("edgeloop_ingest_replays", "Uploads answered with an earlier receipt", registry=self.registry)
        self.rejects = Counter("edgeloop_ingest_rejects", "Uploads refused, by error code", ["code"], registry=self.registry)
        self.landing_seconds = Histogram(
            "edgeloop_ingest_landing_seconds",
            "From receiving an upload to its commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "edgeloop_ingest_group_commit_seconds", "Duration of one group commit", registry=self.registry
        )
        self.group_batches = Histogram(
            "edgeloop_ingest_group_commit_batches", "Batches landed by one group commit (tune group_commit_max_batches)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.bytes_received = Counter(
            "edgeloop_ingest_bytes_received", "Upload body bytes received from authenticated devices", ["device"],
            registry=self.registry,
        )
        self.queue = Gauge("edgeloop_ingest_queue_depth", "Batches waiting to land", registry=self.registry)
        self.queue.set_function(queue_depth)
        self.line = Gauge("edgeloop_ingest_line_uploads", "Uploads waiting in line for a landing-queue slot", registry=self.registry)
        self.line.set_function(lambda: line()[0])
        self.line_bytes = Gauge("edgeloop_ingest_line_bytes", "What the uploads in line hold in memory (against server.line_max_bytes)",
                                registry=self.registry)
        self.line_bytes.set_function(lambda: line()[1])

        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...; python_info.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
