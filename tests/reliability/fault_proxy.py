"""A TCP fault proxy between the agent and the ingest server, on loopback.

Each HTTP exchange passing through (a request and its response, on a kept-alive connection or
a new one) is faulted with probability ``rate``, the kinds taking turns:

    reset_mid_body     the request is cut inside its body and both sides get a TCP reset
    drop_response      the request reaches the server whole; its answer (sent after the
                       commit) is swallowed and the client gets a reset
    truncate_response  the client gets the first bytes of the answer, then a reset
    delay              the request waits before it is forwarded

Only faults that actually happened are counted (``faults``), so a test can assert on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass

__all__ = ["FAULT_KINDS", "FaultProxy"]

FAULT_KINDS = ("reset_mid_body", "drop_response", "truncate_response", "delay")
HEAD_END = b"\r\n\r\n"


@dataclass
class _Exchange:
    fault: str | None = None
    cut_at: int = 0  # bytes of the request forwarded before a reset_mid_body
    sent: int = 0
    head: bytes = b""
    responding: bool = False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the upstream port, injecting faults at ``rate`` per exchange."""

    def __init__(self, upstream_port: int, *, rate: float = 0.5, seed: int = 0,
                 kinds: tuple[str, ...] = FAULT_KINDS, delay_s: tuple[float, float] = (0.2, 1.5)) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.kinds = kinds
        self.delay_s = delay_s
        self.faults: Counter[str] = Counter()
        self.exchanges = 0
        self.port = 0
        self._turn = -1
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _draw(self) -> str | None:
        """Whether an exchange is faulted is random; which fault is round-robin, so every kind gets its turn."""
        with self._lock:
            self.exchanges += 1
            if self._random.random() >= self.rate:
                return None
            self._turn += 1
            return self.kinds[self._turn % len(self.kinds)]

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _reset(client_writer)  # the server is down: the client sees a refused/reset connection
            return
        exchange = _Exchange()
        done = asyncio.Event()

        def kill_both() -> None:
            _reset(client_writer)
            _reset(upstream_writer)
            done.set()

        async def requests() -> None:
            nonlocal exchange
            while not done.is_set():
                data = await client_reader.read(65536)
                if not data:
                    upstream_writer.write_eof() if upstream_writer.can_write_eof() else None
                    return
                if exchange.responding or (not exchange.head and not exchange.sent):
                    exchange = _Exchange(fault=self._draw())
                exchange.sent += len(data)
                if exchange.fault == "delay" and len(exchange.head) == 0:
                    self._count("delay")
                    await asyncio.sleep(self._random.uniform(*self.delay_s))
                if HEAD_END not in exchange.head:
                    exchange.head += data
                    if exchange.fault == "reset_mid_body" and HEAD_END in exchange.head:
                        head = exchange.head.split(HEAD_END, 1)[0]
                        length = _content_length(head)
                        if length and length > 1:
                            exchange.cut_at = len(head) + len(HEAD_END) + self._random.randint(1, length - 1)
                        else:
                            exchange.fault = None  # no body to cut into
                if exchange.fault == "reset_mid_body" and exchange.cut_at and exchange.sent >= exchange.cut_at:
                    keep = len(data) - (exchange.sent - exchange.cut_at)
                    upstream_writer.write(data[:keep])
                    with contextlib.suppress(ConnectionError):
                        await upstream_writer.drain()
                    self._count("reset_mid_body")
                    kill_both()
                    return
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def responses() -> None:
            while not done.is_set():
                data = await upstream_reader.read(65536)
                if not data:
                    client_writer.close()
                    done.set()
                    return
                first = not exchange.responding
                exchange.responding = True
                if first and exchange.fault == "drop_response":
                    self._count("drop_response")
                    kill_both()
                    return
                if first and exchange.fault == "truncate_response" and len(data) > 1:
                    client_writer.write(data[: self._random.randint(1, len(data) - 1)])
                    with contextlib.suppress(ConnectionError):
                        await client_writer.drain()
                    self._count("truncate_response")
                    kill_both()
                    return
                client_writer.write(data)
                await client_writer.drain()

        tasks = [asyncio.ensure_future(requests()), asyncio.ensure_future(responses())]
        waiter = asyncio.ensure_future(done.wait())
        try:
            while True:
                await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
                failed = any(t.done() and not t.cancelled() and t.exception() for t in tasks)
                if waiter.done() or failed or all(t.done() for t in tasks):
                    break
        finally:
            for task in [*tasks, waiter]:
                task.cancel()
            for writer in (client_writer, upstream_writer):
                with contextlib.suppress(Exception):
                    writer.transport.abort() if done.is_set() else writer.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None
