"""The hostile-input suite: a real server under random and mutated Parquet, bombs, header abuse and slow clients.

Throughout, another device keeps landing good batches and /healthz keeps answering, and the
server's RSS is sampled: every attack must be refused with the right status in the one
error shape, nothing of ours may fail (no 5xx), and the peak RSS grows less than GROWTH_BOUND_MB over rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import psutil
import pyarrow as pa
import pytest

from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.ingest.conftest import cli, free_port, make_table, seal, spawn_server, stop_server, write_config
from tests.ingest.test_bombs import _with, forge
from tests.sockets import closed_by_peer

SEED = int(os.environ.get("EDGELOOP_FUZZ_SEED", "20261126"))
# Growth over rest the server promises: decoding and queued batches share store.queue_max_bytes (512 MiB by
# default); an unbounded server grew 1.4-5 GB on these bombs.
GROWTH_BOUND_MB = 512
PARQUET = "application/vnd.apache.parquet"
SENDER_FAULTS = {400, 401, 408, 409, 413, 415, 422}
VIBRATION = SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]


class RssSampler(threading.Thread):
    """Samples a process's resident memory every 20 ms; ``peak_mb`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak_mb = max(self.peak_mb, self.process.memory_info().rss / 2**20)
            except psutil.Error:
                return
            time.sleep(0.02)


def _bombs(tmp: Path) -> list[tuple[str, str, bytes, set[int]]]:
    """(kind, batch id, body, expected statuses) for every kind of bomb the server must refuse before decoding."""
    table, _ = make_table(VIBRATION, predictions=2000)
    bombs = []
    vector = pa.FixedSizeListArray.from_arrays(pa.repeat(pa.scalar(0.5, pa.float32()), 2000 * 65536), 65536)
    bombs.append(("vector, footer lies about dim", *forge(VIBRATION, _with(table, "spectrum", vector), claim=table), {422}))
    bombs.append(("vector, declared dim", *forge(VIBRATION, _with(table, "spectrum", vector)), {422}))
    one, _ = make_table(VIBRATION, predictions=1)
    bombs.append(("300 MiB repeated string", *forge(VIBRATION, _with(one, "predicted_class", pa.array(["x" * (300 * 2**20)]))), {422}))
    rows = 200_000
    columns = {name: pa.concat_arrays([one.column(name).combine_chunks()] * rows) for name in one.column_names}
    columns["predicted_class"] = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["x" * 3000]))
    bombs.append(("dictionary: one 3 kB value x 200,000 rows (600 MB decoded)", *seal(tmp / "dict", VIBRATION, pa.table(columns).cast(VIBRATION.arrow_schema)), {413}))
    bombs.append(("DELTA_BYTE_ARRAY", *forge(VIBRATION, table, use_dictionary=False, column_encoding={"predicted_class": "DELTA_BYTE_ARRAY"}), {422}))
    small, _ = make_table(VIBRATION, predictions=20)
    bombs.append(("rows beyond max_rows_per_batch", *forge(VIBRATION, pa.concat_tables([table] * 501)), {413}))
    bombs.append(("72,000 one-value pages", *forge(VIBRATION, pa.concat_tables([small] * 200), data_page_size=1, write_batch_size=1, use_dictionary=False), {413}))
    return bombs


def _mutations(tmp: Path, rng: random.Random, count: int) -> list[tuple[str, str, bytes]]:
    """Random bytes, and valid batches with bytes flipped, cut, spliced or repeated."""
    out = []
    for index in range(count):
        batch_id, body = seal(tmp / f"m{index}", VIBRATION, make_table(VIBRATION, predictions=rng.randint(1, 50))[0])
        data = bytearray(body)
        kind = rng.choice(["random", "flip", "cut", "splice", "footer", "magic"])
        if kind == "random":
            data = bytearray(rng.randbytes(rng.randint(0, 4096)))
        elif kind == "flip":
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "cut":
            data = data[: rng.randrange(len(data))] + b"PAR1"
        elif kind == "splice":
            start = rng.randrange(len(data))
            data[start:start] = rng.randbytes(rng.randint(1, 512))
        elif kind == "footer":  # the footer length and the bytes just before it
            for offset in range(rng.randint(5, 12), rng.randint(13, 300)):
                if offset < len(data) and rng.random() < 0.2:
                    data[-offset] = rng.randrange(256)
        else:
            data = bytearray(b"PAR1" + rng.randbytes(rng.randint(8, 2000)) + b"PAR1")
        out.append((kind, batch_id, bytes(data)))
    return out


HEADER_ABUSE = [
    ("huge request line", b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("huge header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", {400}),
    ("500 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n", {400}),
    ("binary method", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 / HTTP/1.1\r\n\r\n", {400}),
    ("bad content-length", b"PUT /v1/batches/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", {400}),
    ("non-UTF-8 token", b"PUT /v1/batches/" + str(uuid.uuid4()).encode() + b" HTTP/1.1\r\nHost: x\r\n"
     b"Authorization: Bearer \xff\xfe\r\nContent-Length: 4\r\n\r\nPAR1", {401}),
    ("huge Content-Length", b"PUT /v1/batches/" + str(uuid.uuid4()).encode() + b" HTTP/1.1\r\nHost: x\r\n"
     b"Authorization: Bearer TOKEN\r\nContent-Type: application/vnd.apache.parquet\r\nContent-Length: 99999999999\r\n\r\n", {413}),
]


async def _raw(port: int, data: bytes) -> tuple[int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        return int(head.split(b" ", 2)[1]), json.loads(await asyncio.wait_for(reader.readexactly(length), 20))
    finally:
        writer.close()


def _shape(body: dict) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] and body["error"]["message"], body


@pytest.mark.timeout(400)
async def test_hostile_inputs_are_refused_while_good_devices_keep_landing(tmp_path):
    """Every attack gets its 4xx in the error shape, no 5xx, /healthz and another device's uploads keep working, RSS stays bounded."""
    rng = random.Random(SEED)
    port = free_port()
    config = write_config(tmp_path, port, extra="idle_timeout_s = 3\nbody_timeout_s = 2\nmax_connections = 256\n")
    attacker = cli("devices", "add", "stolen-1", "--config", str(config)).stdout.strip().splitlines()[-1]
    good_token = cli("devices", "add", "good-1", "--config", str(config)).stdout.strip().splitlines()[-1]
    bombs = _bombs(tmp_path / "bombs")
    mutations = _mutations(tmp_path / "mutations", rng, 150)
    server = spawn_server(config, tmp_path / "server.log")
    sampler = RssSampler(server.pid)
    sampler.start()
    time.sleep(0.5)
    rest_mb = sampler.peak_mb
    good: list[int] = []
    health: list[float] = []
    unexpected: list[tuple[str, int, object]] = []
    done = asyncio.Event()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

            async def put(token: str, batch_id: str, body: bytes) -> tuple[int, dict]:
                headers = {"Authorization": f"Bearer {token}", "Content-Type": PARQUET}
                async with session.put(f"{url}/v1/batches/{batch_id}", data=_payload(body), headers=headers) as response:
                    return response.status, await response.json(content_type=None)

            async def good_device() -> None:
                index = 0
                while not done.is_set():
                    batch_id, body = seal(tmp_path / "good" / str(index), VIBRATION, make_table(VIBRATION, predictions=100)[0])
                    status, answer = await put(good_token, batch_id, body)
                    good.append(status)
                    if status != 201:
                        unexpected.append(("good device", status, answer))
                    index += 1
                    await asyncio.sleep(0.1)

            async def prober() -> None:
                while not done.is_set():
                    started = time.perf_counter()
                    async with session.get(f"{url}/healthz") as response:
                        if response.status != 200:
                            unexpected.append(("healthz", response.status, await response.text()))
                    health.append(time.perf_counter() - started)
                    await asyncio.sleep(0.2)

            async def attack(kind: str, batch_id: str, body: bytes, expected: set[int]) -> None:
                status, answer = await put(attacker, batch_id, body)
                if status not in expected:
                    unexpected.append((kind, status, answer))
                elif status >= 400:
                    _shape(answer)

            background = [asyncio.create_task(good_device()), asyncio.create_task(prober())]
            # Bombs: each kind four at once, as the attacker did.
            for kind, batch_id, body, expected in bombs:
                await asyncio.gather(*(attack(kind, batch_id, body, expected | {429}) for _ in range(4)))
            # Random and mutated Parquet: a mutation may still be a valid batch (201); never a 5xx.
            for start in range(0, len(mutations), 10):
                await asyncio.gather(*(attack(f"mutation {kind}", batch_id, body, SENDER_FAULTS | {201, 429})
                                       for kind, batch_id, body in mutations[start:start + 10]))
            # Header abuse, raw on the socket.
            for kind, request, expected in HEADER_ABUSE:
                status, answer = await _raw(port, request.replace(b"TOKEN", attacker.encode()))
                if status not in expected:
                    unexpected.append((kind, status, answer))
                _shape(answer)
            # Slow clients: 600 half-sent requests (over twice the cap) and 20 bodies shorter than their Content-Length.
            slow = []
            for index in range(600):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(b"PUT /v1/batches/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append(sock)
                if index % 100 == 99:
                    await asyncio.sleep(0.2)
            short = [_raw(port, (f"PUT /v1/batches/{uuid.uuid4()} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {attacker}\r\n"
                                 f"Content-Type: {PARQUET}\r\nContent-Length: 100000\r\n\r\nPAR1").encode()) for _ in range(20)]
            for status, answer in await asyncio.gather(*short):
                if status != 408:
                    unexpected.append(("short body", status, answer))
            await asyncio.sleep(4)  # past idle_timeout_s: every half-sent request is closed by now
            lingering = 0
            for sock in slow:
                sock.setblocking(False)
                lingering += not closed_by_peer(sock)
                sock.close()
            done.set()
            await asyncio.gather(*background)
    finally:
        sampler.stop.set()
        stop_server(server)
    figures = {"seed": SEED, "rss_at_rest_mb": round(rest_mb), "rss_peak_mb": round(sampler.peak_mb),
               "good_batches": len(good), "health_probes": len(health), "health_max_s": round(max(health), 3)}
    print("hostile-input figures:", json.dumps(figures))
    assert unexpected == [], unexpected
    assert lingering == 0
    assert good and all(status == 201 for status in good)
    assert sampler.peak_mb - rest_mb < GROWTH_BOUND_MB, figures


def _payload(body: bytes):
    import io

    return io.BytesIO(body) if len(body) > 1_000_000 else body


@pytest.mark.timeout(200)
async def test_schema_text_in_batches_is_never_cached(tmp_path):
    """Uploads whose footers carry 8 MiB schema descriptions are 413 before the footer is parsed, and leave RSS where it was."""
    port = free_port()
    config = write_config(tmp_path, port)
    token = cli("devices", "add", "stolen-1", "--config", str(config)).stdout.strip().splitlines()[-1]
    server = spawn_server(config, tmp_path / "server.log")
    process = psutil.Process(server.pid)
    try:
        async with aiohttp.ClientSession() as session:

            async def upload(index: int, fingerprint: str = VIBRATION.fingerprint, mib: int = 3) -> int:
                table, _ = make_table(VIBRATION, predictions=5)
                schema = VIBRATION.canonical()
                schema["description"] = f"{index}" + "d" * (mib * 2**20)
                batch_id = str(uuid.uuid4())
                body = forge_with_schema_text(table, batch_id, json.dumps(schema), fingerprint)
                headers = {"Authorization": f"Bearer {token}", "Content-Type": PARQUET}
                async with session.put(f"http://127.0.0.1:{port}/v1/batches/{batch_id}", data=_payload(body), headers=headers) as response:
                    return response.status

            def fingerprint(index: int) -> str:
                return VIBRATION.fingerprint if index % 2 else f"{index:016x}"

            # The first uploads raise the allocators' high-water mark; a cache keyed by text would keep growing after.
            assert await upload(0, "0" * 16, mib=0) == 422 and await upload(1, mib=0) == 201
            warm = [await upload(index, fingerprint(index), mib=8) for index in range(2, 10)]
            before_mb = process.memory_info().rss / 2**20
            statuses = warm + [await upload(index, fingerprint(index), mib=8) for index in range(10, 26)]
            after_mb = process.memory_info().rss / 2**20
            print("schema-text RSS figures:", json.dumps({"after_8_mb": round(before_mb), "after_24_mb": round(after_mb)}))
    finally:
        stop_server(server)
    assert statuses == [413] * 24
    assert after_mb - before_mb < 32, (before_mb, after_mb)


def forge_with_schema_text(table: pa.Table, batch_id: str, schema_text: str, fingerprint: str) -> bytes:
    """A vibration batch under the registered fingerprint whose metadata carries ``schema_text`` as its schema."""
    import io

    import pyarrow.parquet as pq

    from edgeloop.schemas.envelope import BATCH_METADATA_KEYS

    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema.remove_metadata(), compression="zstd") as out:
        out.write_table(table)
        out.add_key_value_metadata({
            BATCH_METADATA_KEYS["batch_id"]: batch_id.encode(),
            BATCH_METADATA_KEYS["model"]: b"vibration",
            BATCH_METADATA_KEYS["schema_fingerprint"]: fingerprint.encode(),
            BATCH_METADATA_KEYS["schema"]: schema_text.encode(),
        })
    return sink.getvalue()
