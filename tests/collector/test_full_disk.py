"""A full disk with records in the journal: the agent seals from its reserve, starts, syncs, and says so."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.simulator import SimulatedModel
from edgeloop.collector.config import SamplingSettings, SpoolSettings
from edgeloop.collector.pipeline import Pipeline
from edgeloop.collector.spool import Spool
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.collector.conftest import FLEET_KEY

MiB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem (tmpfs), mounted for the test; skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 16 MiB tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 16 MiB tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a new filler file until the filesystem refuses another byte (what a runaway log does)."""
    filler = folder / f"filler-{len(list(folder.glob('filler-*')))}"
    chunk = MiB
    with open(filler, "wb", buffering=0) as handle:
        while chunk:
            try:
                handle.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                chunk //= 2
    return filler


def _ids(paths) -> list[str]:
    return [str(v) for path in paths for v in pq.read_table(path, columns=["record_id"])["record_id"].to_pylist()]


def test_full_disk_with_records_in_the_journal_does_not_wedge_the_agent(agent_factory, small_disk, ingest):
    """On a full 16 MiB disk the agent refuses new records with 507, seals the journal from its reserve, restarts after SIGKILL, syncs, and reports the disk in status and metrics."""
    agent = agent_factory(
        agent={"state_dir": str(small_disk / "state")},
        spool={"seal_max_age_s": 3600, "seal_max_bytes": MiB, "seal_reserve_bytes": 3 * MiB},
        sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0},
    ).start()
    reserve = agent.state_dir / "seal.reserve"
    assert reserve.stat().st_blocks * 512 >= 3 * MiB
    sim = SimulatedModel("vibration", seed=31)
    acked: list[str] = []
    for _ in range(3):
        records = list(sim.predictions(300))
        status, body = agent.post_records(records)
        assert status == 200, body
        acked += [r["record_id"] for r in records]
    filler = fill(small_disk)

    status, body = agent.post_records(list(sim.predictions(300)))
    assert status == 507 and body["error"]["code"] == "disk_full", body
    report = agent.status()
    assert report["disk"]["full"] is True, report["disk"]
    assert report["journal"]["records"] == 900
    metrics = agent.request("GET", "/metrics")[1]
    assert "edgeloop_disk_full 1.0" in metrics
    assert "disk       FULL since" in agent.cli("status").stdout

    flushed = agent.flush()  # sealing needs disk: it takes the seal reserve's
    assert flushed["sealed"] == 1 and flushed["batches"][0]["rows"] == 900, flushed
    records = list(sim.predictions(300))  # the sealed segment's space is free again
    status, body = agent.post_records(records)
    assert status == 200, body
    acked += [r["record_id"] for r in records]
    filler2 = fill(small_disk)

    agent.kill()  # 300 acknowledged records in the journal of a full disk
    agent.start()  # must come up, not crash-loop on ENOSPC
    report = agent.status()
    assert report["agent"]["recovery"]["sealed"] == 1, report["agent"]["recovery"]
    assert sorted(_ids(agent.batch_files())) == sorted(acked)
    assert not list((agent.state_dir / "journal").rglob("*.wal"))

    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    assert agent.status()["spool"]["batches"] == 0

    filler.unlink()  # the disk has room again: the reserve comes back and intake works
    filler2.unlink()
    status, body = agent.post_records(list(sim.predictions(10)))
    assert status == 200, body
    report = agent.status()
    assert report["disk"]["full"] is False and report["disk"]["seal_reserve_held_bytes"] == 3 * MiB, report["disk"]
    assert agent.stop() == 0
    landed = {rid for (rid,) in ingest.query("SELECT CAST(record_id AS VARCHAR) FROM vibration")}
    assert set(acked) <= landed


def test_splitting_a_batch_on_a_full_disk_uses_the_seal_reserve(small_disk):
    """Splitting a batch (the server's 413) on a full disk writes both halves from the seal reserve."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    spool = Spool(small_disk / "state", SpoolSettings(seal_reserve_bytes=2 * MiB), agent_version="test")
    assert spool.ensure_reserve()
    records = list(SimulatedModel("vibration", seed=32).predictions(2000))
    batch = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY).process(records).batches["vibration"]
    sealed = spool.write_batch(pa.Table.from_batches([batch]), schema=registry["vibration"])
    filler = fill(small_disk)
    halves = spool.split(sealed.batch_id)
    assert [half.rows for half in halves] == [1000, 1000]
    assert spool.disk_full and spool.reserve_held_bytes == 0
    assert sorted(_ids(half.path for half in halves)) == sorted(r["record_id"] for r in records)
    filler.unlink()
    assert spool.ensure_reserve() and spool.reserve_held_bytes == 2 * MiB


def test_a_disk_full_by_the_free_space_the_agent_keeps_says_which_setting(agent_factory):
    """With free space under spool.reserve_free_bytes, a record's 507 and status's text both name that setting and
    the free bytes, so a disk called full with space left reads as the setting it is, not a bug."""
    agent = agent_factory(spool={"reserve_free_bytes": 1 << 60}).start()
    status, body = agent.post_records(list(SimulatedModel("vibration", seed=2).predictions(3)))
    assert status == 507 and body["error"]["code"] == "disk_full", body
    assert "free, under spool.reserve_free_bytes" in body["error"]["message"], body
    human = agent.cli("status")
    assert human.returncode == 0, human.stderr
    disk = human.stdout.split("disk       ", 1)[1].splitlines()
    assert disk[0].startswith("FULL since") and "under spool.reserve_free_bytes" in disk[1], human.stdout
    assert agent.status()["disk"]["reserve_free_bytes"] == 1 << 60
