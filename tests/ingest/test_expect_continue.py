"""Expect: 100-continue on uploads: the body is asked for only once the upload holds a landing-queue slot."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import struct
import termios
import threading
import time
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web

from edgeloop.ingest.app import STATE, STORE
from edgeloop.ingest.store import Store
from edgeloop.runner import GuardedRunner
from tests.ingest.conftest import make_table, seal
from tests.sockets import listen_on_loopback


class HeldStore(Store):
    """Fault injection: group commits wait until the test releases them."""

    release = threading.Event()

    def land_group(self, group):
        self.release.wait(60)
        super().land_group(group)


async def _queue_held(make_server, tmp_path, vibration, *, admit_wait_s: float, uploads: int = 2, predictions: int = 2):
    """A server whose one queue slot is held by a first upload (``first``, landing once HeldStore.release is set)."""
    HeldStore.release.clear()
    server = await make_server(store_class=HeldStore, store={"queue_depth": 1, "group_commit_max_batches": 1},
                               server={"admit_wait_s": admit_wait_s})
    token = await server.add_device("pump-1")
    bodies = [seal(tmp_path / str(i), vibration, make_table(vibration, predictions=predictions)[0]) for i in range(uploads)]
    first = asyncio.create_task(server.put(*bodies[0], token))
    while not server.app[STORE].queued:
        await asyncio.sleep(0.01)
    return server, token, bodies, first


async def _send_head(url: str, batch_id: str, token: str, size: int, *, expect: str | None = "100-continue"):
    """Open a connection and send a PUT's request line and headers only: (reader, writer)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"PUT /v1/batches/{batch_id} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/vnd.apache.parquet\r\nContent-Length: {size}\r\n"
        + (f"Expect: {expect}\r\n" if expect else "") + "\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case names) and body (by Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 30)
    return int(status_line.split()[1]), headers, body


def _code(body: bytes) -> str:
    return orjson.loads(body)["error"]["code"]


async def test_an_upload_that_expects_100_continue_is_asked_for_its_body_and_lands(server, tmp_path, vibration):
    """An admitted upload that sent Expect: 100-continue gets 100 Continue, sends its body and gets 201 on the same connection."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    reader, writer = await _send_head(server.url, batch_id, token, len(body))
    try:
        assert (await _read_answer(reader))[0] == 100
        writer.write(body)
        status, _, answer = await _read_answer(reader)
        assert status == 201 and orjson.loads(answer)["status"] == "landed"
    finally:
        writer.close()
    assert await server.sql("SELECT count(*) AS n FROM batches") == [{"n": 1}]


async def test_a_refused_upload_is_answered_before_its_body_with_connection_close(make_server, tmp_path, vibration):
    """A 401 and a 429 (queue and line full) answer an upload that expects 100-continue without its body being sent, with Connection: close."""
    server, token, bodies, first = await _queue_held(make_server, tmp_path, vibration, admit_wait_s=0)
    try:
        for sent_token, expected in (("not-a-token", (401, "unauthorized")), (token, (429, "busy"))):
            reader, writer = await _send_head(server.url, bodies[1][0], sent_token, len(bodies[1][1]))
            try:
                status, headers, answer = await _read_answer(reader)
                assert (status, _code(answer)) == expected
                assert headers["connection"] == "close"  # the unsent body cannot be mistaken for the next request
            finally:
                writer.close()
    finally:
        HeldStore.release.set()
    assert (await first)[0] == 201
    assert server.app[STATE].admitting == 0 and not server.app[STATE].waiters


async def test_an_upload_in_line_is_asked_for_its_body_only_when_it_gets_a_slot(make_server, tmp_path, vibration):
    """While the queue is full, an upload in line that expects 100-continue hears nothing; when a slot frees it gets 100 Continue and lands."""
    server, token, bodies, first = await _queue_held(make_server, tmp_path, vibration, admit_wait_s=60.0)
    reader = writer = None
    try:
        reader, writer = await _send_head(server.url, bodies[1][0], token, len(bodies[1][1]))
        while not server.app[STATE].waiters:
            await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):  # in line: no 100 Continue (nor anything else) yet
            await asyncio.wait_for(reader.read(1), 0.3)
    finally:
        HeldStore.release.set()
    try:
        assert (await first)[0] == 201
        assert (await _read_answer(reader))[0] == 100
        writer.write(bodies[1][1])
        assert (await _read_answer(reader))[0] == 201
    finally:
        writer.close()


async def test_an_expectation_other_than_100_continue_is_417(server, tmp_path, vibration):
    """An upload with an Expect value other than 100-continue gets 417 expectation_failed in the one error shape, its body never asked for."""
    token = await server.add_device("pump-1")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=2)[0])
    reader, writer = await _send_head(server.url, batch_id, token, len(body), expect="something-else")
    try:
        status, headers, answer = await _read_answer(reader)
        assert (status, _code(answer)) == (417, "expectation_failed") and headers["connection"] == "close"
    finally:
        writer.close()


async def test_aiohttp_clients_expect100_is_refused_without_its_body_and_the_next_upload_lands(make_server, tmp_path, vibration):
    """aiohttp's client with expect100=True gets the 429 of a full queue, then lands the same batch through the same session."""
    server, token, bodies, first = await _queue_held(make_server, tmp_path, vibration, admit_wait_s=0)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}
    try:
        started = time.monotonic()
        async with server.session.put(f"{server.url}/v1/batches/{bodies[1][0]}", data=bodies[1][1], headers=headers,
                                      expect100=True) as response:
            assert response.status == 429 and _code(await response.read()) == "busy"
        assert time.monotonic() - started < 10  # answered at once, not after a body timeout
    finally:
        HeldStore.release.set()
    assert (await first)[0] == 201
    async with server.session.put(f"{server.url}/v1/batches/{bodies[1][0]}", data=bodies[1][1], headers=headers,
                                  expect100=True) as response:
        assert response.status == 201, await response.text()


async def _request(url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a connection and send a request's line and headers (Content-Length from ``body``, which is not sent)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    return reader, writer


async def test_every_route_answers_an_unknown_expectation_with_a_json_417(server):
    """Every route the app serves (GETs, POSTs, the dashboard's pages) answers Expect: something-else with 417 expectation_failed in the one error shape."""
    routes = [route for route in server.app.router.routes() if route.method != "HEAD"]
    assert {"GET", "POST", "PUT", "DELETE"} <= {route.method for route in routes}
    for route in routes:
        path = route.resource.canonical.replace("{", "").replace("}", "")  # any value for a placeholder
        reader, writer = await _request(server.url, route.method, path, {"Expect": "something-else"})
        try:
            status, headers, answer = await _read_answer(reader)
        finally:
            writer.close()
        assert (route.method, path, status, headers["content-type"].split(";")[0]) == (route.method, path, 417, "application/json")
        assert _code(answer) == "expectation_failed" and "something-else" in orjson.loads(answer)["error"]["message"]


async def test_a_small_request_that_expects_100_continue_is_asked_for_its_body_at_once(server):
    """A query (POST /v1/sql) and a GET that send Expect: 100-continue get 100 Continue at once and then their answer."""
    headers = {"Authorization": f"Bearer {server.admin_token}", "Accept": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)  # aiohttp's client waits for the 100 without a bound of its own
    async with server.session.post(f"{server.url}/v1/sql", json={"sql": "SELECT 42 AS answer", "params": []},
                                   headers=headers, expect100=True, timeout=timeout) as response:
        assert response.status == 200 and (await response.json())["rows"] == [{"answer": 42}], await response.text()
    async with server.session.get(f"{server.url}/healthz", headers={"Expect": "100-continue"}, timeout=timeout) as response:
        assert response.status == 200, await response.text()


async def test_a_path_or_method_that_does_not_exist_answers_an_unknown_expectation_with_a_json_417(server):
    """A GET of no such path and a DELETE of /healthz (another method) with Expect: something-else get 417 expectation_failed in the one error shape."""
    for method, path in (("GET", "/no/such/path"), ("DELETE", "/healthz")):
        reader, writer = await _request(server.url, method, path, {"Expect": "something-else"})
        try:
            status, headers, answer = await _read_answer(reader)
        finally:
            writer.close()
        assert (method, status, headers["content-type"].split(";")[0], _code(answer)) == (method, 417, "application/json", "expectation_failed")
        assert headers["connection"] == "close"


async def test_the_runner_both_servers_use_answers_an_unknown_expectation_with_a_json_417():
    """An app served by GuardedRunner (the agent's socket too) answers Expect: something-else on a plain route with 417 in the one error shape, and 100-continue with its answer."""

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"read": len(await request.read())})

    app = web.Application()
    app.router.add_post("/hello", hello)
    runner = GuardedRunner(app, max_connections=16, idle_timeout_s=5.0)
    url = await listen_on_loopback(runner)
    try:
        reader, writer = await _request(url, "POST", "/hello", {"Expect": "something-else"}, b"{}")
        try:
            status, headers, answer = await _read_answer(reader)
        finally:
            writer.close()
        assert (status, headers["content-type"].split(";")[0], _code(answer)) == (417, "application/json", "expectation_failed")
        async with aiohttp.ClientSession() as session, session.post(
            f"{url}/hello", data=b"{}", expect100=True, timeout=aiohttp.ClientTimeout(total=30)
        ) as response:
            assert (response.status, await response.json()) == (200, {"read": 2})
    finally:
        await runner.cleanup()


def _unread_bytes(connection) -> int:
    """Bytes the kernel holds for a server-side connection that the server has not read (FIONREAD)."""
    sock = connection.transport.get_extra_info("socket")
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


async def test_an_upload_in_line_is_not_read_until_it_gets_a_slot_then_lands_byte_exact(make_server, tmp_path, vibration):
    """Uploads in line without Expect are not read (their bodies stay in the kernel's socket buffers); once admitted they land with the sha256 of the bytes sent."""
    server, token, bodies, first = await _queue_held(make_server, tmp_path, vibration, admit_wait_s=60.0, uploads=4, predictions=200)
    connections = []
    try:
        for batch_id, body in bodies[1:]:
            connections.append(await _send_head(server.url, batch_id, token, len(body), expect=None))
        while len(server.app[STATE].waiters) < 3:
            await asyncio.sleep(0.01)
        for (_, writer), (_, body) in zip(connections, bodies[1:], strict=True):
            writer.write(body)
            await writer.drain()
        parked = [c for c in server.runner.server.connections if c.transport is not None and not c.transport.is_reading()]
        assert len(parked) == 3
        # Each whole body reaches the server's kernel buffer and stays there: a server that read it would empty it.
        sizes = sorted(len(body) for _, body in bodies[1:])
        deadline = time.monotonic() + 30
        while sorted(_unread_bytes(c) for c in parked) != sizes:
            assert time.monotonic() < deadline, [_unread_bytes(c) for c in parked]
            await asyncio.sleep(0.01)
    finally:
        HeldStore.release.set()
    try:
        assert (await first)[0] == 201
        for reader, _ in connections:
            status, _, answer = await _read_answer(reader)
            assert status == 201 and orjson.loads(answer)["status"] == "landed"
    finally:
        for _, writer in connections:
            writer.close()
    landed = await server.sql("SELECT batch_id, sha256 FROM batches")
    assert {row["batch_id"]: row["sha256"] for row in landed} == {
        batch_id: hashlib.sha256(body).hexdigest() for batch_id, body in bodies}


async def test_an_upload_in_line_whose_sender_hangs_up_gives_its_slot_back(make_server, tmp_path, vibration, caplog):
    """A sender that closes its connection while its upload waits in line unread costs no slot and no error (it is a 408 nobody reads): the next upload lands, nothing is left held."""
    caplog.set_level(logging.INFO, logger="edgeloop.ingest.app")
    server, token, bodies, first = await _queue_held(make_server, tmp_path, vibration, admit_wait_s=60.0, uploads=3)
    state, store = server.app[STATE], server.app[STORE]
    try:
        _, writer = await _send_head(server.url, bodies[1][0], token, len(bodies[1][1]), expect=None)
        writer.write(bodies[1][1][:100])  # part of its body, then it goes away
        await writer.drain()
        while not state.waiters:
            await asyncio.sleep(0.01)
        writer.close()
        await writer.wait_closed()
    finally:
        HeldStore.release.set()
    assert (await first)[0] == 201
    assert (await server.put(*bodies[2], token))[0] == 201
    while state.admitting or state.waiters or store.queued:
        await asyncio.sleep(0.01)
    assert await server.sql("SELECT batch_id FROM batches ORDER BY batch_id") == sorted(
        ({"batch_id": bodies[i][0]} for i in (0, 2)), key=lambda row: row["batch_id"])
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # the sender's doing, not ours
    assert any(getattr(r, "status", None) == 408 for r in caplog.records if r.getMessage() == "upload refused")
