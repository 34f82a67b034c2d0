"""The record ids the agent accepted lately, so a resent record is stored once.

A client that did not see the agent's answer (the agent was killed after the journal fsync,
a connection dropped) resends; that is the normal case, so a record id already accepted is
answered ``accepted`` again, flagged ``duplicate``, and not stored a second time.

Ids are remembered per model and kind (a feedback record may reuse its prediction's id:
another table on the server), in generations of sets of ``capacity / GENERATIONS`` ids each:
at least the last ``capacity`` ids are kept and at most two generations more (about 90
bytes each: 6.6 MB for the default 50,000, where two generations of ``capacity`` held up to
9 MB), for a lookup of at most GENERATIONS + 2 set probes. On
start the window is refilled from the newest sealed batches (at most ``LOAD_MAX_BATCHES``)
and the journal segments recovery could not seal, so a resend after a SIGKILL is recognized.
Beyond the window the ingest server's own ``record_id`` check still holds.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from edgeloop.collector.journal import SegmentReader
from edgeloop.collector.spool import Spool

__all__ = ["RecentIds"]

log = logging.getLogger(__name__)

# A resend follows a crash within seconds: its first copy is in the newest batches (those the
# recovery just sealed among them). Reading more would slow every start for little gain.
LOAD_MAX_BATCHES = 16
# Generations in the window: more keep fewer ids past the capacity, at a set probe each per lookup.
GENERATIONS = 4


class RecentIds:
    """A bounded window of accepted record ids; keys are ``id bytes + tag(model, kind)``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._generation_size = max(1, -(-capacity // GENERATIONS))
        self._current: set[bytes] = set()
        self._older: deque[set[bytes]] = deque()  # oldest first, each of _generation_size ids
        self._older_ids = 0
        self._tags: dict[tuple[str, str], bytes] = {}

    def tag(self, model: str, kind: str) -> bytes:
        """Two bytes naming (model, kind), appended to a 16-byte id to make its key."""
        tag = self._tags.get((model, kind))
        if tag is None:
            tag = self._tags[(model, kind)] = len(self._tags).to_bytes(2, "big")
        return tag

    def __contains__(self, key: object) -> bool:
        if key in self._current:
            return True
        for generation in self._older:
            if key in generation:
                return True
        return False

    def __len__(self) -> int:
        return len(self._current) + self._older_ids

    def add(self, keys: Iterable[bytes]) -> None:
        """Remember ``keys``; call only once the records they name are in the journal."""
        if not self.capacity:
            return
        self._current.update(keys)
        if len(self._current) < self._generation_size:
            return
        self._older.append(self._current)
        self._older_ids += len(self._current)
        self._current = set()
        while self._older_ids - len(self._older[0]) >= self.capacity:  # the rest still hold the last capacity ids
            self._older_ids -= len(self._older.popleft())

    def discard(self, keys: Iterable[bytes]) -> None:
        """Forget ``keys``: their records were refused after all (the journal fsync failed), so a resend is new."""
        for key in keys:
            self._current.discard(key)
            for generation in self._older:
                if key in generation:
                    generation.discard(key)
                    self._older_ids -= 1

    def load(self, spool: Spool, segments: Iterable[tuple[str, Path]] = ()) -> int:
        """Refill the window from the newest sealed batches, then journal ``segments`` recovery left
        unsealed (model, path); returns the ids loaded."""
        if not self.capacity:
            return 0
        chosen, rows = [], 0
        for batch in reversed(spool.pending()):
            if rows >= self.capacity or len(chosen) >= LOAD_MAX_BATCHES:
                break
            chosen.append(batch)
            rows += batch.rows
        loaded = 0
        for batch in reversed(chosen):  # oldest first, so the newest end up in the current generation
            try:
                # ParquetFile, not read_table: read_table loads pyarrow.dataset and Acero, which the agent never needs.
                with pq.ParquetFile(batch.path) as parquet:
                    table = parquet.read(columns=["record_id", "kind"], use_threads=False)
            except (OSError, pa.ArrowException) as exc:
                log.warning("cannot read record ids of a batch", extra={"batch_id": batch.batch_id, "error": repr(exc)})
                continue
            loaded += self._add_table(batch.model, table)
        for model, path in segments:
            for frame in SegmentReader(path):
                loaded += self._add_table(model, pa.Table.from_batches([frame]))
        return loaded

    def _add_table(self, model: str, table: pa.Table) -> int:
        ids = table.column("record_id").combine_chunks()
        storage = ids.storage if isinstance(ids, pa.ExtensionArray) else ids
        tags = {kind: self.tag(model, kind) for kind in ("prediction", "feedback")}
        kinds = table.column("kind").to_pylist()
        self.add(raw + tags[kind] for raw, kind in zip(storage.to_pylist(), kinds, strict=True))
        return table.num_rows
