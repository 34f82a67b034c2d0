"""Row 1, device intake: records/s from the SDK into sealed Parquet, next to pyarrow alone.

A real agent with privacy on (the example schema's rules) and sampling on (the example
config's: vibration keep_rate 0.25, always keep below confidence 0.6). This process plays
the inference app: it logs the records through ``Client`` (waiting while the SDK buffer is
over half full, as an app that must not drop would), flushes the SDK and seals the journal.
Rate = records / (first log call → last batch sealed). The reference: pyarrow alone turning
the same records into one zstd Parquet file, with no validation, sampling, privacy, journal
or fsync.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import Agent, Bench, Goal, Row, agent_config
from bench.records import simulated

NUMBERS = (1,)
TITLE = "device intake"
SAMPLING = "[sampling]\nseed = 1\n[sampling.models.vibration]\nkeep_rate = 0.25\nalways_keep_below_confidence = 0.6\n"


def log_all(client: Any, records: list[dict[str, Any]]) -> None:
    """Log records as an app would; wait (never drop) when the SDK buffer is half full."""
    high = client.max_buffer // 2
    for count, r in enumerate(records):
        if r["kind"] == "prediction":
            client.log_prediction(r["model"], r["model_version"], r["inputs"], r["outputs"], record_id=r["record_id"])
        else:
            client.log_feedback(r["prediction_id"], r["model"], r["model_version"], r["feedback"], source=r.get("source"))
        if count % 1024 == 0:
            while client.buffered > high:
                time.sleep(0.0005)


def pyarrow_alone(records: list[dict[str, Any]], path: Any) -> float:
    """Seconds for pyarrow alone to write the same records as one zstd Parquet file."""
    started = time.perf_counter()
    flat = [
        {
            "record_id": r["record_id"],
            "kind": r["kind"],
            "model": r["model"],
            "model_version": r["model_version"],
            "prediction_id": r.get("prediction_id"),
            **r.get("inputs", {}),
            **r.get("outputs", {}),
            **r.get("feedback", {}),
        }
        for r in records
    ]
    pq.write_table(pa.Table.from_pylist(flat), path, compression="zstd", compression_level=3)
    return time.perf_counter() - started


def measure(bench: Bench) -> list[Row]:
    from edgeloop.collector.client import Client

    n = 20_000 if bench.quick else 300_000
    records = simulated("vibration", n, seed=31)
    folder = bench.folder("intake")
    with Agent(folder, agent_config(folder, sampling=SAMPLING)) as agent:
        client = Client(agent.socket)
        started = time.perf_counter()
        log_all(client, records)
        logged_s = time.perf_counter() - started
        if not client.flush(timeout_s=600):
            raise RuntimeError("the SDK did not drain within 600 s")
        agent.call("POST", "/v1/flush")
        elapsed = time.perf_counter() - started
        sdk = client.stats()
        client.close()
        status = agent.call("GET", "/v1/status")
    if sdk["dropped"] or sdk["invalid"]:
        raise RuntimeError(f"records were lost on the way: {sdk}")
    reference_s = pyarrow_alone(records, folder / "pyarrow.parquet")
    bench.details.update(
        records=n,
        logged_per_s=n / logged_s,
        kept_after_sampling=status["spool"]["records"],
        batches=status["spool"]["batches"],
        journal_fsyncs=status["journal"]["fsyncs"],
    )
    return [
        Row(1, "device intake, records/s (SDK → sealed Parquet)", "/s", n / elapsed, "pyarrow alone", n / reference_s,
            goals=(Goal("edgeloop", ">=", 100_000), Goal("ratio", ">=", 0.25)),
            note=f"{n:,} records, privacy and sampling on"),
    ]
