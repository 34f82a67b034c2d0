"""The Python SDK: log predictions and feedback to the local agent without slowing the app.

    client = Client("/var/lib/edgeloop/agent.sock")
    record_id = client.log_prediction("vibration", "2.1.0", inputs, outputs)
    client.log_feedback(record_id, "vibration", "2.1.0", {"true_class": "ok"})
    client.close()

A log call builds a dict, mints a UUIDv7, stamps ``created_at`` with the app's clock and
appends to an in-memory buffer (about a microsecond), so buffering, retries and agent
restarts never move a record in time; a background thread sends the buffer in batches as NDJSON (the agent parses one slice of lines at a time) over HTTP on
the agent's unix socket. When the agent is down the thread retries with capped backoff while
the buffer holds up to ``max_buffer`` records; past that new records are dropped and counted.
Nothing here raises into the app after construction.

Fork-safe: in a child of ``os.fork()`` (gunicorn ``--preload``, multiprocessing) every
client starts over with its own sender thread, connections and an empty buffer; what the
parent had buffered stays the parent's to send.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import logging
import os
import socket
import threading
import time
import weakref
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uuid_utils
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_when_event_set, wait_exponential_jitter

from edgeloop.errors import AgentUnavailableError
from edgeloop.logs import RateLimitedLogger

__all__ = ["Client", "call_agent"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({500, 502, 503, 504})
RECORDS_PATH = "/v1/records?results=errors"  # the SDK mints record ids: only errors need an answer
REQUESTS_IN_FLIGHT = 3  # with two, one fsync often answered both and the agent waited for the next body
NDJSON = "application/x-ndjson"  # record per line: the agent holds only a slice of a batch as Python objects
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # the agent's answer to one batch is far smaller, unless it is not the agent


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket, kept alive between requests."""

    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _request(
    conn: _UnixConnection, method: str, path: str, body: bytes | None, content_type: str
) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type} if body is not None else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, _read(conn, response)
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise AgentUnavailableError(f"agent at {conn.socket_path} does not answer: {exc}") from exc


def _read(conn: _UnixConnection, response: http.client.HTTPResponse) -> bytes | None:
    """The answer's body, or None past MAX_ANSWER_BYTES (then the connection is closed: the rest is unread)."""
    raw = response.read(MAX_ANSWER_BYTES + 1)
    if len(raw) <= MAX_ANSWER_BYTES:
        return raw
    conn.close()
    return None


def call_agent(
    socket_path: str | Path,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout_s: float = 30.0,
) -> tuple[int, Any]:
    """One request to the agent; returns (status, parsed JSON or text). Raises AgentUnavailableError."""
    conn = _UnixConnection(str(socket_path), timeout_s)
    try:
        payload = None if body is None else orjson.dumps(body)
        status, raw = _request(conn, method, path, payload, "application/json")
    finally:
        conn.close()
    if raw is None:
        return status, f"an answer over {MAX_ANSWER_BYTES} bytes"
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, raw.decode(errors="replace")


def _default(value: Any) -> Any:
    """JSON for what orjson does not know: bytes as base64 (binary fields), else str()."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode()
    if hasattr(value, "tolist"):  # numpy scalars and arrays orjson did not take
        return value.tolist()
    return str(value)


def _wire_time(value: datetime | float | None) -> Any:
    """``created_at`` as the agent reads it: a datetime as UTC text (a naive one is the app's local time, as Python reads it)."""
    if isinstance(value, datetime):
        try:
            # orjson writes a naive datetime without an offset (the agent's UTC) and rounds a seconds offset to minutes.
            return value.astimezone(UTC).isoformat()
        except (OverflowError, ValueError, TypeError):  # past year 9999 (or before 1) in UTC: the agent says so
            return value
    return value


_InFlight = tuple[_UnixConnection, list[dict[str, Any]], list[threading.Event]]


class Client:
    """Buffers records and sends them to the agent from a background thread; thread-safe.

    ``stats()`` tells what happened to them: sent, invalid (refused by the agent's schema
    check), dropped by reason (``buffer_full``, ``agent_unavailable`` at close, ``spool_full``,
    ``too_large``, ``rejected``, ``closed``, ``bad_answer``: a 200/422 that is not the agent's
    answer, or over MAX_ANSWER_BYTES) and still buffered (queued, or being retried while
    the agent is down).
    """

    def __init__(
        self,
        socket_path: str | Path,
        *,
        max_buffer: int = 100_000,
        batch_size: int = 1_000,
        flush_interval_s: float = 0.25,
        timeout_s: float = 30.0,
        retry_max_s: float = 5.0,
    ) -> None:
        if max_buffer < 1 or batch_size < 1 or flush_interval_s <= 0:
            raise ValueError("max_buffer and batch_size must be positive, flush_interval_s above 0")
        self.socket_path = str(socket_path)
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_max_s = retry_max_s
        self.timeout_s = timeout_s
        self._closed = False
        self._start()
        ref = weakref.ref(self)
        self._atexit = lambda: (client := ref()) is not None and client.close(timeout_s=2.0)
        atexit.register(self._atexit)
        _CLIENTS.add(self)

    def _start(self) -> None:
        """Fresh state, connections and sender thread: at construction, and again in a forked child."""
        self._buffer: deque[Any] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._invalid = 0
        self._taken = 0  # records out of the buffer whose fate the agent has not told yet
        self._dropped: Counter[str] = Counter()
        self._first_errors: deque[dict[str, Any]] = deque(maxlen=10)
        self._errors = RateLimitedLogger(log)
        # The agent's body bound (its memory budget decides it), learnt from its first 413: later
        # batches are cut to fit before they are sent, instead of each being refused and halved.
        self._max_body_bytes: int | None = None
        self._batch_records = self.batch_size
        self._conns = tuple(_UnixConnection(self.socket_path, self.timeout_s) for _ in range(REQUESTS_IN_FLIGHT))
        self._thread = threading.Thread(target=self._run, name="edgeloop-client", daemon=True)
        self._thread.start()

    def _after_fork_in_child(self) -> None:
        """The parent's thread is gone in the child and its sockets and buffer are the parent's."""
        for conn in self._conns:
            conn.sock = None  # the parent's socket: drop our reference without shutting it down
        if self._closed:
            return
        self._start()

    # -- the app's side: cheap, never raises, never blocks ------------------------------------

    def log_prediction(
        self,
        model: str,
        model_version: str,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        *,
        record_id: str | None = None,
        created_at: datetime | float | None = None,
    ) -> str:
        """Queue one prediction; returns its record id at once (a UUIDv7 unless given).

        ``created_at`` (a datetime or epoch seconds) defaults to now, on the app's clock; a naive datetime is local time.
        """
        record_id = record_id or str(uuid_utils.uuid7())
        record = {
            "kind": "prediction",
            "model": model,
            "model_version": model_version,
            "record_id": record_id,
            "created_at": time.time() if created_at is None else _wire_time(created_at),
            "inputs": inputs,
            "outputs": outputs,
        }
        self._put(record)
        return record_id

    def log_feedback(
        self,
        prediction_id: str,
        model: str,
        model_version: str,
        feedback: dict[str, Any],
        *,
        source: str | None = None,
        created_at: datetime | float | None = None,
    ) -> str:
        """Queue ground truth for an earlier prediction; returns the feedback record's id.

        ``created_at`` (a datetime or epoch seconds) defaults to now, on the app's clock; a naive datetime is local time.
        """
        record_id = str(uuid_utils.uuid7())
        record = {
            "kind": "feedback",
            "model": model,
            "model_version": model_version,
            "record_id": record_id,
            "created_at": time.time() if created_at is None else _wire_time(created_at),
            "prediction_id": str(prediction_id),
            "feedback": feedback,
        }
        if source is not None:
            record["source"] = source
        self._put(record)
        return record_id

    def _put(self, record: dict[str, Any]) -> None:
        buffer = self._buffer
        if self._closed:
            self._drop("closed")
        elif len(buffer) >= self.max_buffer:
            self._drop("buffer_full")
        else:
            buffer.append(record)
            if len(buffer) == self.batch_size:
                self._wake.set()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record logged before the call is sent or settled; False on timeout."""
        if self._closed or not self._thread.is_alive():
            return not self._buffer
        marker = threading.Event()
        self._buffer.append(marker)
        self._wake.set()
        return marker.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush (bounded by ``timeout_s``), stop the sender; what is left is counted as dropped."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._closed = True
        self._closing.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
        atexit.unregister(self._atexit)
        left = 0
        while self._buffer:
            item = self._buffer.popleft()
            if isinstance(item, dict):
                left += 1
            else:
                item.set()  # a flush() waiting in another thread: nothing more will be sent
        if left:
            self._drop("closed", left)
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def buffered(self) -> int:
        """Records not yet taken by the agent, queued or being retried (cheap: an app may slow down before drops)."""
        return len(self._buffer) + self._taken

    def stats(self) -> dict[str, Any]:
        """Counters: sent, invalid, dropped by reason, buffered; and the last few invalid-record errors."""
        with self._lock:
            return {
                "sent": self._sent,
                "invalid": self._invalid,
                "dropped": dict(self._dropped),
                "buffered": sum(1 for item in list(self._buffer) if isinstance(item, dict)) + self._taken,
                "recent_errors": list(self._first_errors),
            }

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += count

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.run_once()
            except Exception:  # the sender never dies: it is all that stands between app and agent
                log.exception("edgeloop client: sending failed")
                with self._lock:
                    lost, self._taken = self._taken, 0
                    if lost:
                        self._dropped["internal_error"] += lost
                time.sleep(min(1.0, self.flush_interval_s))
            if self._closing.is_set():
                return

    def run_once(self) -> None:
        """Send everything buffered now (the sender thread's one iteration).

        Three requests are kept in flight on three connections, so the app's process turns the
        next batch into JSON while the agent validates and fsyncs the previous ones (with two,
        both were often answered by one fsync and the agent's loop waited for the next body).
        """
        inflight: deque[_InFlight] = deque()
        spare = list(self._conns)
        while True:
            if self._buffer and spare and not self._closing.is_set():  # once closing, close() counts what is left
                batch, markers = self._take()
                if batch:
                    conn = spare.pop()
                    if self._send(conn, batch):
                        inflight.append((conn, batch, markers))
                        continue
                    spare.append(conn)
                    self._drain(inflight, spare)
                    self._deliver(batch)  # the agent is away: retry with backoff, in order
                    self._done(batch)
                else:
                    self._drain(inflight, spare)  # a flush marker: what came before settles first
                for marker in markers:
                    marker.set()
            elif inflight:
                self._receive_one(inflight, spare)
            else:
                return

    def _drain(self, inflight: deque[_InFlight], spare: list[_UnixConnection]) -> None:
        while inflight:
            self._receive_one(inflight, spare)

    def _receive_one(self, inflight: deque[_InFlight], spare: list[_UnixConnection]) -> None:
        conn, batch, markers = inflight.popleft()
        self._receive(conn, batch)
        self._done(batch)
        spare.append(conn)
        for marker in markers:
            marker.set()

    def _take(self) -> tuple[list[dict[str, Any]], list[threading.Event]]:
        """Up to batch_size records from the buffer, stopping at a flush marker."""
        batch: list[dict[str, Any]] = []
        markers: list[threading.Event] = []
        popleft = self._buffer.popleft
        while len(batch) < self._batch_records:
            try:
                item = popleft()
            except IndexError:
                break
            if isinstance(item, dict):
                batch.append(item)
            else:
                markers.append(item)
                break
        if batch:
            with self._lock:
                self._taken += len(batch)
        return batch, markers

    def _done(self, batch: list[dict[str, Any]]) -> None:
        """The agent's answer for ``batch`` is counted (sent, invalid or dropped): it is no longer buffered."""
        with self._lock:
            self._taken -= len(batch)

    def _send(self, conn: _UnixConnection, batch: list[dict[str, Any]]) -> bool:
        """Write one request without waiting for the answer; False if that failed."""
        body = self._encode(batch)
        if body is None or self._over_limit(batch, body):
            return False  # sent by _deliver, which splits it
        try:
            conn.request("POST", RECORDS_PATH, body=body, headers={"Content-Type": NDJSON})
        except (OSError, http.client.HTTPException):
            conn.close()
            return False
        return True

    def _receive(self, conn: _UnixConnection, batch: list[dict[str, Any]]) -> None:
        try:
            response = conn.getresponse()
            status, raw = response.status, _read(conn, response)
        except (OSError, http.client.HTTPException):
            conn.close()
            self._deliver(batch)  # unknown whether it landed: resend (the agent keeps the first copy's ids)
            return
        if status in RETRY_STATUSES:
            self._deliver(batch)
            return
        self._settle(batch, status, raw)

    def _encode(self, batch: list[dict[str, Any]]) -> bytes | None:
        try:
            return b"\n".join([orjson.dumps(record, default=_default, option=orjson.OPT_SERIALIZE_NUMPY) for record in batch])
        except (TypeError, orjson.JSONEncodeError):
            return None

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Send one batch and wait for the answer, retrying while the agent is away."""
        body = self._encode(batch)
        if body is None:
            if len(batch) == 1:
                self._drop("unserializable")
                return
            half = len(batch) // 2  # find the record orjson cannot take; send the rest
            self._deliver(batch[:half])
            self._deliver(batch[half:])
            return
        if self._over_limit(batch, body):
            half = len(batch) // 2
            self._deliver(batch[:half])
            self._deliver(batch[half:])
            return
        retrying = Retrying(
            retry=retry_if_exception_type(AgentUnavailableError),
            wait=wait_exponential_jitter(multiplier=0.05, max=self.retry_max_s),
            stop=stop_when_event_set(self._closing),
            sleep=self._closing.wait,
        )
        try:
            status, raw = retrying(self._post, body)
        except RetryError as exc:
            self._drop("agent_unavailable", len(batch))
            # Else a wrong socket path or a socket this user may not open loses every record without a word.
            log.warning("edgeloop client: %d records dropped at close: the agent at %s never answered (%s)",
                        len(batch), self.socket_path, exc.last_attempt.exception())
            return
        self._settle(batch, status, raw)

    def _settle(self, batch: list[dict[str, Any]], status: int, raw: bytes | None) -> None:
        """Count what the agent said about a batch."""
        if status == 200 or status == 422:
            counts = _counts(status, raw)
            if counts is None:  # not the agent's answer: whether the records landed is unknown
                self._errors.log(logging.WARNING, "bad-answer", "edgeloop client: the agent's answer is unreadable",
                                 status=status, body=(raw or b"")[:200])
                self._drop("bad_answer", len(batch))
                return
            with self._lock:
                self._sent += counts["accepted"] + counts["sampled_out"]
                self._invalid += counts["invalid"]
                for result in counts["results"][:10]:
                    self._first_errors.append(result)
        elif status == 413 and len(batch) > 1:
            self._learn_limit(raw)
            half = len(batch) // 2
            self._deliver(batch[:half])
            self._deliver(batch[half:])
        elif status == 413:
            self._drop("too_large")
        elif status == 507:
            self._drop("spool_full", len(batch))
        else:
            log.warning("edgeloop client: agent refused a batch", extra={"status": status, "body": (raw or b"")[:500]})
            self._drop("rejected", len(batch))

    def _over_limit(self, batch: list[dict[str, Any]], body: bytes) -> bool:
        """Whether ``body`` is over the agent's known bound and ``batch`` can be cut; then later batches are smaller."""
        limit = self._max_body_bytes
        if limit is None or len(body) <= limit or len(batch) < 2:
            return False
        fits = max(1, len(batch) * limit // len(body) * 9 // 10)  # a tenth spare: records differ in size
        self._batch_records = min(self._batch_records, fits)
        return True

    def _learn_limit(self, raw: bytes | None) -> None:
        """Take the body bound from a 413 ``too_large`` answer (``details.limit``)."""
        try:
            error = orjson.loads(raw)["error"]
            limit = error["details"]["limit"] if error["code"] == "too_large" else None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if type(limit) is int and limit > 0:
            self._max_body_bytes = limit

    def _post(self, body: bytes) -> tuple[int, bytes | None]:
        status, raw = _request(self._conns[0], "POST", RECORDS_PATH, body, NDJSON)
        if status in RETRY_STATUSES:
            raise AgentUnavailableError(f"agent answered {status}")
        return status, raw



def _counts(status: int, raw: bytes | None) -> dict[str, Any] | None:
    """The agent's counts for a batch (200, or 422's details), or None when the answer is not that shape."""
    try:
        answer = orjson.loads(raw)  # type: ignore[arg-type]
        counts = answer if status == 200 else answer["error"]["details"]
        numbers = [counts[key] for key in ("accepted", "sampled_out", "invalid")]
        results = counts["results"]
    except (ValueError, TypeError, KeyError):
        return None
    if all(type(n) is int and n >= 0 for n in numbers) and isinstance(results, list):
        return counts
    return None


_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _reset_clients_in_child() -> None:
    for client in list(_CLIENTS):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_clients_in_child)
