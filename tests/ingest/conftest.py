"""Real batches (sealed by the collector's Spool), real servers on loopback, real DuckDB files."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pytest
from aiohttp import web

from edgeloop.collector.config import SpoolSettings
from edgeloop.collector.spool import Spool
from edgeloop.ingest.app import create_app, create_runner
from edgeloop.ingest.config import IngestConfig
from edgeloop.ingest.store import Store
from edgeloop.schemas import EXAMPLES_DIR, ModelSchema, SchemaRegistry
from tests.sockets import listen_on_loopback

PARQUET = "application/vnd.apache.parquet"
BASE_TIME = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def vibration() -> ModelSchema:
    return SchemaRegistry.from_dir(EXAMPLES_DIR)["vibration"]


def _value(field: pa.Field, index: int) -> Any:
    kind = field.type
    if pa.types.is_fixed_size_list(kind):
        return [0.25] * kind.list_size
    if pa.types.is_floating(kind):
        return index / 10
    if pa.types.is_integer(kind):
        return index
    if pa.types.is_timestamp(kind):
        return BASE_TIME
    if pa.types.is_boolean(kind):
        return True
    if pa.types.is_binary(kind):
        return b"\x00\x01"
    return f"{field.name}-{index}"


def make_table(
    schema: ModelSchema,
    *,
    predictions: int = 0,
    feedback: list[tuple[uuid.UUID, str, datetime]] = (),
    version: str = "1.0",
    start: datetime = BASE_TIME,
    weight: float = 1.0,
) -> tuple[pa.Table, list[uuid.UUID]]:
    """A table of ``predictions`` prediction rows and the given (prediction_id, label, created_at) feedback rows."""
    rows: list[dict[str, Any]] = []
    ids = [uuid.uuid4() for _ in range(predictions)]
    arrow = schema.arrow_schema
    for index, record_id in enumerate(ids):
        row = {
            "record_id": record_id, "kind": "prediction", "model": schema.name, "model_version": version,
            "created_at": start + timedelta(seconds=index), "sample_weight": weight, "prediction_id": None, "source": None,
        }
        for spec in schema.stored_fields:
            row[spec.name] = _value(arrow.field(spec.name), index) if spec.section != "feedback" else None
        rows.append(row)
    label_field = next(spec.name for spec in schema.stored_fields if spec.section == "feedback")
    for index, (prediction_id, label, created_at) in enumerate(feedback):
        row = {
            "record_id": uuid.uuid4(), "kind": "feedback", "model": schema.name, "model_version": version,
            "created_at": created_at, "sample_weight": 1.0, "prediction_id": prediction_id, "source": "operator",
        }
        for spec in schema.stored_fields:
            row[spec.name] = _value(arrow.field(spec.name), index) if spec.section == "feedback" else None
        row[label_field] = label
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=arrow), ids


def seal(tmp_path: Path, schema: ModelSchema, table: pa.Table, batch_id: str | None = None) -> tuple[str, bytes]:
    """Seal ``table`` as a real spool batch; returns its id and file bytes."""
    spool = Spool(tmp_path / "spool", SpoolSettings(), agent_version="test-1")
    batch = spool.write_batch(table, schema=schema, batch_id=batch_id)
    return batch.batch_id, batch.path.read_bytes()


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> IngestConfig:
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "admin_token_file": str(tmp_path / "admin.token"), "log_json": True,
                   "schemas_dir": str(EXAMPLES_DIR)},
        "store": {"db_path": str(tmp_path / "ingest.duckdb"), "threads": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return IngestConfig.model_validate(raw)


@dataclass
class Server:
    url: str
    config: IngestConfig
    session: aiohttp.ClientSession
    app: web.Application
    runner: web.AppRunner | None = None  # its server's connections, for tests that look at a socket

    @property
    def admin_token(self) -> str:
        return self.config.server.admin_token_file.read_text().strip()

    async def add_device(self, name: str) -> str:
        async with self.session.post(
            f"{self.url}/v1/devices", json={"name": name}, headers={"Authorization": f"Bearer {self.admin_token}"}
        ) as response:
            assert response.status == 201, await response.text()
            return (await response.json())["token"]

    async def put(self, batch_id: str, body: bytes, token: str, *, content_type: str = PARQUET,
                  headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        all_headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type, **(headers or {})}
        data = io.BytesIO(body) if len(body) > 1_000_000 else body  # aiohttp warns on large raw bytes
        async with self.session.put(f"{self.url}/v1/batches/{batch_id}", data=data, headers=all_headers) as response:
            return response.status, await response.json(content_type=None), response.headers

    async def sql(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        async with self.session.post(
            f"{self.url}/v1/sql", json={"sql": query, "params": params or []},
            headers={"Authorization": f"Bearer {self.admin_token}", "Accept": "application/json"},
        ) as response:
            body = await response.json()
            assert response.status == 200, body
            return body["rows"]


async def start_server(config: IngestConfig, *, store_class: type[Store] | None = None) -> tuple[web.AppRunner, str]:
    app = create_app(config, store_class=store_class)
    runner = create_runner(app, shutdown_timeout_s=5)
    return runner, await listen_on_loopback(runner)


@pytest.fixture
async def server(tmp_path):
    config = make_config(tmp_path)
    runner, url = await start_server(config)
    async with aiohttp.ClientSession() as session:
        yield Server(url, config, session, runner.app)
    await runner.cleanup()


@pytest.fixture
async def make_server(tmp_path):
    """Start servers with extra settings (and an optional store class); all stop at teardown."""
    runners = []
    session = aiohttp.ClientSession()

    async def start(*, store_class: type[Store] = Store, **sections) -> Server:
        config = make_config(tmp_path / f"s{len(runners)}", **sections)
        config.store.db_path.parent.mkdir(parents=True, exist_ok=True)
        runner, url = await start_server(config, store_class=store_class)
        runners.append(runner)
        return Server(url, config, session, runner.app, runner)

    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "ingest.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
admin_token_file = "{tmp_path / 'admin.token'}"
schemas_dir = "{EXAMPLES_DIR}"
shutdown_timeout_s = 10
{extra}
[store]
db_path = "{tmp_path / 'ingest.duckdb'}"
threads = 2
"""
    )
    return path


CLI = [sys.executable, "-m", "edgeloop.ingest.cli"]


def cli(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"edgeloop-ingest {' '.join(args)} failed: {result.stderr}")
    return result


def spawn_server(config_path: Path, log_path: Path, env: dict[str, str] | None = None, *,
                 rlimit_as_bytes: int | None = None) -> subprocess.Popen:
    """Start ``edgeloop-ingest serve`` (its address space capped at ``rlimit_as_bytes``) and wait until it answers /healthz."""
    command = [*CLI, "serve", "--config", str(config_path)]
    if rlimit_as_bytes is not None:
        command = ["prlimit", f"--as={rlimit_as_bytes}", *command]  # a test that fails cannot take the machine
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    port = IngestConfig.load(config_path).server.port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()  # reap it, or the Popen's ResourceWarning ("still running") fails the run
    raise AssertionError(f"server did not start: {log_path.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def land_and_stop(tmp_path: Path, config: Path, port: int, token: str, schema: ModelSchema, *tables: pa.Table) -> None:
    """Serve ``config``, land each table as one sealed batch from ``token``'s device (201 each), then stop the server."""
    server = spawn_server(config, tmp_path / "server.log")
    try:
        for number, table in enumerate(tables):
            assert put_batch(port, *seal(tmp_path / f"landed-{number}", schema, table), token) == 201
    finally:
        stop_server(server)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def put_batch(port: int, batch_id: str, body: bytes, token: str) -> int | None:
    """PUT a batch with urllib; the HTTP status, or None if the connection died."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/batches/{batch_id}", data=body, method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except OSError:
        return None  # the server died under us


def call_json(url: str, token: str, method: str = "GET", payload: Any = None) -> tuple[int, Any]:
    """One JSON request with a bearer token, synchronously: (status, decoded body), error statuses included."""
    request = urllib.request.Request(
        url, method=method, data=None if payload is None else json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())
