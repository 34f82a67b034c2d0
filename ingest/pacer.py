"""The Pacer: tells each refused upload when the landing queue will have room for it.

With one fixed Retry-After, every device refused in a burst comes back at the same moment:
the writer drains the queue and then idles until the herd returns, and most of the herd is
refused again. The pacer instead hands out return times one landing-interval apart, starting
when the current backlog will have landed at the writer's recent rate, so refused devices
return spread out at the rate the writer can take them (the same idea as a token bucket's
schedule). Until a rate has been measured it answers the configured fixed value.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

__all__ = ["Pacer"]


class Pacer:
    """Retry-After values for 429s, spread at the writer's measured landing rate."""

    def __init__(self, *, default_s: int, max_s: int, window_s: float = 10.0) -> None:
        self.default_s = default_s
        self.max_s = max(max_s, default_s)
        self.window_s = window_s
        self._landed: deque[tuple[float, int]] = deque()  # (monotonic s, batches) per group commit
        self._lock = threading.Lock()  # landed() runs on the writer thread
        self._next_s = 0.0  # the earliest return time not yet handed out

    def landed(self, batches: int, now: float | None = None) -> None:
        """Count one group commit of ``batches`` (called by the writer)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._landed.append((now, batches))
            while self._landed and self._landed[0][0] < now - self.window_s:
                self._landed.popleft()

    def rate(self, now: float | None = None) -> float | None:
        """Batches landed per second over the window, or None before two commits half a second apart."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [(t, n) for t, n in self._landed if t >= now - self.window_s]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < 0.5:
            return None
        return sum(n for _, n in recent[1:]) / (recent[-1][0] - recent[0][0])

    def retry_after_s(self, backlog: int, now: float | None = None) -> int:
        """Seconds the next refused upload should wait: after ``backlog`` batches land and those told before it."""
        now = time.monotonic() if now is None else now
        rate = self.rate(now)
        if rate is None:
            return self.default_s
        at = max(now + backlog / rate, min(self._next_s, now + self.max_s))  # a stale schedule never outlives max_s
        self._next_s = at + 1 / rate
        return min(self.max_s, max(1, math.ceil(at - now)))
