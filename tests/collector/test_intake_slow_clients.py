"""The agent's socket against slow clients: a connection cap and header/body timeouts keep it serving apps."""

from __future__ import annotations

import socket
import time

import orjson

from tests.sockets import closed_by_peer


def _connect(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(path))
    return sock


def test_half_sent_requests_do_not_crowd_out_the_app(agent_factory):
    """60 connections trickling headers (3x the cap) are closed, and the app's records are still accepted meanwhile."""
    agent = agent_factory(intake={"max_connections": 20, "idle_timeout_s": 1.0, "body_timeout_s": 1.0}).start()
    slow = []
    try:
        for _ in range(60):
            sock = _connect(agent.socket)
            slow.append(sock)
            sock.sendall(b"POST /v1/records HTTP/1.1\r\nHost: agent\r\nX-Slow: ")
        status, body = agent.post_records([{
            "kind": "prediction", "model": "vibration", "model_version": "1", "inputs": {"rpm": 1},
            "outputs": {"predicted_class": "ok", "confidence": 0.5},
        }])
        assert status == 200 and body["accepted"] == 1, body
        deadline = time.monotonic() + 15
        for sock in slow:  # every one is closed by the cap or the header timeout
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert closed_by_peer(sock)
    finally:
        for sock in slow:
            sock.close()


def test_a_body_shorter_than_its_content_length_is_408(agent_factory):
    """A request whose body stops short of its Content-Length gets 408 in the error shape instead of hanging."""
    agent = agent_factory(intake={"body_timeout_s": 1.0}).start()
    sock = _connect(agent.socket)
    sock.sendall(b"POST /v1/records HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 5000\r\n\r\n[{\"kind\": ")
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
