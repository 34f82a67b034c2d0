"""SIGKILL of the agent at random points during intake, seal and sync: every acknowledged record lands exactly once.

The app resends a request the agent did not answer (as the SDK does), so records that reached
the journal before the kill arrive twice; the agent and the server must land them once.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from edgeloop.errors import AgentUnavailableError
from tests.reliability.conftest import App, Tally, device_sections, drain, simulated
from tests.reliability.report import record

PHASES = ("intake", "seal", "sync")
REQUESTS_PER_KILL = 3  # the app posts these between two kills, the kill landing while the later ones run


def _poke(agent, path: str, body=None) -> None:
    """Start a flush or sync in the agent without waiting for it (the kill comes while it runs)."""

    def call() -> None:
        try:
            agent.request("POST", path, body, timeout_s=30)
        except AgentUnavailableError:
            pass  # killed while it ran: what the test wants

    threading.Thread(target=call, daemon=True).start()


def kill_agent_repeatedly(agent_factory, ingest_server, *, kills: int, records: int, seed: int) -> tuple[Tally, Counter[str], int]:
    """An app logs ``records``; meanwhile the agent is SIGKILLed ``kills`` times, each while intake, a seal or a sync runs."""
    rng = random.Random(seed)
    token = ingest_server.add_device("pump-1")
    ingest_server.start()
    agent = agent_factory(**device_sections(ingest_server.url, token, seal_max_rows=200)).start()
    gate = threading.Semaphore(0)
    app = App(agent, simulated(records, seed=seed), chunk=100, gate=gate)
    app.start()
    phases: Counter[str] = Counter()
    for _ in range(kills):
        app.progress.clear()
        gate.release(REQUESTS_PER_KILL)  # the app keeps posting across every kill, however slow the restarts
        assert app.progress.wait(120), "the app made no progress"
        phase = rng.choice(PHASES)
        if phase == "seal":
            _poke(agent, "/v1/flush")
        elif phase == "sync":
            _poke(agent, "/v1/sync", {"wait": True})
        time.sleep(rng.uniform(0.0, 0.3))
        agent.kill()
        phases[phase] += 1
        if not app.resent:
            # Once for sure, not only when a kill happens to fall inside a request: a request the app sends
            # while the agent is down fails, is sent again after the restart, and must still land once.
            gate.release(1)
            deadline = time.monotonic() + 30
            while not app.resent and time.monotonic() < deadline:
                time.sleep(0.01)
        agent.start()
    gate.release(len(app.records))
    app.join(600)
    assert not app.is_alive() and app.error is None, app.error
    drain(agent, timeout_s=300)
    agent.stop()
    return Tally.of(app.acknowledged, ingest_server.landed()), phases, app.resent


@pytest.mark.timeout(420)  # 20 restarts of a real process: about a minute idle, several on a loaded 2-core machine
def test_agent_killed_during_intake_seal_and_sync_loses_and_duplicates_nothing(agent_factory, ingest_server):
    """Twenty SIGKILLs of the agent while it takes records, seals and syncs: every acknowledged record lands once."""
    tally, phases, resent = kill_agent_repeatedly(agent_factory, ingest_server, kills=20, records=7_000, seed=3)
    assert sum(phases.values()) == 20 and set(phases) == set(PHASES), phases
    assert tally.acknowledged == 7_000 and resent > 0
    tally.assert_exactly_once()


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_agent_kills(agent_factory, ingest_server):
    """Soak: 24 SIGKILLs of the agent at random points during intake, seal and sync; nothing lost, nothing twice."""
    tally, phases, resent = kill_agent_repeatedly(agent_factory, ingest_server, kills=24, records=30_000, seed=4)
    record("agent SIGKILL (intake/seal/sync)", {f"SIGKILL during {phase}": n for phase, n in sorted(phases.items())},
           acknowledged=tally.acknowledged, lost=len(tally.lost), duplicated=len(tally.duplicated))
    tally.assert_exactly_once()
