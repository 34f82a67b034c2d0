"""Answer: what the agent reads of an ingest response, bounded before it is read.

Every response the agent reads (an upload's receipt or refusal, the status report's answer,
the policy document) is read by ``Answer.read`` from a session the ``Syncer`` opens, so the
server, a captive portal or a proxy in between meets the same bounds everywhere:

    time        the request's ClientTimeout (total: connect, headers and body; the session's default)
    headers     aiohttp's parser: a line or field over 8190 bytes, or over 128 fields, is an error
    body        a Content-Length over the bound is not read; else at most ``max_bytes`` are read
    encoding    the agent asks for identity and never inflates: a compressed body is no answer
    redirects   never followed (``allow_redirects=False``): the token goes to sync.url's origin only
    proxies     not read from the environment (``trust_env=False``), nor .netrc

``Answer.receipt_problem`` is the one rule for what a 200/201 to an upload must prove before
the batch leaves the spool: a JSON object naming this batch id, the sha256 and size of the
file sent and its row count. Anything else (a portal's HTML page, another batch's receipt, a
truncated body) leaves the batch where it is. A server that computes all four from the bytes
it was sent passes; the check proves what the answerer saw, not that it stored it (TLS and the
token are what make the answerer ingest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

__all__ = ["Answer", "IDENTITY"]

IDENTITY = {"Accept-Encoding": "identity"}  # the session's header: answers come uncompressed or not at all
_RECEIPT_FIELDS = ("batch_id", "sha256", "bytes", "rows")


@dataclass(frozen=True, slots=True)
class Answer:
    """A response read within bounds: its status, headers and body (JSON, else text), or why the body was not read."""

    status: int
    headers: CIMultiDictProxy[str]
    body: Any
    problem: str | None = None  # why the body is not an answer: too large, compressed

    @classmethod
    async def read(cls, response: aiohttp.ClientResponse, max_bytes: int) -> Answer:
        """Read ``response``'s body, at most ``max_bytes`` of it; a body over that, or compressed, is not read."""
        headers = response.headers
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return cls(response.status, headers, None, f"a body in Content-Encoding {encoding[:40]!r}, not identity")
        length = response.content_length
        if length is not None and length > max_bytes:
            return cls(response.status, headers, None, f"a body of {length} bytes, over the {max_bytes} the agent reads")
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:  # read() answers with what has arrived: loop to the end or past the bound
            chunk = await response.content.read(max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            return cls(response.status, headers, None, f"a body over the {max_bytes} bytes the agent reads")
        raw = b"".join(chunks)
        try:
            return cls(response.status, headers, orjson.loads(raw))
        except orjson.JSONDecodeError:
            return cls(response.status, headers, raw.decode("utf-8", "replace"))

    @property
    def shown(self) -> Any:
        """The body to log or keep beside a rejected batch: the body, or why it was not read."""
        return self.body if self.problem is None else self.problem

    def receipt_problem(self, *, batch_id: str, sha256: str, size: int, rows: int) -> str | None:
        """Why this 200/201 does not prove the batch landed, or None when it does."""
        if self.problem is not None:
            return self.problem
        body = self.body
        if not isinstance(body, dict):
            return f"not a receipt but {str(body)[:80]!r}"
        expected = {"batch_id": batch_id, "sha256": sha256, "bytes": size, "rows": rows}
        for key in _RECEIPT_FIELDS:
            got, want = body.get(key), expected[key]
            if type(got) is not type(want) or got != want:  # type first: True == 1
                return f"a receipt whose {key} is {str(got)[:80]!r}, not {want!r}"
        return None
