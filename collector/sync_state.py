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
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from edgeloop.durable import write_durably
from edgeloop.logs import RateLimitedLogger

__all__ = ["SYNC_STATE_FILE", "SyncState"]

log = logging.getLogger(__name__)

SYNC_STATE_FILE = "sync.json"


def _aware(stamp: str) -> str:
    if datetime.fromisoformat(stamp).tzinfo is None:
        raise ValueError("a saved time needs its zone")
    return stamp


WallTime = Annotated[str, AfterValidator(_aware)]  # an ISO wall-clock time with its zone, kept as written
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class SyncState(BaseModel):
    """The sync schedule's and the status report's memory; ``load`` and ``save`` it in the state dir."""

    model_config = {"strict": True}  # a hand edit's true is not 1, its "5" not 5

    failures_in_a_row: Annotated[int, Field(ge=0)] = 0  # scheduled, retry and high-water syncs that failed since the last success
    retry_at: WallTime | None = None
    last_result: dict[str, Any] | None = None  # SyncResult.as_dict() of the last sync
    last_success_at: WallTime | None = None
    high_water_not_before: WallTime | None = None
    next_sync_at: WallTime | None = None
    jitter_window_s: Seconds | None = None  # the window a random offset was drawn in (None: the offset is not random)
    jitter_offset_s: Seconds | None = None
    report: dict[str, Any] = Field(default_factory=dict)  # StatusReporter.state()

    @field_validator("*", mode="wrap")
    @classmethod
    def _or_default(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """A saved value of the wrong type (a hand edit, an older agent) is forgotten, not the whole file."""
        try:
            return handler(value)
        except ValidationError:
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)

    @classmethod
    def load(cls, path: Path) -> SyncState:
        """The state saved at ``path``; a fresh one if there is none or it cannot be read."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, ValidationError) as exc:  # not JSON, or not an object
            log.warning("cannot read the saved sync state; sync starts afresh", extra={"path": str(path), "error": str(exc)})
            return cls()

    def save(self, path: Path, errors: RateLimitedLogger) -> None:
        """Write the state durably; a failure is logged (rate-limited): the next sync writes it again."""
        try:
            write_durably(path, self.model_dump_json().encode(), mode=0o600)
        except OSError as exc:
            errors.log(logging.WARNING, "sync-state", "cannot save the sync state", path=str(path), error=str(exc))
