"""A memory limit on the server (RLIMIT_AS): batches it cannot land for want of memory are retried, never rejected, and land once it has memory."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest

from tests.reliability.conftest import App, Tally, device_sections, drain, simulated
from tests.reliability.report import record

HEADROOM_BYTES = 128 << 20  # above the idle server's address space: enough to serve, not to land a batch of thousands of rows
# A cap no server comes near: with any cap the server puts Arrow on the system allocator and glibc on two arenas,
# so its idle size is measured as it will run under the real one. Measured uncapped (jemalloc, an arena per busy
# thread) it came out 190 MiB larger, by how many threads met at start: headroom that let a batch land.
MEASURING_CAP_BYTES = 1 << 40


def _vm_size_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def _refusals(log: str) -> list[int]:
    """The status of every upload the server refused."""
    return [orjson.loads(line)["status"] for line in log.splitlines() if '"msg":"upload refused"' in line]


def land_under_memory_limit(agent_factory, ingest_server, *, records: int, window_s: float) -> tuple[Tally, dict[str, int]]:
    """Upload big batches to a server held to its idle address space plus a little; then lift the limit and drain."""
    token = ingest_server.add_device("pump-1")
    ingest_server.rlimit_as_bytes = MEASURING_CAP_BYTES
    ingest_server.start()
    idle = _vm_size_bytes(ingest_server.process.pid)  # this machine's baseline: threads and libraries vary
    ingest_server.stop()
    ingest_server.rlimit_as_bytes = idle + HEADROOM_BYTES
    ingest_server.start()
    sections = device_sections(ingest_server.url, token, seal_max_rows=100_000)
    # No scheduled sync while the app logs: each sync seals what came so far, and on a loaded machine those batches
    # come out small enough to land under the limit. The loop below starts the syncs once the batches are big.
    sections["sync"]["interval_s"] = 3600.0
    agent = agent_factory(**sections).start()
    app = App(agent, simulated(records, seed=9), chunk=1_000)  # fits the agent's default body bound
    app.start()
    app.join(600)
    assert not app.is_alive() and app.error is None, app.error
    agent.flush()
    aborted = 0
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline or not (_refusals(ingest_server.log()) or aborted):
        assert time.monotonic() < deadline + 120, "the memory limit never bit: nothing to prove"
        if ingest_server.process.poll() is not None:  # glibc aborts when a thread cannot get memory: restart, as systemd would
            aborted += 1
            ingest_server.process = None
            ingest_server.start()
        agent.request("POST", "/v1/sync", {"wait": False})
        time.sleep(1.0)
    refusals = _refusals(ingest_server.log())
    refused = len(refusals)
    assert set(refusals) <= {503}, f"uploads refused for memory must be 503 (retried): {Counter(refusals)}"
    rejected = sorted(p.name for p in (agent.state_dir / "rejected").glob("*.parquet"))
    assert not rejected, f"batches the server could not land for want of memory were rejected for good: {rejected}"
    assert refused + aborted > 0, "the memory limit never bit: nothing to prove"
    ingest_server.stop()
    ingest_server.rlimit_as_bytes = None
    ingest_server.start()
    drain(agent, timeout_s=300)
    agent.stop()
    faults = {"uploads failed for memory": refused, "server aborted for memory": aborted}
    return Tally.of(app.acknowledged, ingest_server.landed()), faults


@pytest.mark.timeout(300)
def test_batches_the_server_cannot_land_for_memory_are_retried_not_rejected(agent_factory, ingest_server):
    """Under RLIMIT_AS a 100,000-row batch cannot land: every refusal is 503, the batch stays in the spool, and lands once the limit is lifted."""
    tally, faults = land_under_memory_limit(agent_factory, ingest_server, records=150_000, window_s=5.0)
    assert tally.acknowledged == 150_000
    tally.assert_exactly_once()


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_memory_limit(agent_factory, ingest_server):
    """Soak: a minute of retries under the memory limit, then every acknowledged record lands once."""
    tally, faults = land_under_memory_limit(agent_factory, ingest_server, records=300_000, window_s=60.0)
    record("server memory limit (RLIMIT_AS)", faults, acknowledged=tally.acknowledged,
           lost=len(tally.lost), duplicated=len(tally.duplicated))
    tally.assert_exactly_once()
