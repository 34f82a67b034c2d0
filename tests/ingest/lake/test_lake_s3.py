"""A lake whose data_path is s3://: DuckDB's httpfs (loaded from its pinned wheel) against a real S3-protocol server.

The server is moto's (``moto[server]``, the test extra), a subprocess on a loopback port: the
bucket, the objects and the signed requests are real HTTP, as against AWS or MinIO.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from edgeloop.ingest.app import STORE
from tests.ingest.conftest import Server, cli, free_port, make_config, make_table, seal, start_server, stop_server
from tests.ingest.fleet_truth import assert_aggregates_match_async
from tests.ingest.lake.conftest import lake_section
from tests.ingest.lake.test_lake_cli import write_lake_config

pytestmark = pytest.mark.timeout(300)

BUCKET = "edgeloop-lake"


@pytest.fixture
def s3(tmp_path):
    """An S3 endpoint on loopback with an empty bucket; its URL."""
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{url}/{BUCKET}", method="PUT"), timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"moto did not start: {(tmp_path / 'moto.log').read_text()}") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_server(process)
        log.close()


def objects(url: str, prefix: str) -> list[str]:
    """The keys under ``prefix`` in the bucket, by S3's ListObjectsV2."""
    with urllib.request.urlopen(f"{url}/{BUCKET}?list-type=2&prefix={prefix}", timeout=10) as response:
        return re.findall(r"<Key>([^<]+)</Key>", response.read().decode())


async def test_a_lake_on_s3_lands_batches_answers_queries_and_compacts(postgres, s3, tmp_path, vibration):
    """With data_path = s3://bucket/prefix, batches land as Parquet objects in the bucket, queries and the fleet
    aggregates read them back exactly, and compact folds and merges them there, every row kept."""
    secret = tmp_path / "s3.secret"
    secret.write_text("moto-secret\n")
    secret.chmod(0o600)
    lake = lake_section(postgres, tmp_path, data_path=f"s3://{BUCKET}/fleet", s3_endpoint=s3.removeprefix("http://"),
                        s3_url_style="path", s3_use_ssl=False, s3_region="us-east-1", s3_key_id="moto-key",
                        s3_secret_file=str(secret))
    config = make_config(tmp_path, store=lake)
    runner, url = await start_server(config)
    try:
        async with aiohttp.ClientSession() as session:
            server = Server(url, config, session, runner.app)
            assert runner.app[STORE].settings.on_s3
            tokens = [await server.add_device(f"pump-{index}") for index in range(2)]
            for index in range(6):
                table, ids = make_table(vibration, predictions=50 + index)
                batch_id, body = seal(tmp_path / f"b{index}", vibration, table)
                assert (await server.put(batch_id, body, tokens[index % 2]))[0] == 201
            assert await server.sql("SELECT count(*) AS n, count(DISTINCT record_id) AS ids FROM vibration") == [
                {"n": sum(50 + index for index in range(6)), "ids": sum(50 + index for index in range(6))}]
            await assert_aggregates_match_async(server.sql)
    finally:
        await runner.cleanup()
    landed = objects(s3, "fleet/")
    assert any(key.startswith("fleet/main/vibration/") and key.endswith(".parquet") for key in landed), landed
    assert not (tmp_path / "lake-data").exists()  # nothing went to a local folder
    path = write_lake_config(tmp_path, lake)
    compacted = cli("compact", "--keep-s", "0", "--config", path)
    before, after = map(int, re.search(r"(\d+) files before, (\d+) after", compacted.stderr).groups())
    assert after < before, compacted.stderr
    asked = cli("sql", "SELECT count(*) AS n FROM vibration", "--format", "json", "--config", path).stdout
    assert [json.loads(line) for line in asked.splitlines()] == [{"n": sum(50 + index for index in range(6))}]
    kept = objects(s3, "fleet/main/vibration/")
    assert 0 < len(kept) < len([key for key in landed if key.startswith("fleet/main/vibration/")]), (kept, landed)
