"""Test helpers for sync: real spool batches and a fault-injecting ingest peer on 127.0.0.1.

Test modules import the ``peer`` and ``spool`` fixtures from here.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from edgeloop.collector.config import SpoolSettings, SyncSettings
from edgeloop.collector.spool import SealedBatch, Spool
from edgeloop.collector.sync import Syncer
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry

SCHEMA = SchemaRegistry.from_dir(EXAMPLES_DIR)["image_classifier"]
TOKEN = "device-token-for-tests"


def make_spool(state_dir: Path) -> Spool:
    return Spool(state_dir, SpoolSettings(), agent_version="test")


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return make_spool(tmp_path / "state")


@pytest.fixture
async def peer():
    server = await IngestPeer().start()
    yield server
    await server.stop()


def make_batch(spool: Spool, rows: int = 10, *, thumbnail_bytes: int = 16) -> SealedBatch:
    """Seal a real image_classifier batch; random thumbnails make its size predictable."""
    now = datetime.now(UTC)
    records = [
        {
            "record_id": uuid.uuid4().bytes,
            "kind": "prediction",
            "model": SCHEMA.name,
            "model_version": "1.0",
            "created_at": now,
            "sample_weight": 1.0,
            "thumbnail": os.urandom(thumbnail_bytes),
            "predicted_class": "cola",
            "confidence": 0.9,
        }
        for _ in range(rows)
    ]
    return spool.write_batch(pa.Table.from_pylist(records, schema=SCHEMA.arrow_schema), schema=SCHEMA)


def syncer(spool: Spool, tmp_path: Path, url: str | None, **overrides: Any) -> Syncer:
    """A Syncer for ``spool`` against ``url`` with the test settings (``sync_settings``)."""
    return Syncer(sync_settings(url, tmp_path, **overrides), spool, agent_version="test")


def sync_settings(url: str | None, tmp_path: Path, **overrides: Any) -> SyncSettings:
    token_file = tmp_path / "device.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    defaults: dict[str, Any] = {
        "url": url,
        "token_file": token_file,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.2,
        "max_attempts": 4,
        "request_timeout_s": 10.0,
    }
    return SyncSettings(**(defaults | overrides))


EXPECTING = web.RequestKey("expecting", bool)


async def _defer_continue(request: web.Request) -> None:
    """As ingest does: 100 Continue only once the upload is to be read (``IngestPeer._put``), never for a refusal."""
    request[EXPECTING] = True


Action = None | int | str | tuple[int, dict[str, str]] | Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class IngestPeer:
    """Speaks the ingest upload contract; ``script`` holds the answers to give before landing normally.

    An action is None (land normally), a status (sent with the one error shape), ``(status, headers)``, ``"drop"``
    (read part of the body, then cut the connection) or a handler of its own.
    """

    script: deque[Action] = field(default_factory=deque)
    landed: dict[str, str] = field(default_factory=dict)  # batch id → body sha256
    lands: Counter[str] = field(default_factory=Counter)  # batch id → times answered 201
    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)  # the status documents devices sent
    url: str = ""
    _runner: web.AppRunner | None = None
    _port: int = 0

    async def start(self, port: int = 0) -> IngestPeer:
        app = web.Application(client_max_size=1024**3)
        app.router.add_put("/v1/batches/{batch_id}", self._put, expect_handler=_defer_continue)
        app.router.add_put("/v1/status/{status_id}", self._status)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self._port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _status(self, request: web.Request) -> web.Response:
        self.statuses.append(await request.json())
        return web.json_response({"status_id": request.match_info["status_id"]}, status=201)

    async def _put(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.match_info["batch_id"]
        self.requests.append(
            {
                "batch_id": batch_id,
                "at": asyncio.get_running_loop().time(),
                "authorization": request.headers.get("Authorization"),
                "content_type": request.content_type,
                "content_length": request.content_length,
                "sent_at": request.headers.get("X-Edgeloop-Sent-At"),
                "expect": request.headers.get("Expect"),
            }
        )
        action = self.script.popleft() if self.script else None
        if request.get(EXPECTING):
            if isinstance(action, int | tuple):  # as ingest: refused before the body is asked for, then the connection closes
                status, headers = action if isinstance(action, tuple) else (action, {})
                error = {"error": {"code": f"status_{status}", "message": "scripted", "details": {"batch_id": batch_id}}}
                response = web.json_response(error, status=status, headers=headers)
                response.force_close()
                return response
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        if action == "drop":
            await request.content.read(100)
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if callable(action):
            return await action(request)
        body = await request.read()
        self.requests[-1]["body_bytes"] = len(body)
        if action is not None:
            status, headers = action if isinstance(action, tuple) else (action, {})
            error = {"error": {"code": f"status_{status}", "message": "scripted", "details": {"batch_id": batch_id}}}
            return web.json_response(error, status=status, headers=headers)
        digest = hashlib.sha256(body).hexdigest()
        if batch_id in self.landed:
            return web.json_response(receipt(batch_id, body, "already_landed"), status=200)
        self.landed[batch_id] = digest
        self.lands[batch_id] += 1
        return web.json_response(receipt(batch_id, body, "landed"), status=201)


def receipt(batch_id: str, body: bytes, status: str = "landed") -> dict[str, Any]:
    """The receipt ingest answers for ``body`` landed as ``batch_id`` (the fields a device checks, and a few more)."""
    return {
        "batch_id": batch_id,
        "sha256": hashlib.sha256(body).hexdigest(),
        "rows": pq.ParquetFile(io.BytesIO(body)).metadata.num_rows,
        "bytes": len(body),
        "device": "test-device",
        "clock_offset_s": 0.0,
        "status": status,
    }
