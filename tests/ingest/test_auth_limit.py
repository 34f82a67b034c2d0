"""Wrong bearer tokens on every authenticated API are limited per client address, and refusals are logged sparingly."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from tests.ingest.conftest import PARQUET, make_table, seal

pytestmark = pytest.mark.timeout(120)

METRICS_TOKEN = "prometheus-scrape-token-0123456789"
LIMITED = {"login_failures_burst": 3, "login_failure_refill_s": 600}


def _from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the server on 127.0.0.1)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def _call(session, method: str, url: str, token: str, **kwargs) -> tuple[int, dict | None, dict]:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    async with session.request(method, url, headers=headers, **kwargs) as response:
        parsed = await response.json(content_type=None) if response.content_type == "application/json" else None
        return response.status, parsed, dict(response.headers)


def _assert_limited(status: int, body: dict | None, headers: dict) -> None:
    assert status == 429, (status, body)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == "too_many_requests"
    retry = int(headers["Retry-After"])
    assert 0 < retry <= 600 and body["error"]["details"]["retry_after_s"] == retry


async def test_wrong_device_tokens_are_limited_but_a_right_one_behind_the_same_address_still_lands(
        make_server, tmp_path, vibration):
    """Past the burst a wrong device token gets 429 too_many_requests with Retry-After; a right device token from the
    same address (a device behind the same NAT) and from another address still lands."""
    server = await make_server(server=LIMITED)
    token = await server.add_device("pump-nat")
    table, _ = make_table(vibration, predictions=3)
    async with _from("127.0.0.7") as nat, _from("127.0.0.1") as other:
        wrong = []
        for n in range(6):
            batch_id, body = seal(tmp_path / f"w{n}", vibration, table)
            wrong.append(await _call(nat, "PUT", f"{server.url}/v1/batches/{batch_id}", "eld_misconfigured",
                                     data=body, headers={"Content-Type": PARQUET}))
        assert [status for status, _, _ in wrong] == [401] * 3 + [429] * 3
        _assert_limited(*wrong[-1])
        status, _, _ = await _call(nat, "PUT", f"{server.url}/v1/status/00000000-0000-4000-8000-000000000000",
                                   "eld_misconfigured", data=b"{}", headers={"Content-Type": "application/json"})
        assert status == 429
        status, _, _ = await _call(nat, "GET", f"{server.url}/v1/policies", "eld_misconfigured")
        assert status == 429
        for n, session in enumerate((nat, other)):
            batch_id, body = seal(tmp_path / f"r{n}", vibration, table)
            status, receipt, _ = await _call(session, "PUT", f"{server.url}/v1/batches/{batch_id}", token,
                                             data=body, headers={"Content-Type": PARQUET})
            assert status == 201, receipt
        status, _, _ = await _call(nat, "GET", f"{server.url}/v1/policies", token)
        assert status == 200


async def test_concurrent_wrong_device_tokens_get_no_more_401s_than_the_burst(make_server):
    """Twenty wrong device tokens sent at once from one address get exactly the burst's 401s; the rest are 429."""
    server = await make_server(server=LIMITED)
    async with _from("127.0.0.8") as guesser:
        answers = await asyncio.gather(*(
            _call(guesser, "GET", f"{server.url}/v1/policies", f"eld_wrong{n}") for n in range(20)))
    assert sorted(status for status, _, _ in answers) == [401] * 3 + [429] * 17


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/sql", {"sql": "SELECT 1"}),
    ("POST", "/v1/devices", {"name": "x"}),
    ("DELETE", "/v1/devices/x", None),
    ("GET", "/v1/schemas", None),
    ("POST", "/v1/deletions", {}),
    ("GET", "/metrics", None),
])
async def test_wrong_operator_tokens_are_limited_and_never_block_another_address(make_server, tmp_path, method, path, body):
    """Past the burst a wrong admin, viewer or metrics token gets 429 too_many_requests (even a right one from that
    address, as on the login form); the right token from another address is served."""
    token_file = tmp_path / "metrics.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    token_file.chmod(0o600)
    server = await make_server(server={**LIMITED, "metrics_token_file": str(token_file)})
    url = f"{server.url}{path}"
    kwargs = {"json": body} if body is not None else {}
    async with _from("127.0.0.9") as guesser, _from("127.0.0.1") as admin:
        answers = [await _call(guesser, method, url, "not-the-token-0123456789", **kwargs) for _ in range(5)]
        assert [status for status, _, _ in answers] == [401] * 3 + [429] * 2
        _assert_limited(*answers[-1])
        _assert_limited(*await _call(guesser, method, url, server.admin_token, **kwargs))
        status, _, _ = await _call(admin, "GET", f"{server.url}/v1/schemas", server.admin_token)
        assert status == 200
        status, _, _ = await _call(admin, "GET", f"{server.url}/metrics", METRICS_TOKEN)
        assert status == 200


async def test_an_open_metrics_endpoint_is_never_limited(make_server):
    """Without server.metrics_token_file /metrics answers everyone, even an address whose wrong tokens used up its tries."""
    server = await make_server(server=LIMITED)
    async with _from("127.0.0.10") as guesser:
        for _ in range(4):
            await _call(guesser, "GET", f"{server.url}/v1/schemas", "not-the-token-0123456789")
        status, _, _ = await _call(guesser, "GET", f"{server.url}/metrics", "anything")
        assert status == 200


async def test_a_flood_of_wrong_tokens_logs_a_few_lines_not_one_per_try(make_server, caplog):
    """Two hundred wrong device and admin tokens from one address log a handful of lines, not one per try."""
    server = await make_server(server=LIMITED)
    caplog.set_level(logging.INFO)
    async with _from("127.0.0.11") as guesser:
        for n in range(100):
            await _call(guesser, "PUT", f"{server.url}/v1/batches/{n:032x}", "eld_wrong", data=b"x",
                        headers={"Content-Type": PARQUET})
            await _call(guesser, "POST", f"{server.url}/v1/sql", "eld_wrong", json={"sql": "SELECT 1"})
    lines = [record for record in caplog.records if record.name.startswith("edgeloop.ingest")
             and ("refused" in record.getMessage() or "limited" in record.getMessage())]
    assert 0 < len(lines) <= 10, [record.getMessage() for record in lines]
