"""/metrics names the fleet's devices: with server.metrics_token it answers only that token (or the admin token)."""

from __future__ import annotations

import logging

import pytest

from tests.ingest.test_upload import _assert_error

pytestmark = pytest.mark.timeout(120)

METRICS_TOKEN = "prometheus-scrape-token-0123456789"


async def _scrape(server, token: str | None) -> tuple[int, str, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with server.session.get(f"{server.url}/metrics", headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)


async def test_with_a_metrics_token_a_scrape_needs_it_or_the_admin_token(make_server):
    """With server.metrics_token set, /metrics is 401 in the one error shape without it; it and the admin token get 200."""
    server = await make_server(server={"metrics_token": METRICS_TOKEN})
    await server.add_device("pump-secret-name")
    viewer = server.config.server.viewer_token_path.read_text().strip()
    for token in (None, "not-the-token-at-all-0000", viewer):
        status, body, headers = await _scrape(server, token)
        assert status == 401, body
        assert headers.get("WWW-Authenticate") == "Bearer"
        assert "pump-secret-name" not in body
        _assert_error(__import__("json").loads(body), "unauthorized")
    for token in (METRICS_TOKEN, server.admin_token):
        status, body, _ = await _scrape(server, token)
        assert status == 200 and "edgeloop_ingest_queue_depth" in body


async def test_without_a_metrics_token_metrics_stay_open_and_the_start_says_so(make_server, caplog):
    """Unset, /metrics answers anyone as before, and the server logs one warning at start that it is open."""
    with caplog.at_level(logging.WARNING):
        server = await make_server()
    status, body, _ = await _scrape(server, None)
    assert status == 200 and "edgeloop_ingest_queue_depth" in body
    warnings = [record for record in caplog.records if "/metrics is open" in record.getMessage()]
    assert len(warnings) == 1 and "server.metrics_token" in warnings[0].getMessage()


@pytest.mark.parametrize("token", ["short-token", "sixteen chars with spaces", "tok\u00e9n-not-ascii-at-all"])
def test_a_metrics_token_that_is_short_or_not_printable_ascii_is_a_config_error(tmp_path, token):
    """A metrics_token under 16 characters or with spaces is refused at load with one line that does not echo it."""
    from tests.ingest.conftest import cli, write_config

    config = write_config(tmp_path, 0, extra=f'metrics_token = "{token}"')
    result = cli("check-config", "--config", str(config), check=False)
    assert result.returncode != 0 and "metrics_token" in result.stderr and token not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
