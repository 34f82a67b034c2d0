#!/usr/bin/env python3
"""Device intake benchmark: records/s through the SDK into sealed Parquet, vs pyarrow alone.

    python scripts/bench_intake.py [--quick] [--json] [--records N] [--spool-records N]

1. Throughput. A real agent (``edgeloop-collector run``) with privacy on (the example schema's
   rules) and sampling on (the example config's: vibration keep_rate 0.25, always keep below
   confidence 0.6). This process plays the inference app: it logs N simulated vibration
   records through ``collector.Client`` (waiting when the SDK buffer passes half full, as an
   app that must not drop would), then flushes the SDK and seals the journal. Rate =
   N / (first log call → last batch sealed). The reference, in the same run: pyarrow alone
   turning the same records into one zstd Parquet file (flatten, ``Table.from_pylist``,
   ``write_table``), with no validation, sampling, privacy, journal or fsync.
2. Memory. The agent is restarted with sampling off and fed until the spool holds
   ``--spool-records`` records (1,000,000; 100,000 with --quick); its peak RSS is sampled
   every 50 ms throughout, including the restart's spool scan.

Unix socket and temp files only; every count is bounded and the agent is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from edgeloop.collector.client import Client, call_agent  # noqa: E402
from edgeloop.collector.simulator import SimulatedModel  # noqa: E402
from edgeloop.errors import AgentUnavailableError  # noqa: E402

FLEET_KEY = bytes(range(32))
SAMPLING_ON = '[sampling]\nseed = 1\n[sampling.models.vibration]\nkeep_rate = 0.25\nalways_keep_below_confidence = 0.6\n'
SAMPLING_OFF = "[sampling]\nseed = 1\n"


class RssWatch:
    """Samples a process's RSS every ``interval_s`` in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.proc.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class AgentRun:
    """One ``edgeloop-collector run`` child in ``folder``; stopped by its pid."""

    def __init__(self, folder: Path, sampling: str) -> None:
        self.folder = folder
        self.socket = folder / "agent.sock"
        key = folder / "fleet.key"
        key.write_bytes(FLEET_KEY)
        key.chmod(0o600)
        self.config = folder / "collector.toml"
        self.config.write_text(
            f'[agent]\nstate_dir = "{folder / "state"}"\nsocket_path = "{self.socket}"\n'
            f'key_file = "{key}"\nlog_level = "warning"\n'
            "[spool]\nreserve_free_bytes = 0\nmax_bytes = 17179869184\n" + sampling + "[sync]\nenabled = false\n"
        )
        self.log = open(folder / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeloop.collector.cli", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        self.rss = RssWatch(self.proc.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}: {(folder / 'agent.log').read_text()[-800:]}")
            try:
                if call_agent(self.socket, "GET", "/v1/status", timeout_s=5)[0] == 200:
                    return
            except AgentUnavailableError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("agent did not start within 120 s")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = call_agent(self.socket, method, path, body, timeout_s=600)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {answer}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.rss.stop()
        self.log.close()


def log_all(client: Client, records: list[dict[str, Any]], *, keep_ids: bool) -> None:
    """Log records as an app would; wait (never drop) when the SDK buffer is half full."""
    high = client.max_buffer // 2
    for count, r in enumerate(records):
        if r["kind"] == "prediction":
            client.log_prediction(
                r["model"], r["model_version"], r["inputs"], r["outputs"], record_id=r["record_id"] if keep_ids else None
            )
        else:
            client.log_feedback(r["prediction_id"], r["model"], r["model_version"], r["feedback"], source=r.get("source"))
        if count % 1024 == 0:
            while client.buffered > high:
                time.sleep(0.0005)


def sdk_call_cost_us(records: list[dict[str, Any]], folder: Path) -> float:
    """Microseconds per log call with nothing listening (the app's own cost, no contention)."""
    client = Client(folder / "nobody.sock", max_buffer=len(records) + 1, flush_interval_s=3600, retry_max_s=3600)
    started = time.perf_counter()
    for r in records:
        if r["kind"] == "prediction":
            client.log_prediction(r["model"], r["model_version"], r["inputs"], r["outputs"])
        else:
            client.log_feedback(r["prediction_id"], r["model"], r["model_version"], r["feedback"])
    elapsed = time.perf_counter() - started
    client.close(timeout_s=0.1)
    return elapsed / len(records) * 1e6


def pyarrow_alone(records: list[dict[str, Any]], path: Path) -> float:
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
    table = pa.Table.from_pylist(flat)
    pq.write_table(table, path, compression="zstd", compression_level=3)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (about 20 s): a smoke run, not a measurement")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--records", type=int, help="records through the SDK (default 300,000; 20,000 with --quick)")
    parser.add_argument(
        "--spool-records", type=int, help="records in the spool for the RSS figure (default 1,000,000; 100,000 quick)"
    )
    args = parser.parse_args()
    n = args.records or (20_000 if args.quick else 300_000)
    spool_target = args.spool_records or (100_000 if args.quick else 1_000_000)

    def say(message: str) -> None:
        if not args.json:
            print(message, flush=True)

    work = Path(tempfile.mkdtemp(prefix="edgeloop-bench-intake-"))
    try:
        say(f"simulating {n:,} vibration records ...")
        records = list(SimulatedModel("vibration", seed=31).records(n, feedback_ratio=0.05))

        # 1. Throughput with privacy and sampling on.
        agent = AgentRun(work, SAMPLING_ON)
        try:
            client = Client(agent.socket)
            started = time.perf_counter()
            log_all(client, records, keep_ids=True)
            logged_s = time.perf_counter() - started
            if not client.flush(timeout_s=600):
                raise RuntimeError("the SDK did not drain within 600 s")
            agent.call("POST", "/v1/flush")
            elapsed = time.perf_counter() - started
            sdk = client.stats()
            client.close()
            status = agent.call("GET", "/v1/status")
            throughput_peak_rss = agent.rss.peak
        finally:
            agent.stop()
        if sdk["dropped"] or sdk["invalid"]:
            raise RuntimeError(f"records were lost on the way: {sdk}")
        kept = status["spool"]["records"]
        reference_s = pyarrow_alone(records, work / "pyarrow.parquet")
        call_us = sdk_call_cost_us(records[: min(n, 100_000)], work)

        # 2. RSS with the spool full of records.
        say(f"filling the spool to {spool_target:,} records ...")
        agent = AgentRun(work, SAMPLING_OFF)
        try:
            client = Client(agent.socket)
            in_spool = kept
            while in_spool < spool_target:
                chunk = records[: min(len(records), spool_target - in_spool)]
                log_all(client, chunk, keep_ids=False)
                in_spool += len(chunk)
            client.flush(timeout_s=600)
            client.close()
            agent.call("POST", "/v1/flush")
            filled = agent.call("GET", "/v1/status")["spool"]
            time.sleep(0.5)
            idle_rss = agent.rss.last
            fill_peak_rss = agent.rss.peak
        finally:
            agent.stop()
        # And a restart over the full spool: the scan must not load it.
        agent = AgentRun(work, SAMPLING_OFF)
        try:
            time.sleep(0.5)
            restart_rss = agent.rss.peak
        finally:
            agent.stop()

        rate = n / elapsed
        ref_rate = n / reference_s
        result = {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "quick": args.quick,
            "records": n,
            "records_per_s": round(rate),
            "pyarrow_records_per_s": round(ref_rate),
            "ratio": round(rate / ref_rate, 3),
            "logged_per_s": round(n / logged_s),
            "sdk_call_us": round(call_us, 2),
            "kept_after_sampling": kept,
            "batches": status["spool"]["batches"],
            "journal_fsyncs": status["journal"]["fsyncs"],
            "agent_peak_rss_mb_throughput": round(throughput_peak_rss / 2**20, 1),
            "spool_records": filled["records"],
            "spool_bytes": filled["bytes"],
            "agent_peak_rss_mb": round(max(fill_peak_rss, restart_rss) / 2**20, 1),
            "agent_rss_mb_idle_full_spool": round(idle_rss / 2**20, 1),
            "agent_peak_rss_mb_restart_full_spool": round(restart_rss / 2**20, 1),
            "cores": os.cpu_count(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print()
    print(f"SDK → sealed Parquet (privacy + sampling on): {result['records_per_s']:>10,} records/s")
    print(f"pyarrow alone, same records → Parquet:        {result['pyarrow_records_per_s']:>10,} records/s")
    print(f"ratio:                                         {result['ratio']:>10.3f}   (target >= 0.25, and >= 100,000/s)")
    print(f"SDK log call, alone:                           {result['sdk_call_us']:>10.2f} µs")
    print(f"kept after sampling: {kept:,} of {n:,} in {result['batches']} batches, {result['journal_fsyncs']} group fsyncs")
    print(
        f"agent RSS: peak {result['agent_peak_rss_mb']} MB with {result['spool_records']:,} records"
        f" ({result['spool_bytes'] / 2**20:.0f} MB) in the spool; idle {result['agent_rss_mb_idle_full_spool']} MB;"
        f" peak {result['agent_peak_rss_mb_throughput']} MB during the throughput run (target < 120 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
