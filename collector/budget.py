"""The agent's memory budget: the working memory it may use above its idle floor, and its shares.

``agent.memory_budget_mb`` is split, not tuned per buffer::

    intake    1/2   request bodies in flight, each charged what its kind costs (``charge``)
    sealing   1/8   the Arrow data of one Parquet row group (the writer's encoded copy of it
                    and the frame being read are about as much again)
    the rest        connection buffers, remembered record ids, allocator slack, sync

A body is charged by its declared kind before it is read. A JSON array is parsed whole:
BODY_COST x its size. An NDJSON body (what the SDK sends) is parsed, validated and built
into Arrow ``slice_bytes`` at a time, so it costs itself, the Arrow it becomes with the
journal's copy of it (NDJSON_ARROW_COST x its size), and one slice's Python objects
(SLICE_COST x ``slice_bytes``); never more than parsing it whole would. A body that could
not fit even alone is refused with 413 before it is read; one that does not fit next to
the bodies already in flight waits, unread, up to BUSY_WAIT_S for them to finish, then is
refused with 503 and ``Retry-After`` (the SDK retries it), so the agent's memory follows
the setting, not the senders.

A slice's Python objects take at most 1/SLICE_SHARE of the intake share (155 KiB slices at
the default 32 MB): the budget bounds the slice, not the body. Each slice pays fixed costs
(an Arrow array per column, a kernel call per privacy rule: about 0.6 ms), so a larger
budget buys fewer, larger slices.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from edgeloop.settings import MiB

__all__ = ["BODY_COST", "BUSY_WAIT_S", "DEFAULT_SLICE_BYTES", "NDJSON_ARROW_COST", "SLICE_COST", "SLICE_SHARE", "MemoryBudget"]

# Bytes of memory one body byte costs while its request is processed; measured by
# tests/collector/test_budget.py: about 17x for vibration JSON at its peak (in validation), 23x for
# a wide vector of zeros (the densest JSON a schema admits), 5x for images.
BODY_COST = 24
# Python bytes one NDJSON slice byte costs while the slice is processed (its lines and the
# validated records); measured by tests/collector/test_budget.py: about 4.5x for vibration, 5x for
# images, 17x for a wide vector of zeros (a Python int per element).
SLICE_COST = 18
# Bytes one NDJSON body byte costs beyond itself until the request is answered: the Arrow it
# becomes, the journal's IPC copy of it, its record ids and listed results; measured by
# tests/collector/test_budget.py: about 2x for vibration, 1.5x for images, 3.7x for a wide vector of zeros.
NDJSON_ARROW_COST = 4
SLICE_SHARE = 6  # one slice's Python objects take at most this fraction of the intake share
BUSY_WAIT_S = 2.0  # a request waits this long for room before 503: the SDK's second request in flight, not a queue


@dataclass
class MemoryBudget:
    """The shares of ``agent.memory_budget_mb`` and the intake bytes charged against it now."""

    total_bytes: int
    in_flight_bytes: int = field(default=0, init=False)
    refused: int = field(default=0, init=False)  # requests answered 503 for want of budget
    _room: asyncio.Event | None = field(default=None, init=False, repr=False)  # set when a charge is released

    @classmethod
    def from_mb(cls, megabytes: int) -> MemoryBudget:
        return cls(megabytes * MiB)

    @property
    def intake_bytes(self) -> int:
        return self.total_bytes // 2

    @property
    def max_body_bytes(self) -> int:
        """The largest body of any kind whose processing fits the intake share on its own (a JSON array's)."""
        return self.intake_bytes // BODY_COST

    @property
    def slice_bytes(self) -> int:
        """NDJSON body bytes processed at a time: their Python objects take 1/SLICE_SHARE of the intake share."""
        return max(1, self.intake_bytes // (SLICE_SHARE * SLICE_COST))

    def charge(self, body_bytes: int, *, ndjson: bool) -> int:
        """What processing a body of ``body_bytes`` costs until it is answered, by its kind."""
        whole = body_bytes * BODY_COST
        if not ndjson:
            return whole
        # A body smaller than a slice is one slice: parsing it whole bounds it.
        return min(whole, body_bytes * (1 + NDJSON_ARROW_COST) + SLICE_COST * self.slice_bytes)

    @property
    def row_group_bytes(self) -> int:
        """Arrow bytes of one Parquet row group at the seal."""
        return self.total_bytes // 8

    def try_reserve(self, body_bytes: int, *, ndjson: bool = False) -> int | None:
        """Charge a body of ``body_bytes`` to the intake share; the charge to ``release``, or None if it does not fit now."""
        charge = self.charge(body_bytes, ndjson=ndjson)
        if self.in_flight_bytes + charge > self.intake_bytes:
            return None
        self.in_flight_bytes += charge
        return charge

    async def reserve(self, body_bytes: int, *, ndjson: bool = False, wait_s: float = BUSY_WAIT_S) -> int | None:
        """``try_reserve``, waiting up to ``wait_s`` for bodies in flight to finish; None (counted in ``refused``) if still no room."""
        deadline = time.monotonic() + wait_s
        while (charge := self.try_reserve(body_bytes, ndjson=ndjson)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.refused += 1
                return None
            try:
                await asyncio.wait_for(self._freed().wait(), remaining)
            except TimeoutError:
                pass
        return charge

    def release(self, charge: int) -> None:
        self.in_flight_bytes -= charge
        if self._room is not None:
            self._room.set()  # every waiter looks again
            self._room = None

    def _freed(self) -> asyncio.Event:
        if self._room is None:
            self._room = asyncio.Event()
        return self._room


DEFAULT_SLICE_BYTES = MemoryBudget.from_mb(32).slice_bytes  # what agent.memory_budget_mb's default gives
