"""Dashboard sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie, the rest on the server.

A login with the viewer (or admin) token makes a session; the browser only ever holds its id.
The server keeps the sha256 of each id with its role and expiry in memory, so a restart logs
everyone out and a leaked log or memory dump holds no usable id. Expiry is checked on the
server at every request; logout forgets the session at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["COOKIE", "Session", "Sessions"]

COOKIE = "edgeloop_session"
MAX_ID_CHARS = 128  # a cookie value longer than any id we mint is not looked up


@dataclass(frozen=True, slots=True)
class Session:
    role: str
    expires_at: float  # time.monotonic() deadline


class Sessions:
    """Live sessions by the sha256 of their id, oldest first; bounded by ``max_sessions``."""

    def __init__(self, *, ttl_s: float, max_sessions: int, clock=time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()

    def create(self, role: str) -> str:
        """A new session's id (256 random bits); past ``max_sessions`` the oldest session ends."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            self._sessions[self._key(session_id)] = Session(role, self._clock() + self.ttl_s)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, expired or ended)."""
        if not session_id or len(session_id) > MAX_ID_CHARS:
            return None
        key = self._key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires_at <= self._clock():
                del self._sessions[key]
                return None
            return session

    def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= MAX_ID_CHARS:
            with self._lock:
                self._sessions.pop(self._key(session_id), None)

    def __len__(self) -> int:
        with self._lock:
            self._prune()
            return len(self._sessions)

    def _prune(self) -> None:
        # Sessions are ordered by creation and share one ttl, so the expired ones are at the front.
        now = self._clock()
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.expires_at > now:
                return
            del self._sessions[key]
