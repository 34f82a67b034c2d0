"""A wall clock set off by ``EDGELOOP_TEST_CLOCK_OFFSET_S`` seconds for the process it starts in (a test's agent).

What libfaketime does, for Python: ``time.time``, ``time.time_ns``, ``datetime.now`` and the
UUIDv7s ``uuid_utils`` mints (its own reading of the clock) are shifted; ``time.monotonic`` and
the uptime clock are not, as on a device whose wall clock is wrong.

``EDGELOOP_TEST_CLOCK_FILE`` names a file holding the offset instead, read again as the process
runs, so a test can step the clock of a running agent (NTP correcting it). ``EDGELOOP_TEST_BOOT_ID``
is the boot id the agent reads, so a test can reboot the device without rebooting the machine.
"""

import datetime as _datetime
import os
import time

_offset_s = float(os.environ.get("EDGELOOP_TEST_CLOCK_OFFSET_S", "0"))
_clock_file = os.environ.get("EDGELOOP_TEST_CLOCK_FILE")
_boot_id = os.environ.get("EDGELOOP_TEST_BOOT_ID")


def _offset() -> float:
    if _clock_file is None:
        return _offset_s
    try:
        with open(_clock_file, encoding="ascii") as handle:
            return float(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


if _offset_s or _clock_file:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _offset()
    time.time_ns = lambda: _time_ns() + int(_offset() * 1e9)

    class _ShiftedDatetime(_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return _datetime.datetime.fromtimestamp(time.time(), tz)

        @classmethod
        def utcnow(cls):
            return _datetime.datetime.fromtimestamp(time.time(), _datetime.UTC).replace(tzinfo=None)

    _datetime.datetime = _ShiftedDatetime

    import uuid_utils

    _uuid7 = uuid_utils.uuid7
    uuid_utils.uuid7 = lambda nanoseconds=None: _uuid7(nanoseconds=time.time_ns() if nanoseconds is None else nanoseconds)

if _boot_id:
    from edgeloop.collector import bootclock

    bootclock.boot_id = lambda: _boot_id
