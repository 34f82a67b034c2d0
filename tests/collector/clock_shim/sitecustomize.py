"""A wall clock set off by ``EDGELOOP_TEST_CLOCK_OFFSET_S`` seconds for the process it starts in (a test's agent).

What libfaketime does, for Python: ``time.time``, ``time.time_ns``, ``datetime.now`` and the
UUIDv7s ``uuid_utils`` mints (its own reading of the clock) are shifted; ``time.monotonic`` is
not, as on a device whose wall clock is wrong.
"""

import datetime as _datetime
import os
import time

_offset_s = float(os.environ.get("EDGELOOP_TEST_CLOCK_OFFSET_S", "0"))

if _offset_s:
    _time, _time_ns = time.time, time.time_ns
    _offset_ns = int(_offset_s * 1e9)
    time.time = lambda: _time() + _offset_s
    time.time_ns = lambda: _time_ns() + _offset_ns

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
