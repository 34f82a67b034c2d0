"""Network faults between agent and server (a TCP fault proxy on loopback): every acknowledged record lands exactly once."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import App, Tally, device_sections, drain, simulated
from tests.reliability.fault_proxy import FAULT_KINDS, FaultProxy
from tests.reliability.report import record


def run_through_proxy(agent_factory, ingest_server, *, records: int, rate: float, seed: int) -> tuple[Tally, dict[str, int]]:
    """An app logs ``records`` while the agent syncs through the fault proxy; then drain and count."""
    token = ingest_server.add_device("pump-1")
    ingest_server.start()
    with FaultProxy(ingest_server.port, rate=rate, seed=seed) as proxy:
        agent = agent_factory(**device_sections(proxy.url, token)).start()
        app = App(agent, simulated(records, seed=seed))
        app.start()
        app.join(600)
        assert not app.is_alive() and app.error is None, app.error
        drain(agent, timeout_s=300)
        faults = dict(proxy.faults)
        agent.stop()
    return Tally.of(app.acknowledged, ingest_server.landed()), faults


@pytest.mark.timeout(300)  # real processes restarted many times: minutes on a loaded 2-core machine
def test_resets_dropped_answers_truncation_and_delays_land_each_record_once(agent_factory, ingest_server):
    """Through resets mid-body, answers dropped after the commit, truncated answers and delays, every acknowledged record lands once."""
    tally, faults = run_through_proxy(agent_factory, ingest_server, records=1_500, rate=0.6, seed=1)
    assert set(faults) == set(FAULT_KINDS), f"not every fault kind happened: {faults}"
    assert tally.acknowledged == 1_500
    tally.assert_exactly_once()


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_network_faults(agent_factory, ingest_server):
    """Soak: at least 20 of each network fault, and still every acknowledged record lands exactly once."""
    tally, faults = run_through_proxy(agent_factory, ingest_server, records=40_000, rate=0.7, seed=2)
    record("network faults (fault proxy)", faults, acknowledged=tally.acknowledged,
           lost=len(tally.lost), duplicated=len(tally.duplicated))
    assert all(faults.get(kind, 0) >= 20 for kind in FAULT_KINDS), faults
    tally.assert_exactly_once()
