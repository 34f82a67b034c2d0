"""Rows 2 and 6, a device end to end: the agent's cost, and edgeloop against the usual alternative.

edgeloop: an app logs simulated vibration records through the SDK (a child process), the
agent (privacy, journal, spool) seals them, ``flush`` and ``sync --wait`` upload them to a
real ingest server, until every row has landed. Row 2 is the agent's CPU per million
records and its RSS: idle (started, schemas loaded, nothing logged), steady state (the
median while the app logs) and peak (the whole run, sync included).

The alternative (row 6's reference): the app POSTs each record as JSON to an aiohttp
collector that INSERTs it into DuckDB, fed records from the same simulation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.clients import run_sdk
from bench.harness import (
    ROOT,
    Agent,
    Bench,
    Goal,
    IngestServer,
    ProcessWatch,
    Row,
    agent_config,
    free_port,
    port_open,
    process,
    python_module,
    wait_for,
)
from bench.records import dumps, simulated, write_ndjson

NUMBERS = (2, 6)
TITLE = "device end to end"
MB = 2**20

NAIVE_SERVER = r'''
# The usual alternative: JSON per request over HTTP, one INSERT per request into DuckDB.
import asyncio, json, sys
import duckdb
from aiohttp import web

db = duckdb.connect(sys.argv[1])
db.execute("CREATE TABLE IF NOT EXISTS records (record_id VARCHAR, kind VARCHAR, model VARCHAR,"
           " received_at TIMESTAMPTZ DEFAULT current_timestamp, body JSON)")

async def post_record(request):
    record = await request.json()
    db.execute("INSERT INTO records (record_id, kind, model, body) VALUES (?, ?, ?, ?)",
               [record.get("record_id"), record.get("kind"), record.get("model"), json.dumps(record)])
    return web.json_response({"ok": True}, status=201)

async def main():
    app = web.Application()
    app.router.add_post("/records", post_record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[2])).start()
    await asyncio.Event().wait()

asyncio.run(main())
'''


class SmapsAtPeak:
    """Samples a process's /proc/<pid>/smaps from a thread; keeps the breakdown by mapping of the largest total seen."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.peak_kib = 0
        self.rss_kib: Counter[str] = Counter()
        self.private_kib: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                rss, private = _smaps(self.pid)
            except OSError:
                return
            if sum(rss.values()) > self.peak_kib:
                self.peak_kib, self.rss_kib, self.private_kib = sum(rss.values()), rss, private

    def stop(self) -> dict[str, Any]:
        """The peak's largest parts, MB resident (and of it private), by mapping name."""
        self._stop.set()
        self._thread.join()
        return {
            "total_mb": self.peak_kib / 1024,
            "parts_mb": {name: [kib / 1024, self.private_kib[name] / 1024] for name, kib in self.rss_kib.most_common(14)},
        }


def _smaps(pid: int) -> tuple[Counter[str], Counter[str]]:
    """Rss and Anonymous KiB per mapping name (a library's file name, [heap], [anon] ...)."""
    rss: Counter[str] = Counter()
    private: Counter[str] = Counter()
    name = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head, _, rest = line.partition(" ")
            if not head.endswith(":"):
                fields = rest.split()
                name = fields[4].rsplit("/", 1)[-1] if len(fields) >= 5 else "[anon]"
            elif head == "Rss:":
                rss[name] += int(rest.split()[0])
            elif head == "Anonymous:":
                private[name] += int(rest.split()[0])
    return rss, private


def compile_bytecode() -> None:
    """Compile edgeloop's modules beside their sources, as ``pip install`` does on a device.

    This tree is an editable install and the bench's environment may say
    PYTHONDONTWRITEBYTECODE: the agent would then compile every edgeloop module from source
    at each start, and the compiler's scratch memory stays behind as fragmented heap
    (1.5 MB of idle private memory, measured). ``__pycache__`` is ignored by git; a stale
    file is never used (Python checks the source's mtime).
    """
    sources = [str(ROOT / package) for package in ("edgeloop", "collector", "schemas")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], check=True, stdout=subprocess.DEVNULL)


def private_pyarrow(folder: Path) -> dict[str, str]:
    """The agent's environment with its own copy of pyarrow, as on a device where no other process maps it.

    Here the ingest server and this app map the same Arrow libraries; the page cache then holds
    them in large folios that those processes faulted in, and each fault of the agent maps a
    whole folio whatever it advises (measured: libarrow_compute 11.7 MB resident at the peak
    beside a server that aggregates with Arrow, 1.7 MB alone). The copy's pages are written out
    and dropped from the cache, so the agent's own faults are the only ones that bring them in.
    """
    import pyarrow

    site = folder / "device-site"
    copy = shutil.copytree(Path(pyarrow.__file__).parent, site / "pyarrow")
    for path in copy.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return {**os.environ, "PYTHONPATH": str(site)}


def edgeloop_run(bench: Bench, n: int) -> dict[str, Any]:
    """Records through the SDK, the agent and a sync into ingest; rates, CPU and RSS."""
    folder = bench.folder("device")
    ndjson = folder / "records.ndjson"
    write_ndjson(ndjson, "vibration", n, seed=21)
    compile_bytecode()
    with IngestServer(bench, "device-ingest") as ingest:
        (token,) = ingest.add_devices(["bench-device"])
        with Agent(folder, agent_config(folder, sync_url=ingest.url, token=token), env=private_pyarrow(folder)) as agent:
            watch = ProcessWatch(agent.proc.pid)
            time.sleep(1.0)  # idle: started, schemas loaded, nothing logged yet
            idle_rss = watch.last_rss
            idle_parts = _smaps(agent.proc.pid)
            if "device-site/pyarrow" not in Path(f"/proc/{agent.proc.pid}/maps").read_text():
                raise RuntimeError("the agent did not load its own copy of pyarrow")
            at_peak = SmapsAtPeak(agent.proc.pid)
            started = time.perf_counter()
            logging_from = time.monotonic()
            sdk_stats, sdk_cpu_s = run_sdk(agent.socket, ndjson)
            logged_s = time.perf_counter() - started
            steady_rss = watch.median_rss(since=logging_from + (time.monotonic() - logging_from) / 2)
            agent.command("flush", "--timeout", "600")
            agent.command("sync", "--wait", "--timeout", "600")
            wait_for(lambda: ingest.rows_landed() >= n, timeout_s=600, what="rows landing")
            elapsed = time.perf_counter() - started
            watch.stop()
            peak_parts = at_peak.stop()
            agent_threads = len(os.listdir(f"/proc/{agent.proc.pid}/task"))
    return {
        "records": n,
        "sdk": sdk_stats,
        "rows_per_s": n / elapsed,
        "logged_per_s": n / logged_s,
        "agent_cpu_s_per_million": watch.cpu_s / n * 1e6,
        "agent_idle_rss_mb": idle_rss / MB,
        "agent_steady_rss_mb": steady_rss / MB,
        "agent_peak_rss_mb": watch.peak_rss / MB,
        "agent_private_at_peak_mb": watch.anon_at_peak / MB,
        "agent_peak_private_mb": watch.peak_anon / MB,
        "agent_threads": agent_threads,
        # What the peak is made of (smaps sampled every 0.5 s), next to the same mappings when idle.
        "agent_peak_smaps": peak_parts,
        "agent_idle_smaps_mb": {name: idle_parts[0][name] / 1024 for name in peak_parts["parts_mb"]},
        "sdk_cpu_s_per_million": sdk_cpu_s / n * 1e6,
        "device_cpu_s_per_million": (watch.cpu_s + sdk_cpu_s) / n * 1e6,
        "elapsed_s": elapsed,
    }


def naive_run(bench: Bench, n: int) -> dict[str, Any]:
    """Rows/s and device CPU of the JSON-per-request collector, for records from the same simulation."""
    import psutil

    folder = bench.folder("naive")
    ndjson = folder / "records.ndjson"
    ndjson.write_bytes(b"".join(dumps(r) + b"\n" for r in simulated("vibration", n, seed=21)))
    port = free_port()
    (folder / "naive_server.py").write_text(NAIVE_SERVER)
    with process([sys.executable, str(folder / "naive_server.py"), str(folder / "naive.duckdb"), str(port)], log=folder / "server.log") as server:
        wait_for(lambda: port_open(port), timeout_s=30, what="naive collector", proc=server)
        started = time.perf_counter()
        client = subprocess.Popen(
            python_module("bench.clients", "naive", f"http://127.0.0.1:{port}/records", str(ndjson)), stderr=subprocess.PIPE, cwd=ROOT
        )
        watch = ProcessWatch(client.pid)
        _, err = client.communicate(timeout=600)
        watch.stop()
        elapsed = time.perf_counter() - started
        if client.returncode != 0:
            raise RuntimeError(f"naive client failed: {err.decode()[-500:]}")
        server_cpu = sum(psutil.Process(server.pid).cpu_times()[:2])
    return {
        "records": n,
        "rows_per_s": n / elapsed,
        "device_cpu_s_per_million": watch.cpu_s / n * 1e6,
        "server_cpu_s_per_million": server_cpu / n * 1e6,
    }


def measure(bench: Bench) -> list[Row]:
    edge = edgeloop_run(bench, 5_000 if bench.quick else 1_000_000)
    naive = naive_run(bench, 1_000 if bench.quick else 20_000)
    bench.details.update(edgeloop=edge, naive=naive)
    note = f"{edge['records']:,} records collected and synced"
    return [
        Row(2, "agent CPU s per 1M records (collect + sync)", "s", edge["agent_cpu_s_per_million"], note=note),
        Row(2, "agent peak RSS", "MB", edge["agent_peak_rss_mb"], goals=(Goal("edgeloop", "<=", 100),),
            note=f"{note}; at the peak {edge['agent_private_at_peak_mb']:.0f} MB private (RssAnon), the rest mapped libraries"),
        Row(2, "agent peak private memory (RssAnon)", "MB", edge["agent_peak_private_mb"],
            note="heap and anonymous maps only: what the device must supply; the shared libraries' pages are page cache"),
        Row(2, "agent RSS, steady state while logging", "MB", edge["agent_steady_rss_mb"], note=note),
        Row(2, "agent RSS, idle (started, nothing logged)", "MB", edge["agent_idle_rss_mb"], note=note),
        Row(6, "end to end, rows/s (SDK → landed)", "/s", edge["rows_per_s"], "JSON per request + INSERT", naive["rows_per_s"],
            note=f"edgeloop {edge['records']:,} records, the alternative {naive['records']:,}"),
        Row(6, "device CPU s per 1M records", "s", edge["device_cpu_s_per_million"], "JSON per request",
            naive["device_cpu_s_per_million"], note="app + agent vs app alone"),
    ]
