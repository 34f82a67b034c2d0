"""What sync must remember across a restart: its backoff, and what the last syncs did.

An agent restarted during an outage (systemd ``Restart=``, a crash loop, a reboot after a
power cut) must not forget that ingest was failing: it would retry at once, and a fleet
rebooted together would hit the server together. Fluent Bit and Greengrass' stream manager
keep only the data across a restart and retry the backlog as soon as they are up; edgeloop
keeps the schedule too. ``<state_dir>/sync.json``, written with ``edgeloop.durable`` after
every sync, holds the failures in a row, when the retry is due, the last result and the last
success, when a high-water sync may run again, the next scheduled sync, a random jitter
offset (drawn when there is neither seed nor token) and what the status report carries
(failures in a row, last success, the server's clock offset, the last report, the outcomes
not reported yet, the model versions the app logged). Times are wall-clock ISO strings: a boot-clock time means nothing after
a reboot. A file that cannot be read starts afresh (logged); one that cannot be written is
logged (rate-limited) and written again after the next sync.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from edgeloop.durable import write_durably
from edgeloop.logs import RateLimitedLogger

__all__ = ["SYNC_STATE_FILE", "SyncState"]

log = logging.getLogger(__name__)

SYNC_STATE_FILE = "sync.json"


@dataclass
class SyncState:
    """The sync schedule's and the status report's memory; ``load`` and ``save`` it in the state dir."""

    failures_in_a_row: int = 0  # scheduled, retry and high-water syncs that failed since the last success
    retry_at: str | None = None
    last_result: dict[str, Any] | None = None  # SyncResult.as_dict() of the last sync
    last_success_at: str | None = None
    high_water_not_before: str | None = None
    next_sync_at: str | None = None
    jitter_window_s: float | None = None  # the window a random offset was drawn in (None: the offset is not random)
    jitter_offset_s: float | None = None
    report: dict[str, Any] = field(default_factory=dict)  # StatusReporter.state()

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """The state saved at ``path``; a fresh one if there is none or it cannot be read."""
        try:
            saved = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("cannot read the saved sync state; sync starts afresh", extra={"path": str(path), "error": str(exc)})
            return cls()
        if not isinstance(saved, dict):
            return cls()
        state = cls()
        for spec in fields(cls):
            value = saved.get(spec.name)
            if value is not None and _fits(spec.name, value):
                setattr(state, spec.name, value)
        return state

    def save(self, path: Path, errors: RateLimitedLogger) -> None:
        """Write the state durably; a failure is logged (rate-limited): the next sync writes it again."""
        try:
            write_durably(path, orjson.dumps(asdict(self)), mode=0o600)
        except OSError as exc:
            errors.log(logging.WARNING, "sync-state", "cannot save the sync state", path=str(path), error=str(exc))


def _fits(name: str, value: Any) -> bool:
    """A saved value of the type its field holds (a hand edit or an older agent may have written anything)."""
    if name == "failures_in_a_row":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if name in ("jitter_window_s", "jitter_offset_s"):
        return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    if name in ("last_result", "report"):
        return isinstance(value, dict)
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False
