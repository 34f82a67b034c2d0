"""Optional TLS: with a certificate and key in the config, uploads and the admin API run over HTTPS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess

import aiohttp
import pytest
from aiohttp import web

from edgeloop.ingest.admin import RemoteAdmin
from edgeloop.ingest.app import create_app, ssl_context
from tests.ingest.conftest import make_config, make_table, seal
from tests.sockets import listen_on_loopback


def _self_signed(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


async def test_https_upload_and_admin_query(tmp_path, vibration):
    """A TLS-configured server lands an upload over HTTPS and answers the admin API to a client trusting its cert."""
    cert, key = _self_signed(tmp_path)
    config = make_config(tmp_path, server={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    runner = web.AppRunner(create_app(config), access_log=None, shutdown_timeout=5)
    url = await listen_on_loopback(runner, ssl_context=ssl_context(config))
    try:
        admin_token = config.server.admin_token_file.read_text().strip()
        admin = RemoteAdmin(url, admin_token, ca_file=cert)
        token = await asyncio.to_thread(admin.add_device, "pump-1")
        batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
        client_context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.put(f"{url}/v1/batches/{batch_id}", data=body, ssl=client_context, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/vnd.apache.parquet"}) as response:
                assert response.status == 201
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"{url}/healthz"):
                    pass
        table = await asyncio.to_thread(admin.query, "SELECT count(*) AS n FROM vibration")
        assert table.to_pylist() == [{"n": 3}]
    finally:
        await runner.cleanup()
