"""Socket helpers for tests: a test server listening on a free loopback port, and raw sockets that play slow or
broken clients."""

from __future__ import annotations

import socket
import ssl

from aiohttp import web


async def listen_on_loopback(runner: web.BaseRunner, *, ssl_context: ssl.SSLContext | None = None) -> str:
    """Set ``runner`` up on a free 127.0.0.1 port; its base URL. The caller cleans the runner up."""
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return f"{'https' if ssl_context else 'http'}://127.0.0.1:{runner.addresses[0][1]}"


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed this connection: an orderly FIN or a reset both count (a reset is what a
    peer sends when it closes with our unread bytes in its buffer)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except (BlockingIOError, TimeoutError):
        return False
