"""Sync: upload the spool's sealed batches to ingest, oldest first, one at a time.

One ``Syncer.run_once`` is one sync. It asks the ``only_if`` gate, reads the device token,
then PUTs every pending batch and lets the server's answer decide the batch's fate::

    201 / 200 + receipt    landed / already landed   → acknowledge: the batch leaves the spool
    201 / 200 without one  not ingest (a portal)     → stop the run, keep every batch
    413                    too large                 → split in halves, upload the halves
    401, 403               this device is refused    → stop the run, keep every batch
    404, 405, 3xx, odd 2xx the URL is wrong          → stop the run, keep every batch
    other 4xx              refused for good          → rejected/ with the server's answer
    408, 5xx, network      may work later            → tenacity: capped exponential backoff
                                                       with full jitter, then the next sync
    TLS failure            certificate not trusted   → stop the run at once, keep every batch
    429 / 503              throttled                 → the whole run pauses for Retry-After

Uploads are sequential, so one pause or one bandwidth cap holds for the whole run. A receipt
is what ``Answer.receipt_problem`` accepts (this batch's id, sha256, bytes and rows), and every
answer is read by ``Answer.read``, within the bounds ``collector/answer.py`` lists.

After the uploads, even when there was nothing to upload, the run sends the device's status
document (``collector/reporter.py``) with its real outcome: ``PUT /v1/status/{status_id}``,
one attempt (a retry re-sends the same id, which the server answers 200). A report that fails
is logged and carried into the next one; it never changes the sync's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import logging
import math
import os
import signal
import ssl
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, Literal, TypeVar

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from edgeloop.collector.answer import IDENTITY, Answer
from edgeloop.collector.bootclock import Moment
from edgeloop.collector.config import SyncSettings
from edgeloop.collector.reporter import StatusReporter
from edgeloop.collector.spool import SealedBatch, Spool
from edgeloop.errors import RejectedBatchError, RetryableUploadError, SyncError, ThrottledError
from edgeloop.logs import RateLimitedLogger
from edgeloop.settings import read_text

__all__ = ["NOT_CONFIGURED", "PARQUET_MEDIA_TYPE", "SENT_AT_HEADER", "SyncResult", "Syncer"]

log = logging.getLogger(__name__)
T = TypeVar("T")

PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
SENT_AT_HEADER = "X-Edgeloop-Sent-At"
NOT_CONFIGURED = "sync is not configured"
CHUNK_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 64 * 1024  # a receipt or an error: well under 1 KiB from ingest
STATUS_TIMEOUT_S = 30.0

Outcome = Literal["ok", "partial", "skipped", "failed"]

# Answers that say the device or the URL is wrong, not the batch: rejecting would lose every batch.
_DEVICE_REFUSED = frozenset({401, 403})
# Refusals an admin lifts on the server (registering the batch's schema): keep the batch, retry next sync.
_HELD_CODES = frozenset({"unknown_schema"})
_WRONG_ENDPOINT = frozenset({404, 405})
# Runs that stopped because ingest cannot be reached or trusted, or refuses this device: a report would fail the same way.
_NO_REPORT = ("ingest unreachable", "TLS failure", "device not allowed", "unexpected answer")


@dataclass(slots=True)
class SyncResult:
    """What one sync run did; ``failed`` counts batches it left in the spool for the next run."""

    outcome: Outcome = "ok"
    reason: str | None = None
    uploaded: int = 0
    already_present: int = 0
    rejected: int = 0
    split: int = 0
    failed: int = 0
    retries: int = 0
    rows: int = 0
    bytes: int = 0
    throttled_s: float = 0.0
    duration_s: float = 0.0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # told again by ``measure``
    started: Moment = field(default_factory=Moment.now)
    report: str | None = None  # the status report: "stored", "already_stored", or why it was not

    @property
    def landed(self) -> int:
        return self.uploaded + self.already_present

    def measure(self) -> None:
        """Time the run on the boot clock so far; ``started_at`` is now minus that, whatever the wall clock did meanwhile."""
        self.duration_s = round(self.started.age_s(), 3)
        self.started_at = self.started.at()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["started"]
        data["started_at"] = self.started_at.isoformat()
        return data


class _ContinueWithin(aiohttp.ClientRequest):
    """A request sent with ``Expect: 100-continue`` sends its body after ``continue_timeout_s`` without the 100.

    aiohttp's client awaits the 100 without a bound (``write_bytes`` awaits ``_continue``, 3.10
    to 3.14): behind a proxy that does not pass it on, every large upload would stall until its
    request timeout and retry the same way. RFC 9110 10.1.1 lets a client stop waiting; curl
    does after 1 s. A final answer read first is the answer: its body is not sent.
    """

    continue_timeout_s = 1.0

    @classmethod
    def within(cls, timeout_s: float) -> type[_ContinueWithin]:
        return type(cls.__name__, (cls,), {"continue_timeout_s": timeout_s})

    async def send(self, conn: Any) -> aiohttp.ClientResponse:
        response = await super().send(conn)
        waiter = self._continue  # aiohttp's future for the 100 (None when the request did not ask)
        if waiter is not None and not waiter.done():
            timer = self.loop.call_later(self.continue_timeout_s, self.loop.call_soon, _stop_waiting, waiter, response)
            waiter.add_done_callback(lambda _: timer.cancel())
        return response


def _stop_waiting(waiter: asyncio.Future[bool], response: aiohttp.ClientResponse) -> None:
    # Run one turn after the timer: a final answer that arrived with it has been read by then.
    if not waiter.done() and response.status is None:
        waiter.set_result(True)


class Syncer:
    """Uploads sealed batches; ``run_once`` is one whole sync, safe to call again after any outcome."""

    def __init__(
        self,
        settings: SyncSettings,
        spool: Spool,
        *,
        agent_version: str,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        reporter: StatusReporter | None = None,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.agent_version = agent_version
        self.reporter = reporter
        self._session_factory = session_factory or self._new_session
        self._errors = RateLimitedLogger(log)
        # Called with the sync's session and token before uploads (the policy fetch); its errors are its own.
        self.on_session: Callable[[aiohttp.ClientSession, str], Awaitable[Any]] | None = None

    @property
    def configured(self) -> bool:
        return self.settings.enabled and self.settings.url is not None

    async def run_once(self) -> SyncResult:
        """Upload every pending batch, oldest first; never raises for a failed upload."""
        result = SyncResult()
        try:
            await self._run(result)
        finally:
            result.measure()
            if self.reporter is not None and result.report is None:
                self.reporter.unreported(result.outcome)
        level = logging.INFO if result.outcome in ("ok", "skipped") else logging.WARNING
        log.log(level, "sync finished", extra=result.as_dict())
        return result

    async def contact(self, call: Callable[[aiohttp.ClientSession, str], Awaitable[T]]) -> T | None:
        """``call(session, token)`` outside a sync (the policy fetch at start-up); None when sync is not set up."""
        if not self.configured:
            return None
        token = self.read_token()
        async with self._session_factory() as session:
            return await call(session, token)

    def read_token(self) -> str:
        """The device token from ``token_file``, read on every sync so a rotated token takes effect."""
        path = self.settings.token_file
        if path is None:
            raise SyncError("sync.token_file is not set")
        token = read_text(path, what="sync.token_file", error=SyncError).strip()
        try:
            readable_by_everyone = path.stat().st_mode & stat.S_IROTH
        except OSError as exc:
            raise SyncError(f"sync.token_file: cannot read {path}: {exc.strerror}") from exc
        if readable_by_everyone:  # as the fleet key: a secret others can read is refused, not sent
            raise SyncError(f"token file {path} is readable by everyone (chmod o-r {path})")
        if not token:
            raise SyncError(f"token file {path} is empty")
        return token

    async def _run(self, result: SyncResult) -> None:
        if not self.configured:
            _finish(result, "skipped", NOT_CONFIGURED)
            return
        if self.settings.only_if:
            refusal = await self._ask_gate(self.settings.only_if)
            if refusal is not None:
                _finish(result, "skipped", refusal)
                return
        try:
            token = self.read_token()
            session = self._session_factory()
        except SyncError as exc:
            _finish(result, "failed", str(exc))
            return
        async with session:
            if self.on_session is not None:
                await self.on_session(session, token)
            reason = await self._upload_all(session, token, result)
            if reason is None and result.rejected:
                reason = f"{result.rejected} batch(es) rejected by the server"
            if reason is None:
                _finish(result, "ok", None)
            else:
                _finish(result, "partial" if result.landed else "failed", reason)
            if self.reporter is not None and not (result.reason or "").startswith(_NO_REPORT):
                await self._report(session, token, result)

    async def _report(self, session: aiohttp.ClientSession, token: str, result: SyncResult) -> None:
        """Send the status document about this run; a failure is logged and carried into the next report."""
        reporter = self.reporter
        assert reporter is not None
        result.measure()
        document: dict[str, Any] | None = None
        try:
            document = await asyncio.to_thread(reporter.document, result)
            url = f"{self.settings.url}/v1/status/{document['status_id']}"
            async with session.put(
                url,
                data=orjson.dumps(document),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=min(self.settings.request_timeout_s, STATUS_TIMEOUT_S)),
                allow_redirects=False,
            ) as response:
                answer = await Answer.read(response, MAX_ANSWER_BYTES)
                status, body = answer.status, answer.shown
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"status report failed: {type(exc).__name__}: {exc}"
        except Exception as exc:  # building the document must never fail the sync
            log.exception("building the status report failed")
            error = f"status report failed: {type(exc).__name__}: {exc}"
        else:
            if status in (200, 201):
                reporter.stored(document, body)
                result.report = body.get("status", "stored") if isinstance(body, dict) else "stored"
                return
            error = f"status report refused: {status} {_error_message(body)}"
        reporter.not_stored(document, result.outcome, error)
        result.report = error
        self._errors.log(logging.WARNING, "status-report", "the status report did not reach ingest", error=error)

    async def _upload_all(self, session: aiohttp.ClientSession, token: str, result: SyncResult) -> str | None:
        """Upload the queue; returns why the run stopped early or left batches behind, else None."""
        settings = self.settings
        queue = deque(self.spool.pending())
        pacer = _Pacer(settings.bandwidth_bytes_per_s) if settings.bandwidth_bytes_per_s else None
        throttles = 0
        last_error: str | None = None
        while queue:
            batch = queue.popleft()
            if self.spool.get(batch.batch_id) is None:
                continue  # dropped by the full-spool policy since the run began
            try:
                status = await self._upload_with_retries(session, batch, token, pacer, result)
            except FileNotFoundError:
                continue  # the same: the file went between the check and the open
            except ThrottledError as exc:
                throttles += 1
                asked_s = exc.retry_after_s
                # Throttled again without a batch landing: wait at least the doubling backoff, whatever
                # Retry-After said (0, negative, in the past), so a server that throttles for ever ends the run.
                floor_s = min(settings.backoff_max_s, settings.backoff_initial_s * 2.0 ** min(throttles - 1, 64))
                if asked_s is None:
                    wait_s = floor_s
                else:
                    wait_s = asked_s if throttles == 1 else max(asked_s, floor_s)
                if result.throttled_s + wait_s > settings.max_throttle_wait_s:
                    # Waiting less than asked would only earn another 429; the next sync resumes.
                    result.failed += 1 + len(queue)
                    asked = "" if asked_s is None else f"asked to wait {asked_s:.0f}s, "
                    return (
                        f"server throttled {throttles} time(s) ({asked}paused {result.throttled_s:.1f}s): "
                        f"waiting {wait_s:.0f}s more is over the {settings.max_throttle_wait_s:.0f}s "
                        "max_throttle_wait_s for one sync"
                    )
                log.warning("server throttled: pausing the sync", extra={"wait_s": wait_s, "batch_id": batch.batch_id})
                await asyncio.sleep(wait_s)
                result.throttled_s = round(result.throttled_s + wait_s, 3)
                queue.appendleft(batch)
                continue
            except RetryableUploadError as exc:
                result.failed += 1
                last_error = str(exc)
                if isinstance(exc.__cause__, aiohttp.ClientSSLError):
                    result.failed += len(queue)
                    return f"TLS failure (check sync.url and sync.ca_file): {exc}"
                if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                    # The server is unreachable: every other batch would fail the same way.
                    result.failed += len(queue)
                    return f"ingest unreachable: {exc}"
                continue  # a batch that keeps failing must not hold back the others
            except RejectedBatchError as exc:
                if _error_code(exc.body) in _HELD_CODES:
                    result.failed += 1
                    last_error = str(exc)
                    self._errors.log(
                        logging.ERROR, "unknown-schema",
                        "ingest does not accept this batch's schema yet: the batch stays in the spool until an "
                        "admin registers it (edgeloop-ingest schemas push)",
                        batch_id=batch.batch_id, error=exc.body,
                    )
                    continue
                stop = await self._settle_refusal(batch, exc, queue, result)
                if stop is not None:
                    return stop
                continue
            throttles = 0
            log.info(
                "batch uploaded" if status == 201 else "batch was already landed",
                extra={"batch_id": batch.batch_id, "model": batch.model, "rows": batch.rows, "bytes": batch.bytes,
                       "status": status},
            )
            await asyncio.to_thread(self.spool.acknowledge, batch.batch_id)
            if status == 201:
                result.uploaded += 1
            else:
                result.already_present += 1
            result.rows += batch.rows
            result.bytes += batch.bytes
        if result.failed:
            return f"{result.failed} batch(es) left for the next sync after {settings.max_attempts} attempts; last error: {last_error}"
        return None

    async def _settle_refusal(
        self, batch: SealedBatch, exc: RejectedBatchError, queue: deque[SealedBatch], result: SyncResult
    ) -> str | None:
        """Split, reject, or stop the run for a 4xx (or a status the contract does not know); the stop reason."""
        url = self.settings.url
        if exc.status in _DEVICE_REFUSED:
            log.error(
                "ingest refused this device's token: sync stopped, no batch rejected; "
                "check sync.token_file and the device's registration (edgeloop-ingest devices list)",
                extra={"status": exc.status, "error": exc.body, "url": url},
            )
            result.failed += 1 + len(queue)
            return f"device not allowed: ingest answered {exc.status} (check sync.token_file and `edgeloop-ingest devices list`)"
        if 200 <= exc.status < 300:
            log.error("ingest's answer does not prove the batch landed: sync stopped, every batch kept; check sync.url "
                      "(a captive portal or a proxy answers this way)",
                      extra={"status": exc.status, "url": url, "batch_id": batch.batch_id, "error": str(exc)})
            result.failed += 1 + len(queue)
            return f"unexpected answer {exc.status} from {url}: {exc}"
        if exc.status in _WRONG_ENDPOINT or not 400 <= exc.status < 500:
            log.error("ingest answered an unexpected status: sync stopped, check sync.url",
                      extra={"status": exc.status, "url": url})
            result.failed += 1 + len(queue)
            return f"unexpected answer {exc.status} from {url}: check sync.url"
        if exc.status == 413:
            halves = await asyncio.to_thread(self.spool.split, batch.batch_id)
            if halves:
                log.info("batch too large for ingest: split in two", extra={"batch_id": batch.batch_id, "rows": batch.rows})
                result.split += 1
                queue.extendleft(reversed(halves))
                return None
        await asyncio.to_thread(self.spool.reject, batch.batch_id, status=exc.status, error=exc.body)
        log.warning("batch rejected by ingest: moved to rejected/",
                    extra={"batch_id": batch.batch_id, "status": exc.status, "error": exc.body})
        result.rejected += 1
        return None

    async def _upload_with_retries(
        self, session: aiohttp.ClientSession, batch: SealedBatch, token: str, pacer: _Pacer | None, result: SyncResult
    ) -> int:
        settings = self.settings

        def before_sleep(state: RetryCallState) -> None:
            result.retries += 1
            error = state.outcome.exception() if state.outcome else None
            self._errors.log(
                logging.WARNING,
                "upload-retry",
                "upload failed: retrying",
                batch_id=batch.batch_id,
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error=str(error),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(_worth_retrying),
            wait=wait_random_exponential(multiplier=settings.backoff_initial_s, max=settings.backoff_max_s),
            stop=stop_after_attempt(settings.max_attempts),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._put(session, batch, token, pacer)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _put(self, session: aiohttp.ClientSession, batch: SealedBatch, token: str, pacer: _Pacer | None) -> int:
        """One PUT of one batch: returns 200 or 201, or raises the SyncError its answer means."""
        settings = self.settings
        url = f"{settings.url}/v1/batches/{batch.batch_id}"
        # Opened outside the network try: a missing file is not a network error.
        handle = open(batch.path, "rb")  # noqa: SIM115 - closed in finally, after the body is sent
        try:
            size = os.fstat(handle.fileno()).st_size
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": PARQUET_MEDIA_TYPE,
                "Content-Length": str(size),
                SENT_AT_HEADER: datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            }
            budget_s = settings.request_timeout_s + (size / pacer.rate if pacer else 0.0)
            sent = hashlib.sha256()
            # A large body waits for ingest's 100 Continue (up to expect_continue_timeout_s): a refused or queued upload does not spend it.
            try:
                async with session.put(
                    url,
                    data=_chunks(handle, pacer, sent),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=budget_s),
                    allow_redirects=False,
                    expect100=size >= settings.expect_continue_bytes,
                ) as response:
                    answer = await Answer.read(response, MAX_ANSWER_BYTES)
                    status, body = answer.status, answer.shown
                    retry_after = response.headers.get("Retry-After")
                    server_date = response.headers.get("Date")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise RetryableUploadError(f"PUT {url}: {type(exc).__name__}: {exc}") from exc
            if status in (200, 201):
                # The file's digest: what was sent, or the whole file when the answer came before the body was out.
                digest = sent.hexdigest() if handle.tell() == size else await asyncio.to_thread(_file_sha256, handle)
                problem = answer.receipt_problem(batch_id=batch.batch_id, sha256=digest, size=size, rows=batch.rows)
                if problem is None:
                    return status
                raise RejectedBatchError(f"the answer does not prove the batch landed: {problem}", status=status, body=body)
        finally:
            handle.close()
        message = f"PUT {url}: {status} {_error_message(body)}"
        if status in (429, 503):
            raise ThrottledError(message, retry_after_s=_retry_after_s(retry_after, server_date))
        if status == 408 or status >= 500:
            raise RetryableUploadError(message)
        raise RejectedBatchError(message, status=status, body=body)

    def _new_session(self) -> aiohttp.ClientSession:
        ca_file = self.settings.ca_file
        ssl_context: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                ssl_context = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise SyncError(f"cannot load sync.ca_file {ca_file}: {exc}") from exc
        # The bounds of collector/answer.py: every request's time, no inflating, no proxy or .netrc from the environment.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=1),
            request_class=_ContinueWithin.within(self.settings.expect_continue_timeout_s),
            headers={"User-Agent": f"edgeloop-collector/{self.agent_version}", **IDENTITY},
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout_s),
            auto_decompress=False,
            trust_env=False,
        )

    async def _ask_gate(self, command: str) -> str | None:
        """Run ``only_if``; returns why the sync may not run, or None if it may."""
        timeout_s = self.settings.only_if_timeout_s
        try:
            process = await asyncio.create_subprocess_shell(
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills the whole pipeline
            )
        except OSError as exc:
            return f"only_if could not start: {exc}"
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            if isinstance(exc, TimeoutError):
                return f"only_if {command!r} did not finish within {timeout_s:g}s"
            raise
        if process.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip()[-200:]
            return f"only_if {command!r} exited {process.returncode}" + (f": {tail}" if tail else "")
        return None


class _Pacer:
    """Holds a byte rate across every upload of one run: a chunk goes once its share of time has passed."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._free_at = 0.0

    async def pace(self, size: int) -> None:
        now = time.monotonic()
        # Idle time earns no credit: a burst after a pause still keeps to the rate.
        self._free_at = max(self._free_at, now) + size / self.rate
        delay = self._free_at - now
        if delay > 0:
            await asyncio.sleep(delay)


async def _chunks(handle: BinaryIO, pacer: _Pacer | None, sent: Any) -> AsyncIterator[bytes]:
    """The request body: the batch file in chunks, each held back until the cap allows it, hashed into ``sent``."""
    size = min(CHUNK_BYTES, max(1024, pacer.rate // 10)) if pacer else CHUNK_BYTES
    while chunk := handle.read(size):
        sent.update(chunk)
        # Pace before yielding: aiohttp stops iterating once Content-Length bytes are out.
        if pacer is not None:
            await pacer.pace(len(chunk))
        yield chunk


def _file_sha256(handle: BinaryIO) -> str:
    handle.seek(0)
    return hashlib.file_digest(handle, "sha256").hexdigest()


def _error_code(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return None


def _error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    return str(body)[:200]


def _retry_after_s(value: str | None, server_date: str | None = None) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date; None if absent or unreadable.

    An HTTP date is read against the response's own Date, not the device's clock: a device
    whose clock is years behind would wait years, one ahead would not wait at all.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    when = _http_date(value)
    if when is None:
        return None
    now = _http_date(server_date) or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _http_date(value: str | None) -> datetime | None:
    try:
        when = email.utils.parsedate_to_datetime(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _worth_retrying(exc: BaseException) -> bool:
    """Network errors, 408 and 5xx may pass; a certificate the device does not trust will not."""
    return isinstance(exc, RetryableUploadError) and not isinstance(exc.__cause__, aiohttp.ClientSSLError)


def _finish(result: SyncResult, outcome: Outcome, reason: str | None) -> None:
    result.outcome = outcome
    result.reason = reason

