"""A full disk under the server's database (a small tmpfs): uploads are retried, nothing acknowledged is lost or landed twice, and everything lands once the disk grows."""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import App, Tally, device_sections, drain, mount_tmpfs, resize_tmpfs, simulated, unmount
from tests.reliability.report import record


def _full_answers(log: str) -> int:
    """Uploads the server refused for its disk: 507 below the reserve, or DuckDB's own ENOSPC."""
    return log.count('"code":"disk_full"') + log.count('"code":"store_error"')


def fill_server_disk(agent_factory, ingest_server, *, size: str, reserve_bytes: int, records: int) -> tuple[Tally, dict[str, int]]:
    """Land into a database on a ``size`` tmpfs until it is full, keep uploading, then grow the disk and drain."""
    ingest_server.store = {"reserve_free_bytes": reserve_bytes}
    ingest_server.write_config()
    mount_tmpfs(ingest_server.db.parent, size)
    try:
        token = ingest_server.add_device("pump-1")
        ingest_server.start()
        agent = agent_factory(**device_sections(ingest_server.url, token, seal_max_rows=2_000)).start()
        app = App(agent, simulated(records, seed=7), chunk=1_000)
        app.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not _full_answers(ingest_server.log()):
            time.sleep(0.2)
        assert _full_answers(ingest_server.log()), "the disk never filled"
        app.join(600)
        assert not app.is_alive() and app.error is None, app.error
        status = agent.status()
        assert not list((agent.state_dir / "rejected").glob("*.parquet")), "a batch was rejected for a full server disk"
        resize_tmpfs(ingest_server.db.parent, "512m")
        drain(agent, timeout_s=300)
        agent.stop()
        full = _full_answers(ingest_server.log())
        enospc = ingest_server.log().count("No space left")
        tally = Tally.of(app.acknowledged, ingest_server.landed())
    finally:
        if ingest_server.process is not None:
            ingest_server.stop()
        unmount(ingest_server.db.parent)
    assert tally.acknowledged == records, status
    return tally, {"uploads refused for a full disk": full, "of which DuckDB hit ENOSPC": enospc}


@pytest.mark.timeout(240)
def test_server_disk_full_answers_retryable_errors_and_lands_everything_after(agent_factory, ingest_server):
    """With no reserve, DuckDB fills a 6 MiB disk (ENOSPC): uploads fail as retryable 5xx, never rejected; once the disk grows, every acknowledged record lands once."""
    tally, faults = fill_server_disk(agent_factory, ingest_server, size="6m", reserve_bytes=0, records=25_000)
    assert faults["of which DuckDB hit ENOSPC"], faults
    tally.assert_exactly_once()


@pytest.mark.timeout(240)
def test_server_disk_below_its_reserve_answers_507_and_lands_everything_after(agent_factory, ingest_server):
    """With a 2 MiB reserve on a 6 MiB disk, uploads get 507 before DuckDB could hit a full disk; once it grows, every acknowledged record lands once."""
    tally, _ = fill_server_disk(agent_factory, ingest_server, size="6m", reserve_bytes=2 << 20, records=25_000)
    tally.assert_exactly_once()


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_server_disk_full(agent_factory, ingest_server):
    """Soak: a 16 MiB disk under the server's database fills (no reserve: DuckDB's own ENOSPC); nothing acknowledged is lost or landed twice."""
    tally, faults = fill_server_disk(agent_factory, ingest_server, size="16m", reserve_bytes=0, records=80_000)
    record("server disk full (16 MiB tmpfs)", faults, acknowledged=tally.acknowledged,
           lost=len(tally.lost), duplicated=len(tally.duplicated))
    tally.assert_exactly_once()
