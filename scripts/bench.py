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

from edgeloop.collector.simulator import MODELS, SimulatedModel, thumbnails_are_jpeg  # noqa: E402
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry  # noqa: E402

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
    scaling_uploads: int  # per level, shared out among its devices so each level does the same work
    script_args: tuple[str, ...]  # for the parts' own scripts, bench_intake.py and bench_ingest.py


FULL = Size(
    wire_records=20_000,
    mqtt_records=20_000,
    naive_records=20_000,
    device_records=1_000_000,
    intake_records=200_000,
    scaling_devices=(10, 100, 1000),
    scaling_rows=1000,
    scaling_uploads=1000,
    script_args=(),
)
QUICK = Size(
    wire_records=2_000,
    mqtt_records=1_000,
    naive_records=1_000,
    device_records=5_000,
    intake_records=5_000,
    scaling_devices=(5, 20, 100),  # the full run's 1,000 concurrent uploads take most of a minute alone
    scaling_rows=20,
    scaling_uploads=100,
    script_args=("--quick",),
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
    from edgeloop.collector.config import SamplingSettings
    from edgeloop.collector.pipeline import Pipeline

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
    from edgeloop.collector.config import SpoolSettings
    from edgeloop.collector.spool import Spool

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
            if model == "vibration":
                small_batches(bench, spool, tables[0], rows)
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


def small_batches(bench: Bench, spool: Any, table: pa.Table, rows: list[dict[str, Any]]) -> None:
    """The same comparison for the batches a slow device seals: one record per 6 s until seal_max_age_s."""
    from edgeloop.collector.config import SpoolSettings

    age_s = SpoolSettings().seal_max_age_s
    per = int(age_s // 6)
    schema = bench.registry["vibration"]
    parquet = sum(spool.write_batch(table.slice(i, per), schema=schema).bytes for i in range(0, table.num_rows, per))
    gzipped = sum(
        len(gzip.compress(b"".join(dumps(row) + b"\n" for row in rows[i : i + per]), compresslevel=6))
        for i in range(0, len(rows), per)
    )
    n = len(rows)
    bench.rows.append(
        Row(3, f"wire bytes/record, vibration, {per}-row batches", "B", parquet / n, "gzip'd NDJSON, same batches",
            gzipped / n, "<= 0.5x", note=f"what the default seal_max_age_s = {age_s:g} gives a device logging one record per 6 s")
    )


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


# ---------------------------------------------------------------- the ingest server


def console_script(name: str) -> str:
    """A command installed beside this Python (the venv's bin), else on PATH."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"the {name} command is not installed")
    return found


class IngestServer:
    """A real ``edgeloop-ingest serve`` on a loopback port with a DuckDB file in the work dir."""

    def __init__(self, bench: Bench, name: str, *, retry_after_s: int | None = None) -> None:
        for module in ("edgeloop.ingest.cli", "edgeloop.ingest.app"):
            try:
                __import__(module)
            except ImportError as exc:
                raise Unavailable(f"the ingest service is not built yet ({exc})") from None
        self.folder = bench.work / name
        self.folder.mkdir()
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.config = self.folder / "ingest.toml"
        self.config.write_text(
            f'[server]\nhost = "{LOOPBACK}"\nport = {self.port}\nadmin_token_file = "{self.folder / "admin.token"}"\n'
            f'log_level = "warning"\n'
            + (f"retry_after_s = {retry_after_s}\n" if retry_after_s is not None else "")
            + f'[store]\ndb_path = "{self.folder / "edgeloop.duckdb"}"\n'
        )
        self._stack = contextlib.ExitStack()
        self.proc = self._stack.enter_context(
            process([console_script("edgeloop-ingest"), "serve", "--config", str(self.config)], log=self.folder / "server.log")
        )
        try:
            wait_for(self._healthy, timeout_s=60, what="edgeloop-ingest serve", proc=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}: {self.log_tail()}") from None
        self.admin = (self.folder / "admin.token").read_text().strip()

    def log_tail(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-800:]

    def _healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def add_devices(self, names: list[str]) -> list[str]:
        """Register devices through the admin API; their tokens, in order."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda name: self._post("/v1/devices", {"name": name})["token"], names))

    def rows_landed(self) -> int:
        answer = self._post("/v1/sql", {"sql": "SELECT coalesce(sum(rows), 0) AS n FROM batches"})
        return int(answer["rows"][0]["n"])

    def stop(self) -> None:
        self._stack.close()


def parquet_bodies(bench: Bench, model: str, rows: int, count: int, *, seed: int) -> list[tuple[str, bytes]]:
    """``count`` sealed batches of ``rows`` simulated records each, as (batch id, file bytes)."""
    from edgeloop.collector.config import SpoolSettings
    from edgeloop.collector.spool import Spool

    table = sealed_tables(bench, model, simulated(model, rows, seed=seed, feedback_ratio=0.0))[0]
    spool = Spool(bench.work / f"bodies-{model}-{rows}-{seed}", SpoolSettings(), agent_version="bench")
    bodies = []
    for _ in range(count):
        batch = spool.write_batch(table, schema=bench.registry[model])
        bodies.append((batch.batch_id, batch.path.read_bytes()))
        batch.path.unlink()
    return bodies


# ---------------------------------------------------------------- rows 2 and 6: a device end to end


def device_config(folder: Path, *, ingest: IngestServer | None, token: str = "", sampling: str = "") -> Path:
    """An agent config in ``folder``: keep every record unless ``sampling`` (TOML) says otherwise."""
    (folder / "fleet.key").write_bytes(FLEET_KEY)
    (folder / "fleet.key").chmod(0o600)
    (folder / "device.token").write_text(token + "\n")
    sync = (
        f'[sync]\nurl = "{ingest.url}"\ntoken_file = "{folder / "device.token"}"\njitter_s = 0\n'
        "high_water_bytes = 8589934592\n"
        if ingest is not None
        else "[sync]\nenabled = false\n"
    )
    config = folder / "collector.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{folder / "state"}"\nsocket_path = "{folder / "agent.sock"}"\n'
        f'key_file = "{folder / "fleet.key"}"\nlog_level = "warning"\n'
        "[spool]\nreserve_free_bytes = 0\nmax_bytes = 8589934592\n"
        + (sampling or "[sampling]\nseed = 1\n[sampling.default]\nkeep_rate = 1.0\n")
        + sync
    )
    return config


def run_sdk(socket_path: Path, ndjson: Path) -> tuple[dict[str, Any], float]:
    """Log every record of ``ndjson`` through the SDK in a child process; its stats and CPU seconds."""
    sdk = subprocess.Popen(
        [sys.executable, __file__, "--sdk-client", str(socket_path), str(ndjson)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watch = CpuWatch(sdk.pid)
    out, err = sdk.communicate(timeout=1200)
    watch.stop()
    if sdk.returncode != 0:
        raise RuntimeError(f"SDK client failed: {err.decode()[-800:]}")
    stats = json.loads(out.decode().strip().splitlines()[-1])
    if stats.get("dropped"):
        raise RuntimeError(f"the SDK dropped records: {stats['dropped']}")
    return stats, watch.cpu_s


INTAKE_SAMPLING = (  # the example config's rule: a quarter kept, the uncertain ones always
    "[sampling]\nseed = 1\n[sampling.models.vibration]\nkeep_rate = 0.25\nalways_keep_below_confidence = 0.6\n"
)


def bench_intake_own(bench: Bench) -> dict[str, Any]:
    """Row 1 without the agent's own script: SDK → agent → sealed Parquet vs pyarrow alone."""
    import orjson
    import pyarrow.parquet as pq

    folder = bench.work / "intake"
    folder.mkdir()
    ndjson = folder / "records.ndjson"
    n = write_ndjson(ndjson, "vibration", bench.size.intake_records, seed=31)
    config = device_config(folder, ingest=None, sampling=INTAKE_SAMPLING)
    with process([console_script("edgeloop-collector"), "run", "--config", str(config)], log=folder / "agent.log") as agent:
        wait_for(lambda: (folder / "agent.sock").exists(), timeout_s=60, what="edgeloop-collector run", proc=agent)
        started = time.perf_counter()
        run_sdk(folder / "agent.sock", ndjson)
        done = subprocess.run(
            [console_script("edgeloop-collector"), "flush", "--config", str(config), "--json"], capture_output=True, timeout=600
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"edgeloop-collector flush failed: {done.stderr.decode()[-500:]}")
    # The reference: pyarrow alone turning the same records into one zstd Parquet file.
    started = time.perf_counter()
    writer = None
    with open(ndjson, "rb") as lines:
        while chunk := [orjson.loads(line) for _, line in zip(range(50_000), lines)]:
            flat = [{**r.get("inputs", {}), **r.get("outputs", {}), **r.get("feedback", {}), "kind": r["kind"],
                     "record_id": r["record_id"], "model_version": r["model_version"]} for r in chunk]
            table = pa.Table.from_pylist(flat)
            if writer is None:
                writer = pq.ParquetWriter(folder / "pyarrow.parquet", table.schema, compression="zstd")
            writer.write_table(table.cast(writer.schema))
    if writer is not None:
        writer.close()
    reference_s = time.perf_counter() - started
    return {"records": n, "records_per_s": n / elapsed, "pyarrow_records_per_s": n / reference_s, "source": "bench.py"}


def write_ndjson(path: Path, model: str, n: int, *, seed: int) -> int:
    """Simulated records as NDJSON, streamed so a million records never sit in memory."""
    sim = SimulatedModel(model, seed=seed)
    with open(path, "wb") as out:
        for start in range(0, n, 10_000):
            out.write(b"".join(dumps(r) + b"\n" for r in sim.records(min(10_000, n - start))))
    return n


def _sdk_client(socket_path: str, ndjson: Path) -> None:
    """The device side of edgeloop: the app logs each record through the SDK."""
    import orjson

    from edgeloop.collector.client import Client

    client = Client(socket_path)
    with open(ndjson, "rb") as lines:
        for count, line in enumerate(lines, 1):
            r = orjson.loads(line)
            if r["kind"] == "prediction":
                client.log_prediction(r["model"], r["model_version"], r["inputs"], r["outputs"], record_id=r["record_id"])
            else:
                client.log_feedback(r["prediction_id"], r["model"], r["model_version"], r["feedback"], source=r.get("source"))
            if count % 50_000 == 0:  # keep the buffer bounded: the app waits, nothing is dropped
                client.flush(timeout_s=120)
    client.flush(timeout_s=120)
    stats = client.stats()
    client.close()
    print(json.dumps(stats, default=str))


def bench_device(bench: Bench) -> dict[str, Any]:
    """Records through the SDK, the agent (privacy, journal, spool) and a sync into ingest."""
    folder = bench.work / "device"
    folder.mkdir()
    n = write_ndjson(folder / "records.ndjson", "vibration", bench.size.device_records, seed=21)
    ingest = IngestServer(bench, "device-ingest")
    try:
        (token,) = ingest.add_devices(["bench-device"])
        config = device_config(folder, ingest=ingest, token=token)
        collector = console_script("edgeloop-collector")
        with process([collector, "run", "--config", str(config)], log=folder / "agent.log") as agent:
            wait_for(lambda: (folder / "agent.sock").exists(), timeout_s=60, what="edgeloop-collector run", proc=agent)
            watch = CpuWatch(agent.pid)
            started = time.perf_counter()
            sdk_stats, sdk_cpu_s = run_sdk(folder / "agent.sock", folder / "records.ndjson")
            logged_s = time.perf_counter() - started
            for command in (["flush"], ["sync", "--wait"]):
                done = subprocess.run(
                    [collector, *command, "--config", str(config), "--timeout", "600"], capture_output=True, timeout=660
                )
                if done.returncode != 0:
                    raise RuntimeError(f"edgeloop-collector {command[0]} failed: {done.stderr.decode()[-500:]}")
            wait_for(lambda: ingest.rows_landed() >= n, timeout_s=600, what="rows landing")
            elapsed = time.perf_counter() - started
            watch.stop()
    finally:
        ingest.stop()
    return {
        "records": n,
        "sdk": sdk_stats,
        "rows_per_s": n / elapsed,
        "logged_per_s": n / logged_s,
        "agent_cpu_s_per_million": watch.cpu_s / n * 1e6,
        "agent_peak_rss_mb": watch.peak_rss / 2**20,
        "sdk_cpu_s_per_million": sdk_cpu_s / n * 1e6,
        "device_cpu_s_per_million": (watch.cpu_s + sdk_cpu_s) / n * 1e6,
        "elapsed_s": elapsed,
    }


# ---------------------------------------------------------------- row 7: scaling


async def _upload_all(url: str, uploads: list[tuple[str, list[tuple[str, bytes]]]]) -> tuple[list[float], int, int]:
    """Each device PUTs its batches one after another, all devices at once; latencies in s."""
    import aiohttp

    latencies: list[float] = []
    throttled = 0
    deadline = time.monotonic() + 600

    async def device(session: aiohttp.ClientSession, token: str, batches: list[tuple[str, bytes]]) -> None:
        nonlocal throttled
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}
        for batch_id, body in batches:
            started = time.perf_counter()
            while True:
                async with session.put(f"{url}/v1/batches/{batch_id}", data=body, headers=headers) as response:
                    await response.read()
                    if response.status in (200, 201):
                        break
                    if response.status in (429, 503) and time.monotonic() < deadline:
                        throttled += 1
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    raise RuntimeError(f"upload answered {response.status}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(device(session, token, batches) for token, batches in uploads))
    return latencies, throttled, len(latencies)


def bench_scaling(bench: Bench) -> None:
    size = bench.size
    most = max(size.scaling_devices)
    # --quick keeps the server's throttling but asks for shorter waits, to stay under a minute;
    # the full run measures the server's defaults.
    ingest = IngestServer(bench, "scaling-ingest", retry_after_s=1 if bench.quick else None)
    try:
        tokens = ingest.add_devices([f"sim-{i:04d}" for i in range(most)])
        for level, devices in enumerate(size.scaling_devices):
            bodies = parquet_bodies(bench, "vibration", size.scaling_rows, max(size.scaling_uploads, devices), seed=100 + level)
            plan = [(tokens[d], bodies[d::devices]) for d in range(devices)]
            before = ingest.rows_landed()
            started = time.perf_counter()
            latencies, throttled, uploads = asyncio.run(_upload_all(ingest.url, plan))
            elapsed = time.perf_counter() - started
            landed = ingest.rows_landed() - before
            latencies.sort()
            p99 = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
            bench.scaling.append(
                {
                    "devices": devices,
                    "rows_per_batch": size.scaling_rows,
                    "uploads": uploads,
                    "rows": landed,
                    "rows_per_s": landed / elapsed,
                    "p50_ms": latencies[len(latencies) // 2] * 1000,
                    "p99_ms": p99 * 1000,
                    "throttled_429_503": throttled,
                    "elapsed_s": elapsed,
                }
            )
    finally:
        ingest.stop()
    base = bench.scaling[0]
    for point in bench.scaling:
        bench.rows.append(
            Row(
                7, f"ingest rows/s, {point['devices']:,} devices", "/s", point["rows_per_s"],
                f"{base['devices']} devices", base["rows_per_s"], "",
                note=f"p99 upload {point['p99_ms']:,.0f} ms, {point['throttled_429_503']} throttled",
            )
        )


# ---------------------------------------------------------------- rows 1, 4, 5: the parts' own scripts


def run_script_json(bench: Bench, script: str, args: list[str], *, timeout_s: float) -> dict[str, Any]:
    path = ROOT / "scripts" / script
    if not path.exists():
        raise Unavailable(f"scripts/{script} is not written yet")
    bench.log(f"running scripts/{script} {' '.join(args)}")
    done = subprocess.run(
        [sys.executable, str(path), *args], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/{script} exited {done.returncode}: {done.stderr[-800:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])


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
        reason = " ".join(row.unavailable.split())
        reason = reason if len(reason) <= 110 else reason[:107] + "..."  # the whole reason is in latest.json
        edgeloop = fmt(row.edgeloop) + unit if row.edgeloop is not None else f"not available: {reason}"
        if row.reference_name:
            if row.reference is None:
                reference = f"{row.reference_name}: not available ({reason})"
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
COVERS = {4: (4, 5)}  # rows one benchmark fills besides its own number
TITLES = {5: "fleet batches/s"}


def benchmark(number: int, title: str) -> Callable[[Callable[[Bench], None]], Callable[[Bench], None]]:
    def register(fn: Callable[[Bench], None]) -> Callable[[Bench], None]:
        BENCHMARKS[number] = (title, fn)
        return fn

    return register


def pick(found: dict[str, Any], *names: str) -> float:
    """The first of ``names`` present in a script's JSON (top level or one level down)."""
    for name in names:
        if isinstance(found.get(name), (int, float)):
            return float(found[name])
        for value in found.values():
            if isinstance(value, dict) and isinstance(value.get(name), (int, float)):
                return float(value[name])
    raise RuntimeError(f"none of {names} in the script's JSON: {sorted(found)}")


@benchmark(1, "device intake")
def row_intake(bench: Bench) -> None:
    try:
        found = run_script_json(bench, "bench_intake.py", ["--json", *bench.size.script_args], timeout_s=900)
        edge = pick(found, "records_per_s")
        ref = pick(found, "pyarrow_records_per_s")
        source = "scripts/bench_intake.py"
    except Unavailable:
        found = bench_intake_own(bench)
        edge, ref, source = found["records_per_s"], found["pyarrow_records_per_s"], "scripts/bench.py (SDK → agent → sealed)"
    bench.extra["intake"] = found
    bench.rows.append(
        Row(1, "device intake, records/s (SDK → sealed Parquet)", "/s", edge, "pyarrow alone", ref,
            ">= 100,000/s and >= 0.25x", note=source)
    )


@benchmark(4, "ingest rows/s")
def row_ingest(bench: Bench) -> None:
    found = run_script_json(bench, "bench_ingest.py", ["--json", *bench.size.script_args], timeout_s=1200)
    source = "scripts/bench_ingest.py"
    bench.extra["ingest"] = found
    bench.rows.append(
        Row(4, "ingest rows/s, HTTP API, 10,000-row batches", "/s",
            pick(found, "http_rows_per_s"),
            "DuckDB INSERT … read_parquet", pick(found, "duckdb_read_parquet_rows_per_s"), ">= 0.7x",
            note=source)
    )
    bench.rows.append(
        Row(5, "fleet batches/s, 200 devices, 1,000-row batches", "/s",
            pick(found, "grouped_batches_per_s"),
            "one transaction per batch", pick(found, "one_txn_per_batch_batches_per_s"),
            ">= 3x", note=source)
    )


@benchmark(2, "device cost")
def row_device(bench: Bench) -> None:
    try:
        device = bench_device(bench)
    except Unavailable as exc:
        bench.extra["edgeloop_end_to_end"] = {"unavailable": str(exc)}
        raise
    except Exception as exc:
        bench.extra["edgeloop_end_to_end"] = {"unavailable": f"failed: {exc}"}
        raise
    bench.extra["edgeloop_end_to_end"] = device
    note = f"{device['records']:,} records collected and synced"
    bench.rows.append(Row(2, "agent CPU s per 1M records (collect + sync)", "s", device["agent_cpu_s_per_million"], note=note))
    bench.rows.append(Row(2, "agent peak RSS", "MB", device["agent_peak_rss_mb"], target="<= 120 MB", note=note))


benchmark(3, "wire bytes per record")(bench_wire)
benchmark(7, "scaling curve")(bench_scaling)


@benchmark(6, "the usual alternative, end to end")
def row_naive(bench: Bench) -> None:
    naive = bench_naive(bench)
    bench.extra["naive"] = naive
    edge = bench.extra.get("edgeloop_end_to_end", {})
    reason = edge.get("unavailable", "edgeloop's end-to-end run did not happen")
    bench.rows.append(
        Row(6, "end to end, rows/s (SDK → landed)", "/s", edge.get("rows_per_s"), "JSON per request + INSERT",
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
            bench.rows.extend(
                Row(n, TITLES.get(n, title), "", None, unavailable=str(exc)) for n in COVERS.get(number, (number,))
            )
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            reason = f"failed: {type(exc).__name__}: {exc}"
            bench.rows.extend(
                Row(n, TITLES.get(n, title), "", None, unavailable=reason) for n in COVERS.get(number, (number,))
            )
        bench.log(f"row {number}: {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run edgeloop's benchmarks and print one table.")
    parser.add_argument("--quick", action="store_true", help="a small version in under a minute (CI smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where latest.json and the plot go")
    parser.add_argument("--only", default="", help="comma-separated row numbers to run, e.g. 3,6")
    parser.add_argument("--naive-client", nargs=2, metavar=("URL", "NDJSON"), help=argparse.SUPPRESS)
    parser.add_argument("--sdk-client", nargs=2, metavar=("SOCKET", "NDJSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sdk_client:
        _sdk_client(args.sdk_client[0], Path(args.sdk_client[1]))
        return 0
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
