#!/usr/bin/env python3
"""edgeloop's benchmarks in one run, each next to a reference measured in the same run.

    ./scripts/bench [--quick] [--out DIR] [--only 3,6]

Prints one table (what was measured, edgeloop's figure, the reference figure, the ratio,
the target) and writes the same figures, the scaling curve and the machine's description
to ``DIR/latest.json`` (default ``bench/results/``), with the curve drawn in
``DIR/scaling.png``. A row that cannot be measured here says "not available" and why.

Every load goes to loopback addresses only and stops by itself: counts and times are
bounded, and every process the bench starts is stopped by its pid when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import io
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402

from collector.simulator import MODELS, SimulatedModel, thumbnails_are_jpeg  # noqa: E402
from schemas import EXAMPLES_DIR, RecordValidator, SchemaRegistry  # noqa: E402

LOOPBACK = "127.0.0.1"
FLEET_KEY = bytes(range(32))  # privacy needs a key; its value does not change sizes


@dataclass
class Size:
    """How much work each benchmark does; --quick shrinks every count."""

    wire_records: int  # per data set
    mqtt_records: int  # per data set
    naive_records: int
    device_records: int
    intake_records: int
    scaling_devices: tuple[int, ...]
    scaling_rows: int  # per upload
    scaling_uploads: int  # per device
    ingest_args: tuple[str, ...]


FULL = Size(
    wire_records=20_000,
    mqtt_records=20_000,
    naive_records=20_000,
    device_records=200_000,
    intake_records=1_000_000,
    scaling_devices=(10, 100, 1000),
    scaling_rows=1000,
    scaling_uploads=3,
    ingest_args=(),
)
QUICK = Size(
    wire_records=2_000,
    mqtt_records=1_000,
    naive_records=1_000,
    device_records=5_000,
    intake_records=20_000,
    scaling_devices=(10, 100, 1000),
    scaling_rows=20,
    scaling_uploads=1,
    ingest_args=("--quick",),
)


@dataclass
class Row:
    """One line of the table: edgeloop's figure next to the reference's."""

    number: int
    what: str
    unit: str
    edgeloop: float | None
    reference_name: str = ""
    reference: float | None = None
    target: str = ""
    note: str = ""
    unavailable: str = ""  # why the row could not be measured here, if it could not

    @property
    def ratio(self) -> float | None:
        if self.edgeloop is None or not self.reference:
            return None
        return self.edgeloop / self.reference

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Bench:
    size: Size
    quick: bool
    out_dir: Path
    work: Path
    rows: list[Row] = field(default_factory=list)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    registry: SchemaRegistry = field(default_factory=lambda: SchemaRegistry.from_dir(EXAMPLES_DIR))

    def log(self, message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- records and batches


def simulated(model: str, n: int, *, seed: int = 1, feedback_ratio: float = 0.05) -> list[dict[str, Any]]:
    return list(SimulatedModel(model, seed=seed).records(n, feedback_ratio=feedback_ratio))


def sealed_tables(bench: Bench, model: str, records: list[dict[str, Any]]) -> list[pa.Table]:
    """The rows edgeloop seals for these records: the agent's pipeline (privacy on, sampling keeping all)."""
    from collector.config import SamplingSettings
    from collector.pipeline import Pipeline

    pipeline = Pipeline(bench.registry, SamplingSettings(seed=1), FLEET_KEY)
    batches = []
    for start in range(0, len(records), 1000):  # as the SDK sends them: requests of up to 1,000
        processed = pipeline.process(records[start : start + 1000])
        if processed.invalid:
            raise RuntimeError(f"simulated {model} records are invalid: {processed.results[:3]}")
        batches.extend(processed.batches.values())
    return [pa.Table.from_batches(batches)]


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of a sealed table as the JSON objects a JSON collector would send."""
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, bytes):
                row[key] = base64.b64encode(value).decode() if len(value) != 16 else str(_uuid(value))
            elif isinstance(value, datetime):
                row[key] = value.isoformat().replace("+00:00", "Z")
            elif hasattr(value, "hex") and not isinstance(value, (int, float, str)):
                row[key] = str(value)
    return rows


def _uuid(raw: bytes) -> Any:
    import uuid

    return uuid.UUID(bytes=raw)


def dumps(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def process(args: list[str], *, log: Path, env: dict[str, str] | None = None, **kwargs: Any) -> Iterator[subprocess.Popen]:
    """Start a process and stop it (by its pid: TERM, then KILL) when the block ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


class CpuWatch:
    """Samples a process's CPU time and peak RSS from a thread until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_rss = 0
        self.cpu_start = self._cpu()
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _cpu(self) -> float:
        times = self.proc.cpu_times()
        return times.user + times.system

    def _sample(self) -> None:
        with contextlib.suppress(Exception):
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            self.cpu_s = self._cpu() - self.cpu_start

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- row 3: wire bytes


def bench_wire(bench: Bench) -> None:
    """Bytes per record: sealed Parquet vs gzip'd NDJSON vs JSON over MQTT, same rows."""
    from collector.config import SpoolSettings
    from collector.spool import Spool

    mqtt: MqttBroker | None = None
    mqtt_reason = ""
    try:
        mqtt = MqttBroker.start(bench)
    except Unavailable as exc:
        mqtt_reason = str(exc)
    try:
        for model in MODELS:
            records = simulated(model, bench.size.wire_records, seed=11)
            tables = sealed_tables(bench, model, records)
            spool = Spool(bench.work / f"wire-{model}", SpoolSettings(), agent_version="bench")
            parquet_bytes = sum(
                spool.write_batch(table.slice(start, 50_000), schema=bench.registry[model]).bytes
                for table in tables
                for start in range(0, table.num_rows, 50_000)
            )
            rows = [row for table in tables for row in json_rows(table)]
            ndjson = b"".join(dumps(row) + b"\n" for row in rows)
            gzipped = len(gzip.compress(ndjson, compresslevel=6))
            n = len(rows)
            label = f"wire bytes/record, {model}"
            bench.rows.append(
                Row(
                    3, label, "B", parquet_bytes / n, "gzip'd NDJSON, same rows", gzipped / n, "<= 0.5x",
                    note=f"{n:,} rows; NDJSON uncompressed {len(ndjson) / n:,.0f} B/record",
                )
            )
            mqtt_rows = rows[: bench.size.mqtt_records]
            if mqtt is None:
                bench.rows.append(Row(3, label, "B", parquet_bytes / n, "JSON over MQTT, QoS 1", None, unavailable=mqtt_reason))
                continue
            sent = mqtt.publish_all(f"edgeloop/bench/{model}", [dumps(row) for row in mqtt_rows])
            bench.rows.append(
                Row(
                    3, label, "B", parquet_bytes / n, "JSON over MQTT, QoS 1", sent / len(mqtt_rows), "",
                    note=f"mosquitto $SYS bytes received over {len(mqtt_rows):,} messages",
                )
            )
    finally:
        if mqtt is not None:
            mqtt.stop()


class Unavailable(Exception):
    """A reference or part this machine cannot run; the row says so instead of a figure."""


def find_mosquitto(bench: Bench) -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        bench.log("mosquitto is not installed: installing Debian's package (running as root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "mosquitto"], env=env, capture_output=True, timeout=300
        )
        if result.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "mosquitto"], env=env, capture_output=True, timeout=300)
        found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
        if found:
            return found
        raise Unavailable("mosquitto could not be installed with apt-get")
    raise Unavailable("mosquitto is not installed (apt-get install mosquitto, as root)")


class MqttBroker:
    """A private mosquitto on a loopback port, and a $SYS subscriber reading its byte counter."""

    def __init__(self, proc: subprocess.Popen, port: int, stack: contextlib.ExitStack) -> None:
        self.proc, self.port, self._stack = proc, port, stack
        self._received: list[tuple[float, int]] = []
        self._cond = threading.Condition()

    @classmethod
    def start(cls, bench: Bench) -> MqttBroker:
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise Unavailable("paho-mqtt is not installed (pip install 'edgeloop[bench]')") from None
        binary = find_mosquitto(bench)
        port = free_port()
        folder = bench.work / "mosquitto"
        folder.mkdir(exist_ok=True)
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\nsys_interval 1\n"
            "max_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        stack = contextlib.ExitStack()
        proc = stack.enter_context(process([binary, "-c", str(conf)], log=folder / "mosquitto.log"))
        try:
            wait_for(lambda: port_open(port), timeout_s=10, what="mosquitto", proc=proc)
        except RuntimeError as exc:
            stack.close()
            raise Unavailable(f"{exc} (see {folder / 'mosquitto.log'})") from None
        broker = cls(proc, port, stack)
        broker._watch_sys()
        return broker

    def _client(self, name: str) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(100)
        return client

    def _watch_sys(self) -> None:
        watcher = self._client("bench-sys")

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            with self._cond:
                self._received.append((time.monotonic(), int(message.payload)))
                self._cond.notify_all()

        watcher.on_message = on_message
        watcher.on_connect = lambda client, *_: client.subscribe("$SYS/broker/bytes/received", qos=0)
        watcher.connect(LOOPBACK, self.port, keepalive=600)
        watcher.loop_start()
        self._stack.callback(watcher.loop_stop)
        self._stack.callback(watcher.disconnect)

    def _counter_after(self, moment: float) -> int:
        """The broker's bytes-received counter as first published after ``moment``."""
        with self._cond:
            ok = self._cond.wait_for(lambda: any(t > moment for t, _ in self._received), timeout=10)
            if not ok:
                raise RuntimeError("mosquitto published no $SYS byte counter")
            return next(v for t, v in self._received if t > moment)

    def publish_all(self, topic: str, payloads: list[bytes]) -> int:
        """Publish each payload with QoS 1, wait for every PUBACK; the bytes the broker received."""
        client = self._client(f"bench-{topic.rsplit('/', 1)[-1]}")
        client.connect(LOOPBACK, self.port, keepalive=600)
        client.loop_start()
        try:
            # A fresh counter reading after connecting, so CONNECT is not counted.
            time.sleep(0.05)
            before = self._counter_after(time.monotonic())
            infos = [client.publish(topic, payload, qos=1) for payload in payloads]
            for info in infos:
                info.wait_for_publish(timeout=60)
                if not info.is_published():
                    raise RuntimeError("MQTT publish not acknowledged within 60 s")
            after = self._counter_after(time.monotonic())
        finally:
            client.disconnect()
            client.loop_stop()
        return after - before

    def stop(self) -> None:
        self._stack.close()


# ---------------------------------------------------------------- row 6: the usual alternative

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

async def count(request):
    return web.json_response({"rows": db.execute("SELECT count(*) FROM records").fetchone()[0]})

async def main():
    app = web.Application()
    app.router.add_post("/records", post_record)
    app.router.add_get("/count", count)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[2]))
    await site.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


async def _naive_client(url: str, ndjson: Path, concurrency: int) -> None:
    """The device side of the alternative: POST each record as it is made, a few in flight."""
    import aiohttp

    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (body := await queue.get()) is not None:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                if response.status != 201:
                    raise RuntimeError(f"naive collector answered {response.status}")
                await response.read()

    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        with open(ndjson, "rb") as lines:
            for line in lines:
                await queue.put(line.rstrip(b"\n"))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)


def bench_naive(bench: Bench) -> dict[str, float]:
    """Rows/s and device CPU of the JSON-per-request collector, for the same records."""
    import psutil

    folder = bench.work / "naive"
    folder.mkdir()
    ndjson = folder / "records.ndjson"
    records = simulated("vibration", bench.size.naive_records, seed=21)
    ndjson.write_bytes(b"".join(dumps(r) + b"\n" for r in records))
    port = free_port()
    script = folder / "naive_server.py"
    script.write_text(NAIVE_SERVER)
    with process([sys.executable, str(script), str(folder / "naive.duckdb"), str(port)], log=folder / "server.log") as server:
        wait_for(lambda: port_open(port), timeout_s=30, what="naive collector", proc=server)
        started = time.perf_counter()
        client = subprocess.Popen(
            [sys.executable, __file__, "--naive-client", f"http://{LOOPBACK}:{port}/records", str(ndjson)],
            stderr=subprocess.PIPE,
        )
        watch = CpuWatch(client.pid)
        _, err = client.communicate(timeout=600)
        watch.stop()
        elapsed = time.perf_counter() - started
        if client.returncode != 0:
            raise RuntimeError(f"naive client failed: {err.decode()[-500:]}")
        server_cpu = sum(psutil.Process(server.pid).cpu_times()[:2])
    n = len(records)
    return {
        "rows_per_s": n / elapsed,
        "device_cpu_s_per_million": watch.cpu_s / n * 1e6,
        "server_cpu_s_per_million": server_cpu / n * 1e6,
        "records": n,
    }


# ---------------------------------------------------------------- the table


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.3g}"


def render(rows: list[Row]) -> str:
    header = ("#", "measured", "edgeloop", "reference (same run)", "ratio", "target")
    lines = []
    for row in rows:
        unit = f" {row.unit}" if row.unit else ""
        edgeloop = fmt(row.edgeloop) + unit if row.edgeloop is not None else f"not available: {row.unavailable}"
        if row.reference_name:
            if row.reference is None:
                reference = f"{row.reference_name}: not available ({row.unavailable})"
            else:
                reference = f"{row.reference_name}: {fmt(row.reference)}{unit}"
        else:
            reference = "—"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "—"
        lines.append((str(row.number), row.what, edgeloop, reference, ratio, row.target))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
    return "\n".join(out)


def render_scaling(points: list[dict[str, Any]]) -> str:
    out = ["devices  rows/s      p99 upload latency  uploads", "-------  ----------  ------------------  -------"]
    for p in points:
        out.append(f"{p['devices']:>7,}  {fmt(p['rows_per_s']):>10}  {p['p99_ms']:>15,.1f} ms  {p['uploads']:>7,}")
    return "\n".join(out)


def plot_scaling(points: list[dict[str, Any]], path: Path, machine: str) -> Path:
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
    right.plot(devices, [p["p99_ms"] for p in points], "s--", color="tab:red", label="p99 upload latency")
    right.set_ylabel("p99 upload latency (ms)", color="tab:red")
    right.set_ylim(bottom=0)
    left.set_xticks(devices, [f"{d:,}" for d in devices])
    left.set_title(f"edgeloop ingest scaling\n{machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def machine() -> dict[str, Any]:
    import duckdb
    import psutil

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
        "duckdb": duckdb.__version__,
        "edgeloop_commit": commit.stdout.strip() or None,
        "thumbnails": "JPEG (Pillow)" if thumbnails_are_jpeg() else "synthetic (no Pillow)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def describe(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cores_usable']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"pyarrow {m['pyarrow']}, DuckDB {m['duckdb']}, {m['date'][:10]}"
    )


# ---------------------------------------------------------------- main

BENCHMARKS: dict[int, tuple[str, Callable[[Bench], None]]] = {}


def benchmark(number: int, title: str) -> Callable[[Callable[[Bench], None]], Callable[[Bench], None]]:
    def register(fn: Callable[[Bench], None]) -> Callable[[Bench], None]:
        BENCHMARKS[number] = (title, fn)
        return fn

    return register


benchmark(3, "wire bytes per record")(bench_wire)


@benchmark(6, "the usual alternative, end to end")
def row_naive(bench: Bench) -> None:
    naive = bench_naive(bench)
    bench.extra["naive"] = naive
    edge = bench.extra.get("edgeloop_end_to_end", {})
    reason = edge.get("unavailable", "edgeloop's end-to-end run did not happen")
    bench.rows.append(
        Row(6, "end to end, rows/s (SDK → landed)", "", edge.get("rows_per_s"), "JSON per request + INSERT",
            naive["rows_per_s"], "", unavailable="" if edge.get("rows_per_s") else reason)
    )
    bench.rows.append(
        Row(6, "device CPU s per 1M records", "s", edge.get("device_cpu_s_per_million"), "JSON per request",
            naive["device_cpu_s_per_million"], "", unavailable="" if edge.get("rows_per_s") else reason)
    )


def run(bench: Bench, only: set[int] | None) -> None:
    for number in sorted(BENCHMARKS):
        if only and number not in only:
            continue
        title, fn = BENCHMARKS[number]
        bench.log(f"row {number}: {title}")
        started = time.perf_counter()
        try:
            fn(bench)
        except Unavailable as exc:
            bench.rows.append(Row(number, title, "", None, unavailable=str(exc)))
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            bench.rows.append(Row(number, title, "", None, unavailable=f"failed: {type(exc).__name__}: {exc}"))
        bench.log(f"row {number}: {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run edgeloop's benchmarks and print one table.")
    parser.add_argument("--quick", action="store_true", help="a small version in under a minute (CI smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where latest.json and the plot go")
    parser.add_argument("--only", default="", help="comma-separated row numbers to run, e.g. 3,6")
    parser.add_argument("--naive-client", nargs=2, metavar=("URL", "NDJSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_client:
        asyncio.run(_naive_client(args.naive_client[0], Path(args.naive_client[1]), concurrency=4))
        return 0
    only = {int(n) for n in args.only.split(",") if n.strip()} or None
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="edgeloop-bench-") as work:
        bench = Bench(size=QUICK if args.quick else FULL, quick=args.quick, out_dir=args.out, work=Path(work))
        run(bench, only)
    duration = time.perf_counter() - started
    plot = None
    if bench.scaling:
        print(render_scaling(bench.scaling))
        try:
            plot = str(plot_scaling(bench.scaling, args.out / "scaling.png", describe(info)))
        except ImportError:
            bench.log("matplotlib is not installed: no plot (pip install 'edgeloop[bench]')")
    table = render(bench.rows)
    print(f"\nedgeloop bench{' --quick' if args.quick else ''} on {describe(info)} ({duration:.0f} s)\n")
    print(table)
    result = {
        "quick": args.quick,
        "machine": info,
        "duration_s": round(duration, 1),
        "rows": [row.as_dict() for row in bench.rows],
        "scaling": bench.scaling,
        "plot": plot,
        "details": bench.extra,
        "table": table,
    }
    (args.out / "latest.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    bench.log(f"wrote {args.out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
