"""The Pacer: tells refused uploads to come back spread over the time the landing queue needs to drain.

With one fixed Retry-After, every device refused in a burst comes back at the same moment:
either before the queue has room (refused again, the bodies sent for nothing) or after the
writer has drained it and idled. The pacer estimates how long the current backlog takes to
land at the writer's recent rate and hands each refused upload a random wait between half
and one and a half times that ("jitter", as AWS's backoff advice puts it), so refused
devices return spread out while the writer works through the queue. Until a rate has been
measured it answers the configured fixed value; it never answers more than ``max_s``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque

__all__ = ["Pacer"]


class Pacer:
    """Retry-After values for 429s: the backlog's drain time at the measured landing rate, jittered."""

    def __init__(self, *, default_s: int, max_s: int, window_s: float = 10.0, rng: random.Random | None = None) -> None:
        self.default_s = default_s
        self.max_s = max(max_s, default_s)
        self.window_s = window_s
        self._rng = rng or random.Random()
        self._landed: deque[tuple[float, int]] = deque()  # (monotonic s, batches) per group commit
        self._lock = threading.Lock()  # landed() runs on the writer thread

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
        """Seconds a refused upload should wait: a random point in [0.5, 1.5] × the backlog's drain time."""
        rate = self.rate(now)
        if rate is None:
            return self.default_s
        drain_s = backlog / rate
        low = max(1, math.ceil(drain_s / 2))
        high = max(low, math.ceil(drain_s * 1.5))
        return min(self.max_s, self._rng.randint(low, high))
