"""SIGKILL of the ingest server during group commits while many devices upload: every acknowledged record lands exactly once."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tests.reliability.conftest import App, Tally, device_sections, drain, simulated
from tests.reliability.report import record

REQUESTS_PER_KILL = 2  # each app posts these between two kills


def kill_server_repeatedly(agent_factory, ingest_server, *, devices: int, kills: int, records: int, seed: int) -> tuple[Tally, int, int]:
    """``devices`` agents log and sync ``records`` each while the server is SIGKILLed ``kills`` times, mostly with uploads queued for a commit."""
    rng = random.Random(seed)
    tokens = [ingest_server.add_device(f"pump-{n}") for n in range(devices)]
    ingest_server.start()
    agents = [
        agent_factory(f"agent-{n}", **device_sections(ingest_server.url, token, seal_max_rows=100)).start()
        for n, token in enumerate(tokens)
    ]
    gates = [threading.Semaphore(0) for _ in agents]
    apps = [App(agent, simulated(records, seed=seed * 1000 + n), chunk=50, gate=gate)
            for n, (agent, gate) in enumerate(zip(agents, gates))]
    for app in apps:
        app.start()
    in_commit = 0
    for _ in range(kills):
        for gate in gates:  # every device keeps logging across every kill, however slow the restarts
            gate.release(REQUESTS_PER_KILL)
        deadline = time.monotonic() + rng.uniform(0.5, 3.0)
        while time.monotonic() < deadline and ingest_server.queued() == 0:
            time.sleep(0.005)
        in_commit += ingest_server.queued() > 0
        ingest_server.kill()
        time.sleep(rng.uniform(0.0, 0.5))
        ingest_server.start()
    for gate, app in zip(gates, apps):
        gate.release(len(app.records))
    for app in apps:
        app.join(900)
        assert not app.is_alive() and app.error is None, app.error
    for agent in agents:
        drain(agent, timeout_s=300)
        agent.stop()
    acknowledged = set().union(*(app.acknowledged for app in apps))
    return Tally.of(acknowledged, ingest_server.landed()), in_commit, ingest_server.kills


@pytest.mark.timeout(420)  # 20 restarts of a real server: about a minute idle, several on a loaded 2-core machine
def test_server_killed_during_group_commits_loses_and_duplicates_nothing(agent_factory, ingest_server):
    """Twenty SIGKILLs of the server while three devices upload: every acknowledged record lands once."""
    tally, in_commit, kills = kill_server_repeatedly(agent_factory, ingest_server, devices=3, kills=20, records=3_000, seed=5)
    assert kills == 20 and in_commit > 0 and tally.acknowledged == 9_000
    tally.assert_exactly_once()


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_server_kills(agent_factory, ingest_server):
    """Soak: 24 SIGKILLs of the server while 20 devices upload; nothing lost, nothing twice."""
    tally, in_commit, kills = kill_server_repeatedly(agent_factory, ingest_server, devices=20, kills=24, records=3_000, seed=6)
    record("server SIGKILL, 20 devices uploading", {"SIGKILL with uploads queued": in_commit, "SIGKILL otherwise": kills - in_commit},
           acknowledged=tally.acknowledged, lost=len(tally.lost), duplicated=len(tally.duplicated))
    assert kills >= 20
    tally.assert_exactly_once()
