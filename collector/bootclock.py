"""The device's boot clock: seconds of uptime (``CLOCK_BOOTTIME``) and the id of the boot they count from.

The wall clock of a device without an RTC is not to be trusted for order or age: a Pi boots
believing it is 1970 or 2038 and NTP steps it right later. Uptime only moves forward and
counts while the device sleeps; with the boot id beside it, a time saved to disk is
comparable with now while the device has not rebooted. Ages (of batches, quota windows)
are measured on it; a time from an earlier boot can only be read from the wall clock.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["UNSET_BEFORE", "boot_id", "uptime_s", "wall_age_s"]

_UPTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# A wall time before this was stamped by a clock NTP had not set yet (UUIDv7 itself is from 2024).
UNSET_BEFORE = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def uptime_s() -> float:
    """Seconds on a clock that only moves forward, whatever the wall clock does."""
    return time.clock_gettime(_UPTIME)


def boot_id() -> str:
    """This boot's id (the kernel's), so uptimes saved by an earlier boot are not compared with now."""
    global _boot_id
    if _boot_id is None:
        try:
            with open(_BOOT_ID_PATH, encoding="ascii") as handle:
                _boot_id = handle.read().strip()
        except OSError:  # not Linux: uptimes saved before a restart are read as from another boot
            _boot_id = f"unknown-{time.time_ns()}"
    return _boot_id


_boot_id: str | None = None


def wall_age_s(wall_s: float, now_s: float | None = None) -> float | None:
    """Seconds since ``wall_s`` on the wall clock; None when that time is in the future or before the clock was set."""
    now_s = time.time() if now_s is None else now_s
    if wall_s > now_s or wall_s < UNSET_BEFORE:
        return None
    return now_s - wall_s
