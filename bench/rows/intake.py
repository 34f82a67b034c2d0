"""Row 1, device intake: records/s from the SDK into sealed Parquet, next to pyarrow alone.

A real agent with privacy on (the example schema's rules) and sampling on (the example
config's: vibration keep_rate 0.25, always keep below confidence 0.6). This process plays
the inference app: it logs the records through ``Client`` (waiting while the SDK buffer is
over half full, as an app that must not drop would), flushes the SDK and seals the journal.
Rate = records / (first log call → last batch sealed). The reference: pyarrow alone turning
the same records into one zstd Parquet file, with no validation, sampling, privacy, journal
or fsync.

The run also accounts for its wall time per thread (``/proc/<pid>/task/<tid>/schedstat``:
time on a CPU, time runnable but waiting for one; the rest is idle, waiting on I/O or on
another thread): the agent's event loop, the agent's other threads (journal fsync, seal),
the app's thread and the SDK's sender. A loop near 100% busy (on CPU + waiting for a CPU)
binds; time waiting for a CPU is the machine's other work, or the app's threads.
"""

from __future__ import annotations

import os
import threading
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


def _threads(pid: int) -> dict[int, tuple[float, float]]:
    """Thread id -> (seconds on a CPU, seconds runnable waiting for one) so far."""
    times = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                on_cpu_ns, waiting_ns = handle.read().split()[:2]
        except OSError:
            continue  # the thread ended
        times[int(tid)] = (int(on_cpu_ns) / 1e9, int(waiting_ns) / 1e9)
    return times


def accounting(before: dict[int, dict[int, tuple[float, float]]], after: dict[int, dict[int, tuple[float, float]]],
               groups: dict[str, tuple[int, set[int] | None]], elapsed_s: float, records: int) -> dict[str, Any]:
    """Per group of threads: share of the run on a CPU, waiting for one, idle; CPU µs per record."""
    out = {}
    for name, (pid, tids) in groups.items():
        on_cpu = waiting = 0.0
        for tid, (cpu_s, wait_s) in after[pid].items():
            if tids is None or tid in tids:
                was = before[pid].get(tid, (0.0, 0.0))
                on_cpu, waiting = on_cpu + cpu_s - was[0], waiting + wait_s - was[1]
        threads = 1 if tids is None else max(1, len(tids))
        out[name] = {
            "on_cpu_share": round(on_cpu / elapsed_s, 3),
            "waiting_for_cpu_share": round(waiting / elapsed_s, 3),
            "cpu_us_per_record": round(on_cpu / records * 1e6, 2),
            **({"idle_share": round(1 - (on_cpu + waiting) / elapsed_s, 3)} if threads == 1 else {}),
        }
    return out


def measure(bench: Bench) -> list[Row]:
    from edgeloop.collector.client import Client

    n = 20_000 if bench.quick else 300_000
    records = simulated("vibration", n, seed=31)
    folder = bench.folder("intake")
    with Agent(folder, agent_config(folder, sampling=SAMPLING)) as agent:
        client = Client(agent.socket)
        pids = (agent.proc.pid, os.getpid())
        before = {pid: _threads(pid) for pid in pids}
        started = time.perf_counter()
        log_all(client, records)
        logged_s = time.perf_counter() - started
        if not client.flush(timeout_s=600):
            raise RuntimeError("the SDK did not drain within 600 s")
        agent.call("POST", "/v1/flush")
        elapsed = time.perf_counter() - started
        after = {pid: _threads(pid) for pid in pids}
        loop, sender, app = agent.proc.pid, client._thread.native_id, threading.get_native_id()
        groups = {
            "agent_event_loop": (loop, {loop}),
            "agent_other_threads": (loop, set(after[loop]) - {loop}),
            "app_thread": (os.getpid(), {app}),
            "sdk_sender": (os.getpid(), {sender}),
        }
        threads = accounting(before, after, groups, elapsed, n)
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
        threads=threads,
        load_average=os.getloadavg()[0],
    )
    return [
        Row(1, "device intake, records/s (SDK → sealed Parquet)", "/s", n / elapsed, "pyarrow alone", n / reference_s,
            goals=(Goal("edgeloop", ">=", 100_000), Goal("ratio", ">=", 0.25)),
            note=f"{n:,} records, privacy and sampling on"),
    ]


def summarize(details: list[dict[str, Any]], out_dir: Any, machine: str) -> dict[str, Any]:
    """Where row 1's wall time went, per thread (the median over the runs)."""
    import statistics

    runs = [run["threads"] for run in details if run.get("threads")]
    if not runs:
        return {"text": ""}
    loads = ", ".join(f"{run.get('load_average', 0):.1f}" for run in details)
    lines = [f"Row 1, each thread's share of the run (median of {len(runs)}; load average at the end {loads}):", "",
             f"  {'thread':22} {'on a CPU':>9} {'waiting for a CPU':>18} {'idle':>6} {'CPU µs/record':>14}"]
    for name in runs[0]:
        cell = {key: statistics.median(run[name].get(key, 0.0) for run in runs)
                for key in ("on_cpu_share", "waiting_for_cpu_share", "idle_share", "cpu_us_per_record")}
        idle = f"{cell['idle_share']:6.0%}" if "idle_share" in runs[0][name] else f"{'':6}"
        lines.append(f"  {name:22} {cell['on_cpu_share']:9.0%} {cell['waiting_for_cpu_share']:18.0%} {idle} {cell['cpu_us_per_record']:14.1f}")
    return {"text": "\n".join(lines)}
