"""Row 7, scaling: rows/s landed as 10 → 100 → 1,000 devices upload at once, and what each device waits.

Every level lands the same number of 1,000-row uploads, shared out among its devices; each
device PUTs its batches one after another, all devices at once (asyncio, loopback), against
the server's defaults. A device sees two different waits, reported apart: the latency of
its accepted uploads (the request that answered 200/201) and the time it slept on
``429``/``503`` ``Retry-After`` before that. Rows/s of each level is compared with the level
below it: it must not fall. The server restarts between levels (its close checkpoints), so each
level meets the same DuckDB checkpoint at the same row, and a server that has not yet measured
its writer's pace, as after a restart in the field.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, Goal, IngestServer, Row
from bench.records import parquet_bodies

NUMBERS = (7,)
TITLE = "scaling"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else 0.0


async def upload_all(url: str, plan: list[tuple[str, list[tuple[str, bytes]]]]) -> dict[str, Any]:
    """Each device PUTs its batches one after another, all devices at once."""
    import aiohttp

    accepted_s: list[float] = []  # the request that was accepted, per upload
    waited_s: list[float] = []  # time slept on Retry-After before it, per upload
    throttled = 0
    deadline = time.monotonic() + 600

    async def device(session: aiohttp.ClientSession, token: str, batches: list[tuple[str, bytes]]) -> None:
        nonlocal throttled
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}
        for batch_id, body in batches:
            waited = 0.0
            while True:
                started = time.perf_counter()
                async with session.put(f"{url}/v1/batches/{batch_id}", data=body, headers=headers) as response:
                    await response.read()
                    if response.status in (200, 201):
                        accepted_s.append(time.perf_counter() - started)
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
    return {"accepted_s": accepted_s, "waited_s": waited_s, "throttled": throttled}


def measure(bench: Bench) -> list[Row]:
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
            started = time.perf_counter()
            found = asyncio.run(upload_all(server.url, plan))
            elapsed = time.perf_counter() - started
            landed = server.rows_landed() - before
            accepted, waited = found["accepted_s"], found["waited_s"]
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
                }
            )
    finally:
        server.stop()
    bench.details["points"] = points
    rows = []
    for below, point in zip([None, *points], points):
        note = (
            f"accepted p50 {point['accepted_p50_ms']:,.0f} ms, p99 {point['accepted_p99_ms']:,.0f} ms; "
            f"Retry-After wait mean {point['waited_429_mean_ms']:,.0f} ms, p99 {point['waited_429_p99_ms']:,.0f} ms"
        )
        if below is None:
            rows.append(Row(7, f"ingest rows/s, {point['devices']:,} devices", "/s", point["rows_per_s"], note=note))
        else:
            rows.append(
                Row(7, f"ingest rows/s, {point['devices']:,} devices", "/s", point["rows_per_s"],
                    f"{below['devices']:,} devices", below["rows_per_s"], goals=(Goal("ratio", ">=", 1.0),), note=note)
            )
    return rows


FIELDS = ("rows_per_s", "accepted_p50_ms", "accepted_p99_ms", "waited_429_mean_ms", "waited_429_p99_ms", "uploads_throttled", "uploads")


def summarize(details: list[dict[str, Any]], out_dir: Path, machine: str) -> dict[str, Any]:
    """The median of every run's curve, as a table and a plot."""
    runs = [run["points"] for run in details if run.get("points")]
    if not runs:
        return {}
    points = []
    for level in range(len(runs[0])):
        at = [run[level] for run in runs if len(run) > level]
        points.append({"devices": at[0]["devices"], **{f: statistics.median(p[f] for p in at) for f in FIELDS}})
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
