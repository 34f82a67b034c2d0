"""Device, admin and viewer tokens: a device is known by the sha256 of its token, never the token.

The admin token manages devices and schemas and reads SQL; the viewer token only reads (the
dashboard and read-only SQL). Both live in files the server creates (mode 0600) on first start.

Tokens are 256 random bits, so a plain sha256 is a safe verifier (no salt or slow hash
needed: nothing to brute-force). The server keeps the hashes of live tokens in memory;
every change goes through the server while it runs, so a revoke takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from edgeloop.durable import write_durably
from edgeloop.errors import AuthError, BatchRejected, ConfigError, Forbidden, StoreError
from edgeloop.settings import read_text

__all__ = ["ADMIN", "VIEWER", "Authenticator", "DeviceRegistry", "admin_token", "hash_token", "new_token", "token_file"]

TOKEN_PREFIX = "eld_"
ADMIN, VIEWER = "admin", "viewer"
DEVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")  # \Z: "$" also matches before a final newline


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # Header bytes that are not UTF-8 arrive as surrogates: they hash (to no known token), never raise.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class DeviceRegistry:
    """Device rows in the database: add, revoke, and the live token hashes.

    Methods take a DuckDB connection so they run on the writer (server) or a direct one (CLI).
    """

    @staticmethod
    def add(con: duckdb.DuckDBPyConnection, name: str) -> str:
        """Create a device and return its token (the only time it is ever shown)."""
        if not DEVICE_NAME.match(name):
            raise StoreError(f"device name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
        exists = con.execute("SELECT 1 FROM devices WHERE name = ?", [name]).fetchone()
        if exists:
            raise StoreError(f"device {name!r} already exists (revoke it and pick a new name to rotate)")
        token = new_token()
        con.execute(
            "INSERT INTO devices VALUES (?, ?, ?::TIMESTAMPTZ, NULL)", [name, hash_token(token), datetime.now(UTC).isoformat()]
        )
        return token

    @staticmethod
    def revoke(con: duckdb.DuckDBPyConnection, name: str) -> None:
        row = con.execute("SELECT revoked_at IS NOT NULL FROM devices WHERE name = ?", [name]).fetchone()
        if row is None:
            raise BatchRejected(404, "unknown_device", f"no device named {name[:64]!r}")  # as the tags route answers
        if row[0]:
            raise StoreError(f"device {name!r} is already revoked")
        con.execute(
            "UPDATE devices SET revoked_at = ?::TIMESTAMPTZ WHERE name = ?", [datetime.now(UTC).isoformat(), name]
        )

    @staticmethod
    def live(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Token hash → device name, for every device not revoked."""
        rows = con.execute("SELECT token_sha256, name FROM devices WHERE revoked_at IS NULL").fetchall()
        return {digest: name for digest, name in rows}

    @staticmethod
    def revoked(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        """Token hash → device name, for every revoked device (its refusals are counted against it)."""
        rows = con.execute("SELECT token_sha256, name FROM devices WHERE revoked_at IS NOT NULL").fetchall()
        return {digest: name for digest, name in rows}


class Authenticator:
    """Answers "which device is this?" and "may this token read, or administer?" from a bearer token, in memory."""

    def __init__(
        self, live: dict[str, str], admin_token: str | None, viewer_token: str | None = None,
        revoked: dict[str, str] | None = None, *, metrics_token: str | None = None,
    ) -> None:
        self._live = dict(live)
        self._revoked = dict(revoked or {})
        self._admin_hash = hash_token(admin_token) if admin_token else None
        self._viewer_hash = hash_token(viewer_token) if viewer_token else None
        self._metrics_hash = hash_token(metrics_token) if metrics_token else None
        self._lock = threading.Lock()
        self._changed_at = 0.0

    def device(self, authorization: str | None) -> str:
        token = bearer(authorization)
        if token is None:
            raise AuthError("missing bearer token (Authorization: Bearer <device token>)")
        name = self._live.get(hash_token(token))
        if name is None:
            raise AuthError("unknown or revoked device token")
        return name

    def role(self, token: str | None) -> str | None:
        """ADMIN or VIEWER for the admin or viewer token, else None (both compared in constant time)."""
        if not token:
            return None
        digest = hash_token(token)
        is_admin = self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash)
        is_viewer = self._viewer_hash is not None and hmac.compare_digest(digest, self._viewer_hash)
        return ADMIN if is_admin else VIEWER if is_viewer else None

    def revoked_device(self, authorization: str | None) -> str | None:
        """The name of the revoked device whose token this is, or None."""
        token = bearer(authorization)
        return None if token is None else self._revoked.get(hash_token(token))

    def admin(self, authorization: str | None) -> None:
        if self._admin_hash is None:
            raise AuthError("the admin API is disabled (no admin token)")
        role = self.role(bearer(authorization))
        if role == VIEWER:
            raise Forbidden("the viewer token is read-only: this needs the admin token")
        if role != ADMIN:
            raise AuthError("unknown admin token")

    def metrics(self, authorization: str | None) -> None:
        """Let a scrape of /metrics through: anyone without a metrics token, else that token's or the admin token's bearer."""
        if self._metrics_hash is None:
            return
        token = bearer(authorization)
        if token is None:
            raise AuthError("/metrics needs Authorization: Bearer <the token in server.metrics_token_file>")
        digest = hash_token(token)
        if not (hmac.compare_digest(digest, self._metrics_hash) or self.role(token) == ADMIN):
            raise AuthError("unknown metrics token")

    def reader(self, authorization: str | None) -> str:
        """The role of an admin or viewer bearer token: both may read (the dashboard, read-only SQL)."""
        role = self.role(bearer(authorization))
        if role is None:
            raise AuthError("unknown token: reading needs the viewer or the admin token")
        return role

    def reload(self, live: dict[str, str], revoked: dict[str, str] | None = None, *, read_at: float | None = None) -> None:
        """Take the live tokens; ``read_at`` (monotonic) marks a periodic re-read, which never undoes a newer change."""
        with self._lock:
            if read_at is not None and read_at < self._changed_at:
                return  # read before a change made here committed
            if read_at is None:
                self._changed_at = time.monotonic()
            self._live = dict(live)
            if revoked is not None:
                self._revoked = dict(revoked)


def admin_token(path: Path, *, create: bool = False) -> str:
    """Read the admin token file; the server creates it (mode 0600) on first start."""
    return token_file(path, create=create, what="admin")


def token_file(path: Path, *, create: bool = False, what: str) -> str:
    """Read a token file (``what``: admin, viewer or metrics); the server creates it (mode 0600) on first start."""
    if not path.exists():
        if not create:
            raise ConfigError(f"{path}: {what} token file does not exist (start the server once to create it)")
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(handle) -> None:
            os.fchmod(handle.fileno(), 0o600)  # before the secret is in it
            handle.write((token + "\n").encode())

        write_durably(path, write)
        return token
    token = read_text(path, what=f"the {what} token file").strip()
    if not token:
        raise ConfigError(f"{path}: the {what} token file is empty")
    if not re.fullmatch(r"[!-~]{16,}", token):  # what a Bearer header can carry, and not guessable in a few tries
        raise ConfigError(f"{path}: the {what} token must be 16 or more printable ASCII characters, no spaces "
                          "(e.g. from `openssl rand -hex 32`)")
    if path.stat().st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"{path}: the {what} token file is readable or writable by everyone (chmod 600 {path})")
    return token
