"""The SDK against an agent socket that answers wrongly: a page, the wrong JSON, a body without end."""

from __future__ import annotations

import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeloop.collector import Client

Answer = Callable[[socket.socket], None]


def _serve(path: Path, answer: Answer, stop: threading.Event) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(0.1)
    with listener:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_answer_each, args=(conn, answer, stop), daemon=True).start()


def _answer_each(conn: socket.socket, answer: Answer, stop: threading.Event) -> None:
    """Read each request (head and Content-Length body), then send ``answer``."""
    conn.settimeout(5)
    buffered = b""
    with conn:
        while not stop.is_set():
            try:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                while len(buffered) < length:
                    buffered += conn.recv(65536)
                buffered = buffered[length:]
                answer(conn)
            except OSError:
                return


@pytest.fixture
def broken_agent(tmp_path: Path) -> Iterator[Callable[[Answer], Path]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(answer: Answer) -> Path:
        path = tmp_path / "agent.sock"
        thread = threading.Thread(target=_serve, args=(path, answer, stop), daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def _respond(status: str, body: bytes, content_type: bytes = b"application/json") -> Answer:
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                     % (status.encode(), content_type, len(body), body))

    return answer


def _endless(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"100000\r\n" + b"[" * 0x100000 + b"\r\n"
    for _ in range(256):  # 256 MiB, unless the SDK hangs up first
        conn.sendall(chunk)


@pytest.mark.parametrize(
    "answer",
    [
        _respond("200 OK", b"<html>not the agent</html>", b"text/html"),
        _respond("200 OK", b'{"accepted": "all of them"}'),
        _respond("200 OK", b"[]"),
        _respond("422 Unprocessable Entity", b'{"error": "nope"}'),
        _endless,
    ],
    ids=["html", "wrong-shape", "json-list", "422-wrong-shape", "endless"],
)
def test_an_answer_the_sdk_cannot_read_counts_the_batch_as_bad_answer(broken_agent, answer):
    """An answer that is not the agent's (HTML, wrong JSON, a body past the bound) drops its records as bad_answer, in bounded memory."""
    client = Client(broken_agent(answer), batch_size=50, flush_interval_s=0.01, timeout_s=5)
    tracemalloc.start()
    try:
        for i in range(200):
            client.log_prediction("vibration", "1", {"i": i}, {"ok": True})
        assert client.flush(timeout_s=30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        client.close(timeout_s=2)
    stats = client.stats()
    assert stats["dropped"] == {"bad_answer": 200} and stats["sent"] == 0 and stats["buffered"] == 0, stats
    assert peak < 64 * 2**20
