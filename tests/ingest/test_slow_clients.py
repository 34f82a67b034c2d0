"""Slow and malformed HTTP clients against a real server on loopback: bounded, answered in the one error shape."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
import urllib.request

import pytest

from edgeloop.ingest.config import IngestConfig
from edgeloop.runner import FILES_BESIDES_CONNECTIONS
from tests.ingest.conftest import free_port, make_table, seal, stop_server, write_config


async def _raw(url: str, data: bytes, *, read_s: float = 10.0) -> tuple[int, dict]:
    """Send raw bytes on a fresh connection; the status and JSON body of the first response."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_s)
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        body = await asyncio.wait_for(reader.readexactly(length), read_s)
        assert b"application/json" in head, head
        return status, json.loads(body)
    finally:
        writer.close()


def _shape(body: dict, code: str) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body


@pytest.fixture
async def guarded(make_server):
    return await make_server(server={"max_connections": 40, "idle_timeout_s": 1.0, "body_timeout_s": 1.0})


async def test_half_sent_requests_neither_block_health_nor_stay_open(guarded):
    """120 connections trickling their headers (3x the cap) never keep /healthz from answering, and each is closed."""
    host, port = guarded.url.removeprefix("http://").split(":")
    slow = []
    for index in range(120):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"PUT /v1/batches/{index} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        slow.append((reader, writer))
        if index % 20 == 19:
            async with guarded.session.get(f"{guarded.url}/healthz") as response:
                assert response.status == 200
    for reader, writer in slow:  # each is closed by the cap or the header timeout, never answered with a request
        assert await asyncio.wait_for(reader.read(), 10) in (b"",) or (await reader.read()) == b""
        writer.close()


async def test_a_body_shorter_than_its_content_length_is_408(guarded, tmp_path, vibration):
    """A request whose body stops before its Content-Length gets 408 request_timeout after body_timeout_s, not a hang."""
    token = await guarded.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    head = (f"PUT /v1/batches/{batch_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/vnd.apache.parquet\r\nContent-Length: {len(body) + 1000}\r\n\r\n").encode()
    status, error = await _raw(guarded.url, head + body)
    assert status == 408
    _shape(error, "request_timeout")


@pytest.mark.parametrize("request_bytes", [
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(500)) + b"\r\n",
    b"GARBAGE\x00\x01 / HTTP/1.1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
], ids=["request-line", "header-value", "header-count", "method", "content-length"])
async def test_parser_rejections_have_the_error_shape(server, request_bytes):
    """aiohttp's own parser rejections answer 400 in the one JSON error shape, not plain text."""
    status, error = await _raw(server.url, request_bytes)
    assert status == 400
    _shape(error, "bad_request")


async def test_bytes_past_content_length_are_a_bad_request_in_the_error_shape(server):
    """A Content-Length shorter than the body: the leftover bytes get a 400 in the JSON error shape."""
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b'POST /v1/sql HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}garbage that is not a request\r\n\r\n')
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    responses = data.split(b"HTTP/1.")[1:]
    assert responses and int(responses[-1][2:5]) == 400, data  # aiohttp may refuse the pair before answering the first
    assert all(b"application/json" in r and b'"error"' in r for r in responses), data


async def test_a_token_that_is_not_utf8_is_401(server, tmp_path, vibration):
    """A bearer token with bytes that are not UTF-8 is refused with 401, not 500."""
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=1)[0])
    head = (f"PUT /v1/batches/{batch_id} HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.apache.parquet\r\n"
            f"Content-Length: {len(body)}\r\nAuthorization: Bearer ").encode() + b"\xff\xfe\xc3(" + b"\r\n\r\n"
    status, error = await _raw(server.url, head + body)
    assert status == 401
    _shape(error, "unauthorized")


def _limited(hard: int, code: str) -> list[str]:
    """A Python command that runs ``code`` with its open-files limit (soft and hard) at ``hard``."""
    return [sys.executable, "-c", f"import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({hard}, {hard}))\n{code}"]


def test_the_server_raises_its_open_files_limit_to_the_hard_limit(tmp_path):
    """From a soft open-files limit of 300, the server's start raises it to the hard limit (as Go's runtime and nginx do), a bare GuardedRunner (the agent's) only to max_connections + 256."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard < 1281:
        pytest.skip(f"the hard open-files limit here is {hard}")
    lower = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (300, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
    runner = ("from aiohttp import web\nfrom edgeloop.runner import GuardedRunner\n"
              "GuardedRunner(web.Application(), max_connections=1024, idle_timeout_s=5.0)\n")
    server = ("from edgeloop.ingest.cli import _fit_connections\nfrom edgeloop.ingest.config import IngestConfig\n"
              "_fit_connections(IngestConfig())\n")
    found = []
    for code in (runner, server):
        done = subprocess.run([sys.executable, "-c", lower + code + "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        found.append(tuple(map(int, done.stdout.split())))
    assert found[0][0] == 1024 + FILES_BESIDES_CONNECTIONS
    assert found[1][0] == found[1][1]


def test_max_connections_past_the_open_files_limit_is_lowered_to_fit_with_a_warning(tmp_path):
    """Under a hard open-files limit of 600, the default max_connections is lowered to 600 - 256 files kept for the process, with a warning naming LimitNOFILE, and the server serves."""
    assert IngestConfig().server.max_connections > 600 - FILES_BESIDES_CONNECTIONS
    config = write_config(tmp_path, free_port(), 'log_json = false\n')
    log_path = tmp_path / "server.log"
    code = "from edgeloop.ingest.cli import main; sys.exit(main(sys.argv[1:]))"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([*_limited(600, code), "serve", "--config", str(config)], stdout=log, stderr=log)
    try:
        port = IngestConfig.load(config).server.port
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        stop_server(process)
    text = log_path.read_text()
    assert "server.max_connections" in text and "LimitNOFILE" in text, text
    assert f"connections={600 - FILES_BESIDES_CONNECTIONS}" in text, text


def test_an_open_files_limit_with_no_room_for_connections_is_a_one_line_startup_error(tmp_path):
    """Under a hard open-files limit that leaves no room for connections beside the process's own files, check-config and serve exit non-zero with one line naming LimitNOFILE."""
    config = write_config(tmp_path, free_port())
    code = "from edgeloop.ingest.cli import main; sys.exit(main(sys.argv[1:]))"
    for command in ("check-config", "serve"):
        done = subprocess.run([*_limited(FILES_BESIDES_CONNECTIONS + 4, code), command, "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "LimitNOFILE" in lines[0] and "server.max_connections" in lines[0], (command, done.stderr)
    assert not (tmp_path / "ingest.duckdb").exists()  # refused before the database is opened


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False
