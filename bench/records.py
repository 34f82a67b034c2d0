"""The records every row feeds its side and the reference: simulated, sealed, as JSON or as Parquet bodies."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import uuid_utils

from bench.harness import FLEET_KEY, Bench
from bench.simulator import SimulatedModel


def simulated(model: str, n: int, *, seed: int = 1, feedback_ratio: float = 0.05) -> list[dict[str, Any]]:
    return list(SimulatedModel(model, seed=seed).records(n, feedback_ratio=feedback_ratio))


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def write_ndjson(path: Path, model: str, n: int, *, seed: int) -> int:
    """Simulated records as NDJSON, streamed so a million records never sit in memory."""
    sim = SimulatedModel(model, seed=seed)
    with open(path, "wb") as out:
        for start in range(0, n, 10_000):
            out.write(b"".join(dumps(r) + b"\n" for r in sim.records(min(10_000, n - start))))
    return n


def sealed_table(bench: Bench, model: str, records: list[dict[str, Any]]) -> pa.Table:
    """The rows edgeloop seals for these records: the agent's pipeline (privacy on, sampling keeping all)."""
    from edgeloop.collector.config import SamplingSettings
    from edgeloop.collector.pipeline import Pipeline

    pipeline = Pipeline(bench.registry, SamplingSettings(seed=1), FLEET_KEY)
    batches = []
    for start in range(0, len(records), 1000):  # as the SDK sends them: requests of up to 1,000
        processed = pipeline.process(records[start : start + 1000])
        if processed.invalid:
            raise RuntimeError(f"simulated {model} records are invalid: {processed.results[:3]}")
        batches.extend(processed.batches.values())
    return pa.Table.from_batches(batches)


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of a sealed table as the JSON objects a JSON collector would send."""
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, bytes):
                row[key] = base64.b64encode(value).decode() if len(value) != 16 else str(uuid.UUID(bytes=value))
            elif isinstance(value, datetime):
                row[key] = value.isoformat().replace("+00:00", "Z")
            elif hasattr(value, "hex") and not isinstance(value, (int, float, str)):
                row[key] = str(value)
    return rows


def parquet_bodies(bench: Bench, model: str, rows: int, count: int, *, seed: int) -> list[tuple[str, bytes]]:
    """``count`` sealed batches of ``rows`` simulated records each (fresh record ids), as (batch id, file bytes)."""
    from edgeloop.collector.config import SpoolSettings
    from edgeloop.collector.spool import Spool

    table = sealed_table(bench, model, simulated(model, rows, seed=seed, feedback_ratio=0.0))
    spool = Spool(bench.folder(f"bodies-{model}-{rows}"), SpoolSettings(), agent_version="bench")
    ids_at = table.schema.get_field_index("record_id")
    bodies = []
    for _ in range(count):
        # Fresh record ids per batch (the server deduplicates records), minted as agents mint them: UUIDv7, time-ordered.
        ids = pa.array([uuid_utils.uuid7().bytes for _ in range(rows)], table.schema.field(ids_at).type)
        batch = spool.write_batch(table.set_column(ids_at, table.schema.field(ids_at), ids), schema=bench.registry[model])
        bodies.append((batch.batch_id, batch.path.read_bytes()))
        batch.path.unlink()
    return bodies
