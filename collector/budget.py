"""The agent's memory budget: the working memory it may use above its idle floor, and its shares.

``agent.memory_budget_mb`` is split, not tuned per buffer::

    intake    1/2   request bodies in flight, each charged BODY_COST x its size (the JSON
                    parsed into Python objects, validated, built into Arrow, journaled)
    sealing   1/8   the Arrow data of one Parquet row group (the writer's encoded copy of it
                    and the frame being read are about as much again)
    the rest        connection buffers, remembered record ids, allocator slack, sync

A body that could not fit even alone is refused with 413 before it is read; one that does
not fit next to the bodies already in flight waits, unread, up to BUSY_WAIT_S for them to
finish, then is refused with 503 and ``Retry-After`` (the SDK retries it), so the agent's
memory follows the setting, not the senders.

An NDJSON body is parsed, validated and built into Arrow ``slice_bytes`` at a time: a fifth
of the largest body the intake share admits (136 KiB at the default 32 MB). Each slice pays
fixed costs (an Arrow array per column, a kernel call per privacy rule: about 0.6 ms), so a
larger budget buys fewer, larger slices; only one slice is ever Python objects (about
SLICE_COST times its size), and the body's lines are never all copied at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from edgeloop.settings import MiB

__all__ = ["BODY_COST", "BUSY_WAIT_S", "DEFAULT_SLICE_BYTES", "SLICE_COST", "SLICES_PER_BODY", "MemoryBudget"]

# Bytes of memory one body byte costs while its request is processed; measured by
# tests/collector/test_budget.py: about 17x for vibration JSON at its peak (in validation), 23x for
# a wide vector of zeros (the densest JSON a schema admits), 5x for images.
BODY_COST = 24
# Python bytes one NDJSON slice byte costs while the slice is processed (its lines and the
# validated records); measured by tests/collector/test_budget.py: about 4x for vibration (6x while
# orjson's dicts came before pydantic's), more when a slice holds a line that is not a valid record.
SLICE_COST = 8
SLICES_PER_BODY = 5  # the largest admitted body is at most this many slices
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
        """The largest body whose processing fits the intake share on its own."""
        return self.intake_bytes // BODY_COST

    @property
    def slice_bytes(self) -> int:
        """NDJSON body bytes processed at a time: the largest admitted body in SLICES_PER_BODY slices."""
        return max(1, self.max_body_bytes // SLICES_PER_BODY)

    @property
    def row_group_bytes(self) -> int:
        """Arrow bytes of one Parquet row group at the seal."""
        return self.total_bytes // 8

    def try_reserve(self, body_bytes: int) -> int | None:
        """Charge a body of ``body_bytes`` to the intake share; the charge to ``release``, or None if it does not fit now."""
        charge = body_bytes * BODY_COST
        if self.in_flight_bytes + charge > self.intake_bytes:
            return None
        self.in_flight_bytes += charge
        return charge

    async def reserve(self, body_bytes: int, wait_s: float = BUSY_WAIT_S) -> int | None:
        """``try_reserve``, waiting up to ``wait_s`` for bodies in flight to finish; None (counted in ``refused``) if still no room."""
        deadline = time.monotonic() + wait_s
        while (charge := self.try_reserve(body_bytes)) is None:
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
