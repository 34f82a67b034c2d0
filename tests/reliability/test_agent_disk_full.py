"""A full disk under the agent (a small tmpfs) with records in its journal: it keeps working, survives a SIGKILL, and everything lands once the disk grows."""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import App, Tally, device_sections, drain, mount_tmpfs, resize_tmpfs, simulated, unmount
from tests.reliability.report import record


def fill_agent_disk(agent_factory, ingest_server, *, size: str, records: int) -> tuple[Tally, dict[str, int]]:
    """Fill the agent's ``size`` disk with the server down, flush, SIGKILL and restart it, start the server, grow the disk, drain."""
    token = ingest_server.add_device("pump-1")
    # reject_new: a full disk refuses new records (507, the app resends later) instead of dropping acknowledged ones.
    agent = agent_factory(**device_sections(ingest_server.url, token, seal_max_rows=50_000, when_full="reject_new"))
    mount_tmpfs(agent.state_dir, size)
    try:
        agent.start()
        app = App(agent, simulated(records, seed=8), chunk=1_000)
        app.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not app.refused and app.is_alive():
            time.sleep(0.2)
        assert app.refused, "the agent's disk never filled"
        agent.flush()
        agent.kill()
        agent.start()  # a full disk must not stop the agent from starting
        ingest_server.start()
        resize_tmpfs(agent.state_dir, "512m")
        app.join(600)
        assert not app.is_alive() and app.error is None, app.error
        drain(agent, timeout_s=300)
        agent.stop()
        tally = Tally.of(app.acknowledged, ingest_server.landed())
    finally:
        agent.kill()
        unmount(agent.state_dir)
    assert tally.acknowledged == records
    return tally, {"agent requests refused on a full disk": sum(app.refused.values()), "agent SIGKILL on a full disk": 1}


@pytest.mark.timeout(300)
def test_agent_disk_full_keeps_working_through_a_kill_and_lands_everything(agent_factory, ingest_server):
    """An agent whose 4 MiB disk fills with records in its journal seals, survives a SIGKILL, starts again, and every acknowledged record lands once."""
    tally, _ = fill_agent_disk(agent_factory, ingest_server, size="4m", records=40_000)
    tally.assert_exactly_once()


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_agent_disk_full(agent_factory, ingest_server):
    """Soak: the agent's 16 MiB disk fills with records in its journal; nothing acknowledged is lost or landed twice."""
    tally, faults = fill_agent_disk(agent_factory, ingest_server, size="16m", records=100_000)
    record("agent disk full (16 MiB tmpfs)", faults, acknowledged=tally.acknowledged,
           lost=len(tally.lost), duplicated=len(tally.duplicated))
    tally.assert_exactly_once()
