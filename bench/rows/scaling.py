"""Row 7, scaling: rows/s landed as 10 → 100 → 1,000 devices upload at once, and what each device waits.

Every level lands the same number of 1,000-row uploads, shared out among its devices; each
device PUTs its batches one after another, all devices at once (asyncio, loopback), against
the server's defaults, with ``Expect: 100-continue`` where the agent would send it (bodies of
``sync.expect_continue_bytes`` or more: none of these 85 KB ones). A device sees two different waits, reported apart: the latency of
its accepted uploads (the request that answered 200/201) and the time it slept on
``429``/``503`` ``Retry-After`` before that. Rows/s of each level is compared with the level
below it: it must not fall. The server restarts between levels (its close checkpoints), so each
level meets the same DuckDB checkpoint at the same row, and a server that has not yet measured
its writer's pace, as after a restart in the field. Each level also records where its time
went: when the first upload was answered and the pace between the 10th and 90th percentile
answers, the load generator's own CPU, the server's CPU by thread (event loop, upload checks,
writer, DuckDB's and Arrow's native threads) and how long each was runnable but waited for a
core (/proc schedstat: the machine's other work), the writer's time inside group commits, and
the server's peak resident memory (a burst held in line costs memory).
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import Bench, Goal, IngestServer, Row
from bench.records import parquet_bodies

NUMBERS = (7,)
TITLE = "scaling"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else 0.0


async def upload_all(url: str, plan: list[tuple[str, list[tuple[str, bytes]]]], *, expect_continue_bytes: int | None = None) -> dict[str, Any]:
    """Each device PUTs its batches one after another, all devices at once; bodies of ``expect_continue_bytes`` or more wait for 100 Continue."""
    import aiohttp

    accepted_s: list[float] = []  # the request that was accepted, per upload
    waited_s: list[float] = []  # time slept on Retry-After before it, per upload
    done_s: list[float] = []  # when each accepted upload was answered, from the start
    throttled = 0
    begun = time.perf_counter()
    deadline = time.monotonic() + 600

    async def device(session: aiohttp.ClientSession, token: str, batches: list[tuple[str, bytes]]) -> None:
        nonlocal throttled
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}
        for batch_id, body in batches:
            waited = 0.0
            while True:
                started = time.perf_counter()
                expect = expect_continue_bytes is not None and len(body) >= expect_continue_bytes
                async with session.put(f"{url}/v1/batches/{batch_id}", data=body, headers=headers, expect100=expect) as response:
                    await response.read()
                    if response.status in (200, 201):
                        accepted_s.append(time.perf_counter() - started)
                        done_s.append(time.perf_counter() - begun)
                        waited_s.append(waited)
                        break
                    if response.status in (429, 503) and time.monotonic() < deadline:
                        throttled += 1
                        pause = float(response.headers.get("Retry-After", "1"))
                        waited += (time.perf_counter() - started) + pause
                        await asyncio.sleep(pause)
                        continue
                    raise RuntimeError(f"upload answered {response.status}")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(device(session, token, batches) for token, batches in plan))
    return {"accepted_s": accepted_s, "waited_s": waited_s, "done_s": done_s, "throttled": throttled}


def thread_times_s(pid: int) -> dict[int, tuple[float, float]]:
    """Per native thread id of a process: (seconds on a core, seconds runnable but waiting for one), from /proc/PID/task/*/schedstat."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu_ns, waiting_ns, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # the thread ended
        found[int(task.name)] = (int(on_cpu_ns) / 1e9, int(waiting_ns) / 1e9)
    return found


def thread_roles(pid: int) -> dict[int, str]:
    """Native thread id → role, from the Python thread names py-spy reads; threads it does not list are native (DuckDB, Arrow)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        done = subprocess.run([spy, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=30)
        threads = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        threads = []
    roles = {}
    for thread in threads:
        name = thread.get("thread_name") or ""
        role = ("event loop" if name == "MainThread" else "writer" if name == "edgeloop-store-writer"
                else "upload checks" if name.startswith("edgeloop-ingest") else "other Python")
        if thread.get("os_thread_id"):
            roles[int(thread["os_thread_id"])] = role
    return roles


def server_time_split(pid: int, before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """A level's seconds on a core and seconds waiting for one, by server thread role (event loop, upload checks, writer, native)."""
    roles = thread_roles(pid)
    on_cpu: dict[str, float] = {}
    waiting: dict[str, float] = {}
    for tid, (cpu_s, wait_s) in after.items():
        role = roles.get(tid, "native (DuckDB, Arrow)") if roles else "all threads"
        cpu_before, wait_before = before.get(tid, (0.0, 0.0))
        on_cpu[role] = on_cpu.get(role, 0.0) + cpu_s - cpu_before
        waiting[role] = waiting.get(role, 0.0) + wait_s - wait_before
    return ({r: round(v, 2) for r, v in sorted(on_cpu.items())}, {r: round(v, 2) for r, v in sorted(waiting.items())})


def writer_commit_s(server: IngestServer) -> tuple[float, int]:
    """(seconds inside group commits, group commits) since the server started, from its /metrics."""
    request = urllib.request.Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("edgeloop_ingest_group_commit_seconds_sum") or line.startswith("edgeloop_ingest_group_commit_seconds_count"):
            found[line.split()[0]] = float(line.split()[-1])
    return found.get("edgeloop_ingest_group_commit_seconds_sum", 0.0), int(found.get("edgeloop_ingest_group_commit_seconds_count", 0))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM): the server restarts per level, so the level's peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(bench: Bench) -> list[Row]:
    from edgeloop.collector.config import SyncSettings

    levels = (5, 20, 100) if bench.quick else (10, 100, 1000)
    rows_per_upload = 20 if bench.quick else 1000
    uploads = 100 if bench.quick else 1000
    # --quick asks for shorter Retry-After waits to stay fast; the full run measures the server's defaults.
    server = IngestServer(bench, "scaling-ingest", server="retry_after_s = 1\n" if bench.quick else "")
    points = []
    try:
        tokens = server.add_devices([f"sim-{i:04d}" for i in range(max(levels))])
        for level, devices in enumerate(levels):
            if level:
                # Restart (its close checkpoints): every level starts with an empty WAL, so DuckDB's
                # automatic checkpoint, a stall of seconds, falls at the same row in every level.
                server.stop()
                server.start()
            bodies = parquet_bodies(bench, "vibration", rows_per_upload, max(uploads, devices), seed=100 + level)
            plan = [(tokens[d], bodies[d::devices]) for d in range(devices)]
            before = server.rows_landed()
            commit_before, groups_before = writer_commit_s(server)
            threads_before = thread_times_s(server.proc.pid)
            cpu_started = time.process_time()
            started = time.perf_counter()
            found = asyncio.run(upload_all(server.url, plan, expect_continue_bytes=SyncSettings().expect_continue_bytes))
            elapsed = time.perf_counter() - started
            generator_cpu_s = time.process_time() - cpu_started
            server_cpu, server_wait = server_time_split(server.proc.pid, threads_before, thread_times_s(server.proc.pid))
            commit_after, groups_after = writer_commit_s(server)
            landed = server.rows_landed() - before
            accepted, waited, done = found["accepted_s"], found["waited_s"], sorted(found["done_s"])
            # The landing timeline as devices saw it: when the first upload was answered, and the pace between the 10th and 90th percentile.
            tenth, ninetieth = done[len(done) // 10], done[len(done) * 9 // 10]
            points.append(
                {
                    "devices": devices,
                    "rows_per_upload": rows_per_upload,
                    "uploads": len(accepted),
                    "rows": landed,
                    "rows_per_s": landed / elapsed,
                    "accepted_p50_ms": percentile(accepted, 0.5) * 1000,
                    "accepted_p99_ms": percentile(accepted, 0.99) * 1000,
                    "waited_429_mean_ms": statistics.fmean(waited) * 1000,
                    "waited_429_p99_ms": percentile(waited, 0.99) * 1000,
                    "throttled_answers": found["throttled"],
                    "uploads_throttled": sum(1 for w in waited if w > 0),
                    "elapsed_s": elapsed,
                    "first_answer_s": done[0],
                    "mid_run_rows_per_s": (len(done) * 8 // 10) * rows_per_upload / max(ninetieth - tenth, 1e-9),
                    "generator_cpu_s": generator_cpu_s,
                    "server_cpu_s": server_cpu,
                    "server_runnable_wait_s": server_wait,
                    "writer_commit_s": commit_after - commit_before,
                    "group_commits": groups_after - groups_before,
                    "server_peak_rss_mb": peak_rss_mb(server.proc.pid),
                }
            )
    finally:
        server.stop()
    bench.details["points"] = points
    rows = []
    for below, point in zip([None, *points], points):
        note = (
            f"accepted p50 {point['accepted_p50_ms']:,.0f} ms, p99 {point['accepted_p99_ms']:,.0f} ms; "
            f"Retry-After wait mean {point['waited_429_mean_ms']:,.0f} ms, p99 {point['waited_429_p99_ms']:,.0f} ms; "
            f"first answer {point['first_answer_s']:.1f} s, mid-run {point['mid_run_rows_per_s']:,.0f} rows/s; "
            f"CPU s: load generator {point['generator_cpu_s']:.1f}, server {sum(point['server_cpu_s'].values()):.1f}; "
            f"server peak RSS {point['server_peak_rss_mb']:,.0f} MB"
        )
        if below is None:
            rows.append(Row(7, f"ingest rows/s, {point['devices']:,} devices", "/s", point["rows_per_s"], note=note))
        else:
            rows.append(
                Row(7, f"ingest rows/s, {point['devices']:,} devices", "/s", point["rows_per_s"],
                    f"{below['devices']:,} devices", below["rows_per_s"], goals=(Goal("ratio", ">=", 1.0),), note=note)
            )
    return rows


FIELDS = ("rows_per_s", "accepted_p50_ms", "accepted_p99_ms", "waited_429_mean_ms", "waited_429_p99_ms", "uploads_throttled", "uploads",
          "first_answer_s", "mid_run_rows_per_s", "generator_cpu_s", "writer_commit_s", "elapsed_s", "server_peak_rss_mb")
ROLES = ("event loop", "upload checks", "writer", "native (DuckDB, Arrow)", "other Python", "all threads")


def summarize(details: list[dict[str, Any]], out_dir: Path, machine: str) -> dict[str, Any]:
    """The median of every run's curve, as a table and a plot."""
    runs = [run["points"] for run in details if run.get("points")]
    if not runs:
        return {}
    points = []
    for level in range(len(runs[0])):
        at = [run[level] for run in runs if len(run) > level]
        points.append({"devices": at[0]["devices"], **{f: statistics.median(p.get(f, 0.0) for p in at) for f in FIELDS},
                       "server_cpu_s": {r: statistics.median(p.get("server_cpu_s", {}).get(r, 0.0) for p in at) for r in ROLES},
                       "writer_runnable_wait_s": statistics.median(p.get("server_runnable_wait_s", {}).get("writer", 0.0) for p in at)})
    lines = [
        f"Scaling (median of {len(runs)} run{'s' * (len(runs) > 1)}; latency of accepted uploads apart from time waiting on Retry-After):",
        "",
        "devices  rows/s      accepted p50  accepted p99  429 wait mean  429 wait p99  uploads throttled",
        "-------  ----------  ------------  ------------  -------------  ------------  -----------------",
    ]
    for p in points:
        lines.append(
            f"{p['devices']:>7,}  {p['rows_per_s']:>10,.0f}  {p['accepted_p50_ms']:>9,.0f} ms  {p['accepted_p99_ms']:>9,.0f} ms"
            f"  {p['waited_429_mean_ms']:>10,.0f} ms  {p['waited_429_p99_ms']:>9,.0f} ms  {p['uploads_throttled']:>8,.0f} of {p['uploads']:,.0f}"
        )
    roles = [r for r in ROLES if any(p["server_cpu_s"][r] for p in points)]
    lines += [
        "",
        "Where the time goes (CPU seconds per level by process and server thread; the writer's share of the level inside",
        "group commits, and the seconds it was runnable but waited for a core):",
        "",
        "devices  first answer  mid-run rows/s  load generator  " + "  ".join(f"{r:>{max(len(r), 6)}}" for r in roles)
        + "  writer in commits  writer waiting for a core",
    ]
    for p in points:
        lines.append(
            f"{p['devices']:>7,}  {p['first_answer_s']:>10.1f} s  {p['mid_run_rows_per_s']:>14,.0f}  {p['generator_cpu_s']:>12.1f} s  "
            + "  ".join(f"{p['server_cpu_s'][r]:>{max(len(r), 6)}.1f}" for r in roles)
            + f"  {p['writer_commit_s'] / max(p['elapsed_s'], 1e-9):>17.0%}  {p['writer_runnable_wait_s']:>23.1f} s"
        )
    summary: dict[str, Any] = {"text": "\n".join(lines), "points": points}
    try:
        summary["plot"] = str(plot(points, out_dir / "scaling.png", machine))
    except ImportError:
        pass  # matplotlib is in the bench extra; without it there is no plot
    return summary


def plot(points: list[dict[str, Any]], path: Path, machine: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = [p["devices"] for p in points]
    fig, left = plt.subplots(figsize=(7, 4.2), dpi=110)
    left.plot(devices, [p["rows_per_s"] for p in points], "o-", color="tab:blue", label="rows/s landed")
    left.set_xscale("log")
    left.set_xlabel("concurrent devices (asyncio, loopback)")
    left.set_ylabel("rows/s landed", color="tab:blue")
    left.set_ylim(bottom=0)
    right = left.twinx()
    right.plot(devices, [p["accepted_p99_ms"] for p in points], "s--", color="tab:red", label="p99 accepted upload")
    right.plot(devices, [p["waited_429_p99_ms"] for p in points], "^:", color="tab:orange", label="p99 Retry-After wait")
    right.set_ylabel("ms", color="tab:red")
    right.set_ylim(bottom=0)
    right.legend(loc="upper left", fontsize=8)
    left.set_xticks(devices, [f"{d:,}" for d in devices])
    left.set_title(f"edgeloop ingest scaling (medians)\n{machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
