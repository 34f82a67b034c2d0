"""The lake tests: a PostgreSQL cluster of their own (one per session, a fresh database per test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeloop.ingest.store import Store
from tests.ingest.conftest import Server, make_config, start_server
from tests.postgres import PostgresCluster, postgres_bin


@pytest.fixture(scope="session")
def postgres():
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (Debian's postgresql package; .ci/run installs it)")
    cluster = PostgresCluster(bin_dir)
    yield cluster
    cluster.stop()


def lake_section(postgres: PostgresCluster, folder: Path, **extra: Any) -> dict[str, Any]:
    """The [store] settings of a fresh lake: a new database for its catalog, a data folder under ``folder``."""
    return {"backend": "ducklake", "catalog": postgres.database(), "data_path": str(folder / "lake-data"),
            "lake_group_commit_delay_s": 0.01, "lake_refresh_s": 0.2, **extra}


@pytest.fixture
def lake(postgres, tmp_path) -> dict[str, Any]:
    return lake_section(postgres, tmp_path)


@pytest.fixture
async def server(tmp_path, lake):
    """The tests of tests/ingest written against ``server`` run here against a lake."""
    config = make_config(tmp_path, store=lake)
    runner, url = await start_server(config)
    async with aiohttp.ClientSession() as session:
        yield Server(url, config, session, runner.app)
    await runner.cleanup()


@pytest.fixture
async def make_server(tmp_path, lake):
    """Servers on the same lake (replicas in one process), with extra settings."""
    runners = []
    tokens: list[str] = []
    session = aiohttp.ClientSession()

    async def start(*, store_class: type[Store] | None = None, **sections) -> Server:
        sections["store"] = {**lake, **sections.get("store", {})}
        config = make_config(tmp_path / f"s{len(runners)}", **sections)
        config.server.admin_token_file.parent.mkdir(parents=True, exist_ok=True)
        if tokens:  # one admin token for every replica
            config.server.admin_token_file.write_text(tokens[0])
            config.server.admin_token_file.chmod(0o600)
        runner, url = await start_server(config, store_class=store_class)
        tokens.append(config.server.admin_token_file.read_text())
        runners.append(runner)
        return Server(url, config, session, runner.app)

    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()
