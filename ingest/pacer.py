"""The Pacer: gives each refused upload its own place in line, so a refused burst comes back at the rate the writer lands.

With one fixed Retry-After, every device refused in a burst comes back at the same moment:
either before the queue has room (refused again, the bodies sent for nothing) or after the
writer has drained it and idled. A wait drawn around the queue's drain time is no better
once the burst is larger than the queue: every refusal is told the same window, so the
whole burst returns inside the time that only the queue's worth of uploads needs, and most
are refused again. The pacer instead counts the uploads it has already told to come back
and have not yet come: the next refused upload is told to return when half the current
queue and all of those have landed at the writer's measured rate. Returns then arrive
about as fast as the writer lands them, the queue stays half full, and the writer never
idles while devices sleep. The rate is the writer's while it had work waiting (what the
server can land, not what devices happened to send); until one has been measured the pacer
answers the configured fixed value, and it never answers more than ``max_s``.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import deque

__all__ = ["Pacer"]


class Pacer:
    """Retry-After values for 429s: a place in line behind half the queue and every upload already told to return."""

    def __init__(self, *, default_s: int, max_s: int, window_s: float = 10.0) -> None:
        self.default_s = default_s
        self.max_s = max(max_s, default_s)
        self.window_s = window_s
        self._busy: deque[tuple[float, float, int]] = deque()  # (monotonic s, seconds since the last commit, batches)
        self._last: tuple[float, bool] | None = None  # the last commit: when, and whether more work was waiting
        self._rate: float | None = None  # kept past the window: a burst after a quiet spell meets the same writer
        self._promised: list[float] = []  # heap of monotonic times refused uploads were told to come back
        self._lock = threading.Lock()  # landed() runs on the writer thread

    def landed(self, batches: int, *, more_waiting: bool, now: float | None = None) -> None:
        """Count one group commit of ``batches`` (called by the writer); ``more_waiting``: uploads were admitted beyond it.

        Only the time between commits with work waiting counts: that is what the server can
        land, while a rate over idle gaps is only what the devices happened to send.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._last is not None and self._last[1]:
                self._busy.append((now, now - self._last[0], batches))
            self._last = (now, more_waiting)
            while self._busy and self._busy[0][0] < now - self.window_s:
                self._busy.popleft()
            busy_s = sum(seconds for _, seconds, _ in self._busy)
            if busy_s >= 0.5:
                self._rate = sum(n for _, _, n in self._busy) / busy_s

    def retry_after_s(self, backlog: int, now: float | None = None) -> int:
        """Seconds a refused upload should wait: until half of ``backlog`` and every upload told before it have landed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            rate = self._rate
            while self._promised and self._promised[0] <= now:
                heapq.heappop(self._promised)
            if rate is None:
                return self.default_s
            ahead = backlog / 2 + len(self._promised) + 1
            wait_s = min(self.max_s, max(1, math.ceil(ahead / rate)))
            heapq.heappush(self._promised, now + wait_s)
            return wait_s
