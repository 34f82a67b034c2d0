"""Raw-socket helpers for tests that play slow or broken clients."""

from __future__ import annotations

import socket


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed this connection: an orderly FIN or a reset both count (a reset is what a
    peer sends when it closes with our unread bytes in its buffer)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except (BlockingIOError, TimeoutError):
        return False
