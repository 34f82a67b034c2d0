"""The status document: what this device tells ingest at every sync, and keeps for ``status``.

``StatusReporter.document(result)`` gathers it from the spool, the journal, the schemas and
sampling rules in force, the model versions the app logged, the disk and the clock; the
``Syncer`` sends it after its uploads (``PUT /v1/status/{status_id}``), so the sync outcome in
it is the real one, and sends it even when there was nothing to upload. A report that fails
never holds back an upload; its drops and sync outcomes are carried into the next one.
The contract is ``edgeloop.schemas.device_status.DeviceStatus``.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import uuid_utils
from apscheduler.triggers.cron import CronTrigger
from pydantic import ValidationError

from edgeloop.collector.bootclock import Moment
from edgeloop.collector.config import SamplingSettings, SyncSettings
from edgeloop.collector.journal import Journal
from edgeloop.collector.spool import Spool
from edgeloop.schemas.device_status import StatusClock
from edgeloop.schemas.registry import SchemaRegistry

if TYPE_CHECKING:
    from edgeloop.collector.sync import SyncResult

__all__ = ["StatusReporter", "clock_synchronized", "sync_window_s"]

log = logging.getLogger(__name__)

MAX_VERSIONS = 32  # per model, the most recently logged (the contract's bound)
MAX_DROP_REASONS = 64
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronized


class StatusReporter:
    """Builds status documents and remembers what the last stored one carried."""

    def __init__(
        self,
        *,
        spool: Spool,
        journal: Journal,
        sync: SyncSettings,
        registry: Callable[[], SchemaRegistry],
        sampling: Callable[[], SamplingSettings],
        agent_version: str,
        next_sync_at: Callable[[], str | None] | None = None,
        policies: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.spool = spool
        self.journal = journal
        self.window_s = sync_window_s(sync)
        self._registry = registry
        self._sampling = sampling
        self._policies = policies  # model → the sampling policy version it runs (server:<n>, file:…, config:…)
        self.agent_version = agent_version
        self._started = Moment.now()
        self._run_id = str(uuid_utils.uuid4())  # not in the state dir: a copy of that (a golden image) must not copy it
        self.next_sync_at = next_sync_at  # set by the scheduler once it runs
        self._lock = threading.Lock()
        self._versions: dict[str, dict[str, int]] = {}  # model → version → order last logged
        self._tick = 0
        self._reported_drops: Counter[str] = Counter()  # drops_total as of the last stored report
        self._unreported: Counter[str] = Counter()  # sync outcomes since the last stored report
        self._failures_in_a_row = 0
        self._last_success_at: Moment | None = None
        self._last_success_text: str | None = None  # a success before the agent's restart, as it was told then
        self.last_offset_s: float | None = None
        self.last_report: dict[str, Any] | None = None  # what `status` shows: when, id, and how it went

    def state(self) -> dict[str, Any]:
        """What the next report and ``status`` need after a restart (the scheduler saves it in sync.json)."""
        return {
            "failures_in_a_row": self._failures_in_a_row,
            "last_success_at": self._last_success_at.at().isoformat() if self._last_success_at else self._last_success_text,
            "last_offset_s": self.last_offset_s,
            "last_report": self.last_report,
            "unreported": dict(self._unreported),
            "versions": self.versions(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take up what an earlier run of the agent saved with ``state``; values of the wrong type are left out."""
        failures = state.get("failures_in_a_row")
        if isinstance(failures, int) and not isinstance(failures, bool) and failures >= 0:
            self._failures_in_a_row = failures
        success = state.get("last_success_at")
        if isinstance(success, str):
            self._last_success_text = success
        offset = state.get("last_offset_s")
        if isinstance(offset, int | float) and not isinstance(offset, bool):
            self.last_offset_s = float(offset)
        report = state.get("last_report")
        if isinstance(report, dict):
            self.last_report = report
        versions = state.get("versions")
        if isinstance(versions, dict):
            for model, known in versions.items():
                if isinstance(known, list) and all(isinstance(version, str) for version in known):
                    self.note_versions(str(model), reversed(known[:MAX_VERSIONS]))  # oldest first: the newest ends last
        unreported = state.get("unreported")
        if isinstance(unreported, dict):
            self._unreported = Counter({str(k): v for k, v in unreported.items()
                                        if isinstance(v, int) and not isinstance(v, bool) and v > 0})

    def note_versions(self, model: str, versions: Iterable[str]) -> None:
        """The app logged records of these versions of ``model`` (called by intake; cheap)."""
        with self._lock:
            self._tick += 1
            known = self._versions.setdefault(model, {})
            for version in versions:
                known[version] = self._tick
            if len(known) > MAX_VERSIONS:
                for version in sorted(known, key=known.__getitem__)[: len(known) - MAX_VERSIONS]:
                    del known[version]

    def document(self, result: SyncResult) -> dict[str, Any]:
        """A new status document about now and the sync ``result`` (its upload part done)."""
        now = datetime.now(UTC)
        self._note_outcome(result.outcome)
        spool_stats = self.spool.stats()
        journal = self.journal.stats()
        oldest = _oldest_age_s(self.spool, journal)
        totals = Counter(spool_stats["drops_total"])
        drops = {reason: count - self._reported_drops[reason] for reason, count in totals.items()
                 if count > self._reported_drops[reason]}
        if len(drops) > MAX_DROP_REASONS:  # the rest are carried into the next report
            drops = dict(sorted(drops.items(), key=lambda item: -item[1])[:MAX_DROP_REASONS])
        registry = self._registry()
        with self._lock:
            versions = {model: sorted(known, key=known.__getitem__, reverse=True) for model, known in self._versions.items()}
        document = {
            "status_id": str(uuid_utils.uuid7()),
            "sent_at": now.isoformat(),
            "agent_version": self.agent_version[:64],
            "started_at": self._started.at().isoformat(),
            "run_id": self._run_id,
            "models": [
                {"model": schema.name, "schema_fingerprint": schema.fingerprint, "versions": versions.get(schema.name, [])}
                for schema in list(registry)[:256]
            ],
            "spool": {
                "batches": spool_stats["batches"], "records": spool_stats["records"], "bytes": spool_stats["bytes"],
                "oldest_record_age_s": oldest, "rejected": spool_stats["rejected"],
                "quarantined": spool_stats["quarantined"], "budget_bytes": spool_stats["budget_bytes"],
            },
            "journal": {"records": journal["records"], "bytes": journal["bytes"],
                        "segments": journal["open_segments"] + journal["sealing_segments"] + journal["unsealed_segments"]},
            "drops": drops,
            "sync": {
                "outcome": result.outcome,
                "error": result.reason[:1024] if result.reason else None,
                "started_at": result.started_at.isoformat(),
                "duration_s": result.duration_s,
                "uploaded": result.uploaded, "already_present": result.already_present, "rejected": result.rejected,
                "failed": result.failed, "bytes": result.bytes, "rows": result.rows,
                "window_s": self.window_s,
                "next_sync_at": self.next_sync_at() if self.next_sync_at else None,
                "last_success_at": self._last_success_at.at().isoformat() if self._last_success_at else self._last_success_text,
                "failures_in_a_row": self._failures_in_a_row,
                "since_last_report": dict(self._unreported + Counter({result.outcome: 1})),
            },
            "disk": {"free_bytes": max(0, spool_stats["free_disk_bytes"]), "full": self.spool.disk_full},
            "clock": {"synchronized": clock_synchronized(), "last_offset_s": self.last_offset_s},
            "sampling": self.sampling(),
        }
        return document

    def stored(self, document: dict[str, Any], receipt: Any) -> None:
        """The server stored ``document``: its drops and outcomes are reported."""
        self._reported_drops.update(document["drops"])
        self._unreported.clear()
        offset = receipt.get("clock_offset_s") if isinstance(receipt, dict) else None
        if offset is not None:
            try:  # by the contract's own bound: a wild value kept here would make every later report invalid
                self.last_offset_s = StatusClock.model_validate({"last_offset_s": offset}, strict=True).last_offset_s
            except ValidationError:
                log.warning("the status answer's clock_offset_s is out of range: not kept", extra={"clock_offset_s": str(offset)[:40]})
        self.last_report = {"status_id": document["status_id"], "sent_at": document["sent_at"], "stored": True,
                            "error": None}

    def not_stored(self, document: dict[str, Any] | None, outcome: str, error: str) -> None:
        """The report did not reach the server (or was refused): the next one carries this sync's outcome."""
        self._unreported[outcome] += 1
        self.last_report = {"status_id": document["status_id"] if document else None,
                            "sent_at": document["sent_at"] if document else None, "stored": False, "error": error}

    def unreported(self, outcome: str) -> None:
        """A sync ran that sent no report (skipped by only_if, not configured, ingest unreachable)."""
        self._unreported[outcome] += 1
        self._note_outcome(outcome)

    def _note_outcome(self, outcome: str) -> None:
        """Count a sync in the failures in a row, whether its report could be sent or not."""
        if outcome == "ok":
            self._failures_in_a_row = 0
            self._last_success_at = Moment.now()
        elif outcome in ("failed", "partial"):
            self._failures_in_a_row += 1

    def sampling(self) -> dict[str, Any]:
        """The sampling rules in force (after any reload)."""
        settings = self._sampling()
        policies = self._policies() if self._policies is not None else {}
        return {"default": _rule(settings.default),
                "models": {model: _rule(rule) for model, rule in list(settings.models.items())[:256]},
                "policies": {model: str(version)[:128] for model, version in list(policies.items())[:256]}}

    def versions(self) -> dict[str, list[str]]:
        with self._lock:
            return {model: sorted(known, key=known.__getitem__, reverse=True) for model, known in self._versions.items()}


def _rule(rule: Any) -> dict[str, Any]:
    return {"keep_rate": rule.keep_rate, "always_keep_below_confidence": rule.always_keep_below_confidence,
            "max_per_hour": rule.max_per_hour}


def _oldest_age_s(spool: Spool, journal: dict[str, Any]) -> float | None:
    """The oldest waiting record's age, on the boot clock (see Spool): never negative, never decades."""
    ages = [age for age in (spool.oldest_age_s() if spool.pending() else None, journal["oldest_record_age_s"]) if age is not None]
    return round(max(ages), 3) if ages else None


def sync_window_s(settings: SyncSettings) -> float:
    """How long the server should expect between this device's syncs: the interval, or the widest gap of the cron."""
    if settings.interval_s is not None:
        return float(settings.interval_s)
    trigger = CronTrigger.from_crontab(settings.schedule, timezone=settings.timezone)
    now = datetime.now(UTC)
    fires: list[datetime] = []
    previous = None
    for _ in range(16):  # a cron can skip days (weekdays only): the widest gap of the next fires
        fire = trigger.get_next_fire_time(previous, previous + timedelta(microseconds=1) if previous else now)
        if fire is None:
            break
        fires.append(fire)
        previous = fire
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(fires, fires[1:])]
    return max(gaps, default=86400.0)


class _Timex(ctypes.Structure):
    # Only ``modes`` is read by the kernel with modes = 0; the rest is room for what it writes back.
    _fields_ = [("modes", ctypes.c_uint), ("rest", ctypes.c_byte * 512)]


def clock_synchronized() -> bool | None:
    """Whether the kernel says the system clock is NTP-synchronized (adjtimex), None where it cannot tell."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = libc.adjtimex(ctypes.byref(_Timex()))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR
