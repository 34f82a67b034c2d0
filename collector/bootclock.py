"""The device's boot clock: seconds of uptime (``CLOCK_BOOTTIME``) and the id of the boot they count from.

The wall clock of a device without an RTC is not to be trusted for order or age: a Pi boots
believing it is 1970 or 2038 and NTP steps it right later. Uptime only moves forward and
counts while the device sleeps; with the boot id beside it, a time saved to disk is
comparable with now while the device has not rebooted. Ages (of batches, quota windows)
are measured on it; a time from an earlier boot can only be read from the wall clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["UNSET_BEFORE", "Moment", "boot_id", "uptime_s", "wall_age_s"]

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


@dataclass(frozen=True, slots=True)
class Moment:
    """A moment of this boot, read on both clocks, so it can be told on today's wall clock."""

    wall_s: float
    uptime_s: float

    @classmethod
    def now(cls) -> Moment:
        return cls(time.time(), uptime_s())

    def age_s(self) -> float:
        return max(0.0, uptime_s() - self.uptime_s)

    def unix_s(self) -> float:
        """When it was, on today's wall clock: as stamped, unless the clock was stepped since (then now minus its age)."""
        age_s, now_s = self.age_s(), time.time()
        # NTP slews a clock by at most 500 ppm; a bigger gap between the two clocks is a step.
        if abs(now_s - self.wall_s - age_s) <= 1.0 + age_s / 1000:
            return self.wall_s
        return now_s - age_s

    def at(self) -> datetime:
        return datetime.fromtimestamp(self.unix_s(), UTC)


def wall_age_s(wall_s: float, now_s: float | None = None) -> float | None:
    """Seconds since ``wall_s`` on the wall clock; None when that time is in the future or before the clock was set."""
    now_s = time.time() if now_s is None else now_s
    if wall_s > now_s or wall_s < UNSET_BEFORE:
        return None
    return now_s - wall_s
