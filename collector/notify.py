"""systemd's sd_notify protocol: READY, STATUS, WATCHDOG and STOPPING datagrams to NOTIFY_SOCKET.

Without NOTIFY_SOCKET (not started by systemd with Type=notify) every call is a no-op.
A failed send is logged (rate-limited) and never raised: the agent must not die because
systemd is not listening.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from edgeloop.logs import RateLimitedLogger

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; ``watchdog_interval_s`` says how often to call ``watchdog()``, or None."""

    def __init__(self, address: str | None = None, *, watchdog_interval_s: float | None = None) -> None:
        self.address = address or None
        self.watchdog_interval_s = watchdog_interval_s if self.address else None
        self._errors = RateLimitedLogger(log)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from ``env`` (the CLI passes os.environ)."""
        interval_s = None
        watchdog_pid = env.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process the watchdog is for; a child that inherited it must not pet.
        if not watchdog_pid or watchdog_pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "0"))
            except ValueError:
                usec = 0
            if usec > 0:
                interval_s = usec / 2 / 1_000_000  # sd_watchdog_enabled(3): notify at half the timeout
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval_s=interval_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> bool:
        return self._send("READY=1", status)

    def status(self, text: str) -> bool:
        return self._send(None, text)

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1", "")

    def stopping(self, status: str = "") -> bool:
        return self._send("STOPPING=1", status)

    def _send(self, state: str | None, status: str) -> bool:
        if self.address is None:
            return False
        lines = [state] if state else []
        if status:
            lines.append("STATUS=" + " ".join(status.splitlines()))
        target = self._target()
        if target is None:
            return False
        try:
            # A socket per message, as sd_notify(3) does: nothing to close, nothing held across a fork.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a full receive queue must not stall the event loop
                sock.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            self._errors.log(logging.WARNING, "send", "sd_notify failed", address=self.address, error=str(exc))
            return False
        return True

    def _target(self) -> str | bytes | None:
        address = self.address or ""
        if address.startswith("@"):
            return b"\0" + address[1:].encode()  # an abstract socket name
        if address.startswith("/"):
            return address
        self._errors.log(logging.WARNING, "address", "NOTIFY_SOCKET is not a unix socket path: ignored", address=address)
        return None
