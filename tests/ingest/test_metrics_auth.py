"""/metrics names the fleet's devices: with server.metrics_token_file it answers only that token (or the admin token)."""

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


async def test_with_a_metrics_token_a_scrape_needs_it_or_the_admin_token(make_server, tmp_path):
    """With server.metrics_token_file set, /metrics is 401 in the one error shape without it; it and the admin token get 200."""
    token_file = tmp_path / "metrics.token"
    token_file.write_text(METRICS_TOKEN + "\n")
    token_file.chmod(0o600)
    server = await make_server(server={"metrics_token_file": str(token_file)})
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
    assert len(warnings) == 1 and "server.metrics_token_file" in warnings[0].getMessage()


async def test_a_metrics_token_file_that_does_not_exist_is_created_private_and_its_token_scrapes(make_server, tmp_path):
    """As the admin and viewer token files, a missing metrics token file is created at the first start (mode 0600)."""
    token_file = tmp_path / "secrets" / "metrics.token"
    server = await make_server(server={"metrics_token_file": str(token_file)})
    assert token_file.stat().st_mode & 0o777 == 0o600
    status, _, _ = await _scrape(server, None)
    assert status == 401
    status, body, _ = await _scrape(server, token_file.read_text().strip())
    assert status == 200 and "edgeloop_ingest_queue_depth" in body


@pytest.mark.parametrize("token", ["short-token", "sixteen chars with spaces", "tok\u00e9n-not-ascii-at-all"])
def test_a_metrics_token_that_is_short_or_not_printable_ascii_stops_the_start_with_one_line(tmp_path, token):
    """A metrics token under 16 characters or with spaces stops `serve` with one line naming the file, not echoing it."""
    from tests.ingest.conftest import cli, write_config

    token_file = tmp_path / "metrics.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config = write_config(tmp_path, 0, extra=f'metrics_token_file = "{token_file}"')
    result = cli("serve", "--config", str(config), check=False)
    assert result.returncode != 0 and str(token_file) in result.stderr and token not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
