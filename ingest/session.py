"""Dashboard sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie, the rest on the server.

A login with the viewer (or admin) token makes a session; the browser only ever holds its id.
The server keeps the sha256 of each id with its role and expiry in memory, so a restart logs
everyone out and a leaked log or memory dump holds no usable id. Expiry is checked on the
server at every request; logout forgets the session at once.

Sessions are bounded per role and, within a role, per client address (``client_key``): a login
past its address's share ends that address's own oldest session, and one past the role's bound
the role's oldest. So one browser logging in over and over ends only its own sessions, and
viewer logins never end an admin's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions", "client_key"]

COOKIE = "edgeloop_session"
MAX_ID_CHARS = 128  # a cookie value longer than any id we mint is not looked up


def client_key(address: str | None) -> str:
    """Who a request comes from, for per-client bounds: its IPv4 address, or its IPv6 /64 (one host holds a whole /64)."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Session:
    role: str
    expires_at: float  # time.monotonic() deadline
    client: str = ""  # client_key of the address that logged in


class Sessions:
    """Live sessions by the sha256 of their id, oldest first, in one pool per role.

    A role holds at most ``max_sessions``, and of those one client at most ``max_per_client``.
    """

    def __init__(self, *, ttl_s: float, max_sessions: int, max_per_client: int | None = None,
                 clock=time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_per_client = min(max_per_client or max_sessions, max_sessions)
        self._clock = clock
        self._pools: dict[str, OrderedDict[str, Session]] = {}  # one per role: there are two (viewer, admin)
        self._lock = threading.Lock()

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()

    def create(self, role: str, client: str = "") -> str:
        """A new session's id (256 random bits); past the bounds the client's oldest (then the role's oldest) ends."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            pool = self._pools.setdefault(role, OrderedDict())
            own = [key for key, session in pool.items() if session.client == client]
            for key in own[: max(0, len(own) - self.max_per_client + 1)]:
                del pool[key]
            while len(pool) >= self.max_sessions:
                pool.popitem(last=False)
            pool[self._key(session_id)] = Session(role, self._clock() + self.ttl_s, client)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, expired or ended)."""
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return None
        key = self._key(session_id)
        with self._lock:
            for pool in self._pools.values():
                session = pool.get(key)
                if session is None:
                    continue
                if session.expires_at <= self._clock():
                    del pool[key]
                    return None
                return session
            return None

    def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= MAX_ID_CHARS:
            key = self._key(session_id)
            with self._lock:
                for pool in self._pools.values():
                    pool.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return sum(len(pool) for pool in self._pools.values())

    def _prune(self) -> None:
        # Sessions are ordered by creation and share one ttl, so the expired ones are at the front of each pool.
        now = self._clock()
        for pool in self._pools.values():
            while pool:
                key, session = next(iter(pool.items()))
                if session.expires_at > now:
                    break
                del pool[key]
