"""GuardedRunner: an aiohttp AppRunner that holds up against slow and hostile clients.

Both HTTP servers use it, ingest's TCP listener and the agent's unix socket:

- **connection cap**: past ``max_connections`` the oldest connection that is not inside a
  request (idle, or still trickling its request line and headers) is closed. A slowloris
  holds many such connections, a real client holds one briefly, so a new client (a
  ``/healthz`` probe, a device) always gets in and the process never runs out of files;
- **header timeout**: a connection must complete a request's line and headers within
  ``idle_timeout_s`` of opening (or of its previous response), else it is closed;
- **body timeout**: ``read_body`` answers 408 when the sender goes quiet for
  ``body_timeout_s`` mid-body (a Content-Length longer than the body sent);
- **open files**: the soft ``RLIMIT_NOFILE`` is raised to hold ``max_connections`` and the
  process's own files (the ingest server raises it to the hard limit at start, as Go's runtime
  and nginx's ``worker_rlimit_nofile`` do) and ``max_connections`` is lowered, with a warning, to
  what the limit holds (``connections_that_fit``), so the process never runs out of
  descriptors mid-burst;
- **one error shape**: aiohttp's own parser rejections (request line or headers too long,
  too many headers, a malformed request, bytes past Content-Length) answer
  ``{"error": {"code", "message", "details"}}`` instead of plain text, and so does the 417
  aiohttp gives an ``Expect`` other than ``100-continue`` before any middleware runs (on a
  route without an expect handler of its own, or a path or method that does not exist).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from edgeloop.errors import ConfigError

__all__ = ["GuardedRunner", "connections_that_fit", "read_body"]

log = logging.getLogger(__name__)

FILES_BESIDES_CONNECTIONS = 256  # the database and its WAL, logs, spool files, shared libraries
MIN_CONNECTIONS = 16  # an open-files limit leaving fewer is a startup error, not a server that refuses most clients
PARSER_CODES = {400: "bad_request", 408: "request_timeout", 413: "too_large", 417: "expectation_failed"}
MESSAGE_CHARS = 300


async def read_body(request: web.BaseRequest, *, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, at most ``max_bytes`` (413 past it); a sender quiet for ``timeout_s``, or gone, gets 408."""
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await request.content.readany()
        except TimeoutError:
            raise web.HTTPRequestTimeout(
                text=f"no body bytes for {timeout_s:g}s after {size} bytes (is Content-Length longer than the body?)"
            ) from None
        except ConnectionError:
            # The sender hung up mid-body: its fault, never a 500; the 408 goes unread.
            raise web.HTTPRequestTimeout(text=f"the connection closed after {size} body bytes") from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        chunks.append(chunk)


class _Handler(RequestHandler):
    """aiohttp's per-connection protocol, answering its own rejections in the one error shape."""

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already on its way; cannot send an error after it")
        if status >= 500:
            log.error("request failed inside the HTTP server", exc_info=exc)
            text = "internal error"
        else:
            # Clients cause these at will: never a traceback, never above info.
            text = (str(exc) if exc is not None else "") or message or "bad request"
            log.info("request refused by the HTTP parser", extra={"status": status, "error": text[:MESSAGE_CHARS]})
        return _error_response(status, text)


def _error_response(status: int, text: str) -> web.Response:
    """The one error shape for an answer aiohttp gives outside the app's middlewares; the connection is closed."""
    code = PARSER_CODES.get(status, "internal" if status >= 500 else "bad_request")
    body = orjson.dumps({"error": {"code": code, "message": text[:MESSAGE_CHARS], "details": None}})
    response = web.Response(status=status, body=body, content_type="application/json")
    response.force_close()
    return response


def _in_error_shape(handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """The app's handler, with the 417 of aiohttp's default expect handler (run before any middleware) in the one error shape."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPExpectationFailed as exc:
            return _error_response(exc.status, exc.text or "expectation failed")

    return handle


class _Server(web.Server):
    """aiohttp's protocol factory with a connection cap that evicts idle connections first."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_connections = max_connections
        self.evicted = 0

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: Any) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) <= self._max_connections:
            return
        # aiohttp keeps no public "inside a request" flag; _current_request is set while one is handled.
        waiting = [h for h in self._connections if h is not handler and getattr(h, "_current_request", None) is None]
        victim = waiting[0] if waiting else handler  # oldest first: dicts keep insertion order
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 1000 == 0:
            log.warning("connection cap reached: closing the oldest idle connection",
                        extra={"max_connections": self._max_connections, "evicted": self.evicted})
        self._loop.call_soon(victim.force_close)


def connections_that_fit(max_connections: int, *, setting: str, up_to_hard: bool = False) -> int:
    """Raise the soft open-files limit (to the hard one if ``up_to_hard``); ``max_connections``, or as many as fit beside the process's own files.

    A cap the limit cannot hold fails where it hurts most, mid-burst (an accept that fails with
    EMFILE, DuckDB unable to open a file): lowering it at start, with a warning, keeps the
    connection cap's eviction working instead. ConfigError when fewer than MIN_CONNECTIONS fit.
    Without ``up_to_hard`` the limit is raised only as far as needed: the agent's children
    (``sync.only_if`` commands) inherit it, and some programs loop over every possible descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + FILES_BESIDES_CONNECTIONS
    if hard == resource.RLIM_INFINITY:
        target = max(soft, needed) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard if up_to_hard else min(hard, needed)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a hard limit above what the kernel allows (nr_open): keep the soft one
            pass
    if soft == resource.RLIM_INFINITY or soft - FILES_BESIDES_CONNECTIONS >= max_connections:
        return max_connections
    fits = soft - FILES_BESIDES_CONNECTIONS
    if fits < MIN_CONNECTIONS:
        raise ConfigError(
            f"{setting}: the open-files limit is {soft}, which leaves {max(fits, 0)} connections beside the "
            f"{FILES_BESIDES_CONNECTIONS} files the process keeps for itself (at least {MIN_CONNECTIONS} needed); "
            f"raise LimitNOFILE (ulimit -n) to {needed}"
        )
    log.warning("max_connections lowered to what the open-files limit holds; raise LimitNOFILE (ulimit -n) to serve them all",
                extra={"setting": setting, "connections": fits, "max_connections": max_connections, "open_files_limit": soft,
                       "needed": needed})
    return fits


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` with a connection cap, a header timeout and JSON parser errors (see the module doc)."""

    def __init__(self, app: web.Application, *, max_connections: int, idle_timeout_s: float,
                 setting: str = "max_connections", **kwargs: Any) -> None:
        # aiohttp's keep-alive timer is armed when a connection opens and again after each
        # response, and closes a connection still waiting for a complete request: a header timeout.
        super().__init__(app, keepalive_timeout=idle_timeout_s, **kwargs)
        self._max_connections = connections_that_fit(max_connections, setting=setting)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _Server(
            _in_error_shape(server.request_handler),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=asyncio.get_running_loop(),
            max_connections=self._max_connections,
            **server._kwargs,
        )
