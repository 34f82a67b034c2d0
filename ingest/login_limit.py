"""Failed dashboard logins per client address: a token bucket each, in memory, bounded.

Each client (``session.client_key``: an IPv4 address or an IPv6 /64) may fail ``burst`` logins
at once, then one more every ``refill_s``. A try takes its token before the token is checked
and a right one gives it back, so tries sent in parallel get no more than the burst and a
client that logs in right is never slowed; one address's failures never touch another's.
A restart forgets the counts, as it forgets the sessions.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

__all__ = ["FailedLogins"]

MAX_CLIENTS = 10_000  # addresses tracked at once: past it the one touched longest ago is forgotten


class FailedLogins:
    """Per client: (tokens, when they were counted), least recently touched first."""

    def __init__(self, *, burst: int, refill_s: float, max_clients: int = MAX_CLIENTS, clock=time.monotonic) -> None:
        self.burst = burst
        self.refill_s = refill_s
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self.burst, now))
        return min(float(self.burst), tokens + (now - at) / self.refill_s)

    def attempt(self, client: str) -> float:
        """Take a try: 0 if the client may check a token now, else the seconds until it may (nothing taken)."""
        with self._lock:
            now = self._clock()
            tokens = self._tokens(client, now)
            if tokens < 1:
                return (1 - tokens) * self.refill_s
            self._buckets[client] = (tokens - 1, now)
            self._buckets.move_to_end(client)
            self._forget(now)
            return 0.0

    def succeeded(self, client: str) -> None:
        """Give back the try a right token took."""
        with self._lock:
            if client in self._buckets:
                now = self._clock()
                self._buckets[client] = (min(float(self.burst), self._tokens(client, now) + 1), now)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _forget(self, now: float) -> None:
        # A full bucket is the same as none; past max_clients the least recently touched goes even if it is not.
        while self._buckets:
            client = next(iter(self._buckets))
            if len(self._buckets) <= self.max_clients and self._tokens(client, now) < self.burst:
                return
            del self._buckets[client]
