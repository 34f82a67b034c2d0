"""Row 9, store and forward: edgeloop against NATS JetStream, what an edge team would otherwise deploy.

The JetStream side, as NATS documents it for the edge: a device runs its own nats-server
with JetStream (domain ``device``) and a stream ``RECORDS``; it is a leaf node of a hub
nats-server (domain ``hub``) whose stream ``FLEET`` sources ``RECORDS`` across the leaf
connection, so the device buffers while the hub is unreachable and forwards when it is
back. The app publishes each record as JSON with ``publish_async`` (acknowledged by the
device's server); a durable pull consumer on the hub writes them into DuckDB (one row per
record: id, kind, model and the JSON body), acknowledging each fetched batch after its
INSERT commits.

The edgeloop side: the SDK, the agent (privacy, journal, spool) and ``sync --wait`` into a
real ingest server. Both get records from the same simulation, in the same run:

- online: hub/server up; rows/s from the first record logged to the last row in DuckDB;
  device CPU (app + local nats-server vs app + agent) per million records, and the device's
  peak RSS (the same two processes, summed while sampling);
- wire bytes per record: the hub's leaf-node bytes in (``/leafz``) vs the batch bytes the
  ingest server received (its ledger);
- catch-up: hub/server down while the backlog is logged, then started; seconds from the
  start to the last row in DuckDB.

``python -m bench.rows.jetstream publish|consume ...`` are the JetStream app and hub consumer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import (
    LOOPBACK,
    ROOT,
    Agent,
    Bench,
    Goal,
    IngestServer,
    ProcessWatch,
    Row,
    Unavailable,
    agent_config,
    debian_binary,
    free_port,
    port_open,
    process,
    python_module,
    wait_for,
)
from bench.records import write_ndjson

NUMBERS = (9,)
TITLE = "store and forward vs NATS JetStream"
MB = 2**20


# ---------------------------------------------------------------- the JetStream app and hub consumer (child processes)


async def publish(url: str, ndjson: Path) -> None:
    """The device app: publish every record to the local JetStream, waiting for every acknowledgement."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    pending = []
    with open(ndjson, "rb") as lines:
        for line in lines:
            pending.append(await js.publish_async("records.vibration", line.rstrip(b"\n")))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


async def consume(url: str, db_path: str, expect: int) -> None:
    """The hub consumer: fetch batches from FLEET, INSERT them into DuckDB, acknowledge after the commit."""
    import duckdb
    import nats
    import orjson
    import pyarrow as pa
    from nats.js.api import AckPolicy, ConsumerConfig

    con = duckdb.connect(db_path)
    con.execute(
        "CREATE TABLE IF NOT EXISTS records (record_id VARCHAR, kind VARCHAR, model VARCHAR,"
        " received_at TIMESTAMPTZ DEFAULT current_timestamp, body JSON)"
    )
    landed = con.execute("SELECT count(*) FROM records").fetchone()[0]
    nc = await nats.connect(url, max_reconnect_attempts=-1)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "records.>", durable="duckdb", stream="FLEET", config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1)
    )
    while landed < expect:
        try:
            msgs = await sub.fetch(5_000, timeout=1)
        except asyncio.TimeoutError:  # nats' own TimeoutError is one, and _fetch_n also raises the bare asyncio one
            continue
        if not msgs:  # a fetch can end empty without a timeout (e.g. across a reconnect)
            continue
        bodies = [msg.data for msg in msgs]
        records = [orjson.loads(body) for body in bodies]
        batch = pa.table(  # noqa: F841 - read by DuckDB's replacement scan, FROM batch
            {
                "record_id": [r.get("record_id") for r in records],
                "kind": [r.get("kind") for r in records],
                "model": [r.get("model") for r in records],
                "body": [body.decode() for body in bodies],
            }
        )
        con.execute("INSERT INTO records (record_id, kind, model, body) SELECT * FROM batch")
        await msgs[-1].ack_sync()  # AckPolicy.ALL: acknowledges the whole batch, after it is committed
        landed += len(msgs)
    await nc.close()
    con.close()
    print(json.dumps({"landed": landed}))


# ---------------------------------------------------------------- the servers


class NatsServer:
    """One nats-server with JetStream on loopback ports; ``leaf_of`` makes it a leaf node of a hub."""

    def __init__(self, bench: Bench, binary: str, name: str, *, leaf_port: int | None = None, leaf_of: int | None = None) -> None:
        self.folder = bench.folder(f"nats-{name}")
        self.binary, self.name = binary, name
        self.port, self.monitor = free_port(), free_port()
        self.url = f"nats://{LOOPBACK}:{self.port}"
        leaf = ""
        if leaf_port is not None:
            leaf = f"leafnodes {{ listen: \"{LOOPBACK}:{leaf_port}\" }}\n"
        if leaf_of is not None:
            leaf = f"leafnodes {{ reconnect: 1, remotes: [ {{ url: \"nats-leaf://{LOOPBACK}:{leaf_of}\" }} ] }}\n"
        self.conf = self.folder / "server.conf"
        self.conf.write_text(
            f'server_name: "{name}"\nlisten: "{LOOPBACK}:{self.port}"\nhttp: "{LOOPBACK}:{self.monitor}"\n'
            f'jetstream {{ store_dir: "{self.folder / "js"}", domain: "{name}" }}\n{leaf}'
        )
        self.proc: subprocess.Popen | None = None
        self._stop = None

    def start(self) -> None:
        self._context = process([self.binary, "-c", str(self.conf)], log=self.folder / "server.log")
        self.proc = self._context.__enter__()
        wait_for(lambda: port_open(self.port) and self.js_ready(), timeout_s=30, what=f"nats-server {self.name}", proc=self.proc)

    def js_ready(self) -> bool:
        try:
            return "config" in self.monitor_json("jsz")
        except OSError:
            return False

    def monitor_json(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{self.monitor}/{path}", timeout=5) as response:
            return json.loads(response.read())

    def leaf_bytes_in(self) -> int:
        """Bytes this hub received from its leaf nodes."""
        return sum(int(leaf.get("in_bytes", 0)) for leaf in self.monitor_json("leafz").get("leafs") or [])

    def stop(self) -> None:
        if self.proc is not None:
            self._context.__exit__(None, None, None)
            self.proc = None


async def _setup_streams(device_url: str, hub_url: str) -> None:
    import nats
    from nats.js.api import ExternalStream, StorageType, StreamConfig, StreamSource

    device = await nats.connect(device_url)
    await device.jetstream().add_stream(StreamConfig(name="RECORDS", subjects=["records.>"], storage=StorageType.FILE))
    await device.close()
    hub = await nats.connect(hub_url)
    await hub.jetstream().add_stream(
        StreamConfig(
            name="FLEET", storage=StorageType.FILE,
            sources=[StreamSource(name="RECORDS", external=ExternalStream(api="$JS.device.API"))],
        )
    )
    await hub.close()


def _leaf_connected(hub: NatsServer) -> bool:
    try:
        return bool(hub.monitor_json("leafz").get("leafs"))
    except OSError:
        return False


def _child(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(python_module("bench.rows.jetstream", *args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, what: str, timeout_s: float = 1200) -> str:
    out, err = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {err.decode()[-800:]}")
    return out.decode()


def jetstream_run(bench: Bench, binary: str, ndjson: Path, n: int, backlog: Path, n_backlog: int) -> dict[str, Any]:
    """Online, then offline with a backlog, then catch-up; the device is one nats-server and the app."""
    leaf_port = free_port()
    hub = NatsServer(bench, binary, "hub", leaf_port=leaf_port)
    device = NatsServer(bench, binary, "device", leaf_of=leaf_port)
    db = hub.folder / "hub.duckdb"
    try:
        hub.start()
        device.start()
        wait_for(lambda: _leaf_connected(hub), timeout_s=30, what="leaf node connection")
        asyncio.run(_setup_streams(device.url, hub.url))
        # Online: the app publishes, the hub sources, the consumer lands every record.
        consumer = _child(["consume", hub.url, str(db), str(n)])
        bytes_before = hub.leaf_bytes_in()
        started = time.perf_counter()
        app = _child(["publish", device.url, str(ndjson)])
        watch = ProcessWatch(app.pid, device.proc.pid)
        _finish(app, "the JetStream app")
        _finish(consumer, "the hub consumer")
        elapsed = time.perf_counter() - started
        watch.stop()
        wire = hub.leaf_bytes_in() - bytes_before
        # Offline: the hub is down while the app publishes the backlog into the device's stream.
        hub.stop()
        _finish(_child(["publish", device.url, str(backlog)]), "the JetStream app (offline)")
        started = time.perf_counter()
        hub.start()
        _finish(_child(["consume", hub.url, str(db), str(n + n_backlog)]), "the hub consumer (catch-up)")
        catch_up_s = time.perf_counter() - started
    finally:
        device.stop()
        hub.stop()
    return _figures(n, elapsed, wire, watch, n_backlog, catch_up_s)


def edgeloop_run(bench: Bench, ndjson: Path, n: int, backlog: Path, n_backlog: int) -> dict[str, Any]:
    """The same three phases for the SDK, the agent and the ingest server."""
    ingest = IngestServer(bench, "jetstream-ingest", start=False)
    token = ingest.add_device_offline("bench-device")
    folder = bench.folder("jetstream-device")
    try:
        ingest.start()
        with Agent(folder, agent_config(folder, sync_url=ingest.url, token=token)) as agent:
            started = time.perf_counter()
            app = subprocess.Popen(
                python_module("bench.clients", "sdk", str(agent.socket), str(ndjson)), cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            watch = ProcessWatch(app.pid, agent.proc.pid)
            _finish(app, "the SDK app")
            agent.command("flush", "--timeout", "600")
            agent.command("sync", "--wait", "--timeout", "600")
            wait_for(lambda: ingest.rows_landed() >= n, timeout_s=600, what="rows landing")
            elapsed = time.perf_counter() - started
            watch.stop()
            wire = ingest._post("/v1/sql", {"sql": "SELECT sum(bytes)::BIGINT AS b FROM batches"})["rows"][0]["b"]
            # Offline: the server is down while the app logs the backlog; the agent spools it.
            ingest.stop()
            _finish(subprocess.Popen(
                python_module("bench.clients", "sdk", str(agent.socket), str(backlog)), cwd=ROOT,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            ), "the SDK app (offline)")
            agent.command("flush", "--timeout", "600")
            started = time.perf_counter()
            ingest.start()
            agent.command("sync", "--wait", "--timeout", "1200", timeout_s=1260)
            wait_for(lambda: ingest.rows_landed() >= n + n_backlog, timeout_s=1200, what="backlog landing")
            catch_up_s = time.perf_counter() - started
    finally:
        ingest.stop()
    return _figures(n, elapsed, wire, watch, n_backlog, catch_up_s)


def measure(bench: Bench) -> list[Row]:
    try:
        import nats  # noqa: F401
    except ImportError:
        raise Unavailable("nats-py is not installed (pip install 'edgeloop[bench]')") from None
    binary = debian_binary(bench, "nats-server", "nats-server")
    n, n_backlog = (2_000, 5_000) if bench.quick else (100_000, 1_000_000)
    folder = bench.folder("jetstream-records")
    write_ndjson(folder / "online.ndjson", "vibration", n, seed=41)
    write_ndjson(folder / "backlog.ndjson", "vibration", n_backlog, seed=42)
    edge = edgeloop_run(bench, folder / "online.ndjson", n, folder / "backlog.ndjson", n_backlog)
    nats_run = jetstream_run(bench, binary, folder / "online.ndjson", n, folder / "backlog.ndjson", n_backlog)
    bench.details.update(edgeloop=edge, jetstream=nats_run)
    ref = "NATS JetStream leaf → hub → DuckDB"
    online = f"{n:,} records online"
    return [
        Row(9, "store and forward, rows/s end to end", "/s", edge["rows_per_s"], ref, nats_run["rows_per_s"],
            goals=(Goal("ratio", ">=", 1),), note=online),
        Row(9, "store and forward, wire bytes/record", "B", edge["wire_bytes_per_record"], ref,
            nats_run["wire_bytes_per_record"], goals=(Goal("ratio", "<=", 0.5),), note=online),
        Row(9, "store and forward, device peak RSS (app + daemon)", "MB", edge["device_peak_rss_mb"], "app + local nats-server",
            nats_run["device_peak_rss_mb"], note=online),
        Row(9, "store and forward, device CPU s per 1M records", "s", edge["device_cpu_s_per_million"],
            "app + local nats-server", nats_run["device_cpu_s_per_million"], goals=(Goal("ratio", "<=", 1),), note=online),
        Row(9, f"catch-up after {n_backlog:,} records offline", "s", edge["catch_up_s"], ref, nats_run["catch_up_s"],
            goals=(Goal("ratio", "<=", 1),), note="from starting the server to the last row in DuckDB"),
    ]


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "publish":
        asyncio.run(publish(argv[1], Path(argv[2])))
        return 0
    if len(argv) == 4 and argv[0] == "consume":
        asyncio.run(consume(argv[1], argv[2], int(argv[3])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def _figures(n: int, elapsed: float, wire: int, watch: Any, n_backlog: int, catch_up_s: float) -> dict[str, float]:
    """One path's figures, the same keys for JetStream and edgeloop so the row divides them."""
    return {
        "records": n,
        "rows_per_s": n / elapsed,
        "wire_bytes_per_record": wire / n,
        "device_cpu_s_per_million": watch.cpu_s / n * 1e6,
        "device_peak_rss_mb": watch.peak_rss / MB,
        "backlog": n_backlog,
        "catch_up_s": catch_up_s,
    }
