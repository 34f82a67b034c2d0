"""The journal in-process: group fsync, rotation by rows and age, frames that survive a reread."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.simulator import SimulatedModel
from edgeloop.collector.config import SamplingSettings, SpoolSettings
from edgeloop.collector.journal import Journal, read_segment
from edgeloop.collector.pipeline import Pipeline
from edgeloop.collector.spool import Spool
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry
from tests.collector.conftest import FLEET_KEY

REGISTRY = SchemaRegistry.from_dir(EXAMPLES_DIR)
PIPELINE = Pipeline(REGISTRY, SamplingSettings(seed=1), FLEET_KEY)


def _batch(n: int, seed: int = 1):
    return PIPELINE.process(list(SimulatedModel("vibration", seed=seed).predictions(n))).batches["vibration"]


def _journal(tmp_path: Path, **settings) -> Journal:
    spool_settings = SpoolSettings(reserve_free_bytes=0, **settings)
    return Journal(Spool(tmp_path, spool_settings, agent_version="test"), REGISTRY, spool_settings)


async def test_concurrent_commits_share_fsyncs(tmp_path, monkeypatch):
    """Fifty concurrent appends are made durable by far fewer fsyncs, and none returns before one covers it."""
    journal = _journal(tmp_path)
    synced_upto: list[int] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        real_fsync(fd)
        synced_upto.append(journal._seq)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    batch = _batch(10)

    async def one() -> None:
        seq = journal.append("vibration", batch)
        await journal.commit(seq)
        assert journal._synced >= seq

    await asyncio.gather(*(one() for _ in range(50)))
    assert 1 <= journal.fsyncs <= 10, journal.fsyncs
    await journal.close()


async def test_rotation_by_rows_seals_one_batch_per_segment(tmp_path):
    """A segment past seal_max_rows is sealed, under its own id, while appends go on in a new one."""
    journal = _journal(tmp_path, seal_max_rows=100)
    for seed in range(5):
        await journal.commit(journal.append("vibration", _batch(40, seed)))
    await journal.flush()
    sealed = journal.spool.pending()
    assert [batch.rows for batch in sealed] == [120, 80]
    for batch in sealed:
        assert pq.read_metadata(batch.path).num_rows == batch.rows
    assert not list((tmp_path / "journal").rglob("*.wal"))
    await journal.close()


async def test_tick_seals_segments_past_their_age(tmp_path):
    """The timer seals a segment older than seal_max_age_s without any flush."""
    journal = _journal(tmp_path, seal_max_age_s=0.05)
    await journal.commit(journal.append("vibration", _batch(5)))
    await asyncio.sleep(0.1)
    journal.tick()
    await asyncio.gather(*journal._seals)
    assert len(journal.spool.pending()) == 1
    await journal.close()


async def test_frames_read_back_identically(tmp_path):
    """What was appended reads back frame by frame with nothing torn."""
    journal = _journal(tmp_path)
    batches = [_batch(7, seed) for seed in range(3)]
    for batch in batches:
        journal.append("vibration", batch)
    await journal.commit()
    (segment,) = (tmp_path / "journal").rglob("*.wal")
    read, valid, torn = read_segment(segment)
    assert torn == 0 and valid == segment.stat().st_size
    assert [b.to_pylist() for b in read] == [b.to_pylist() for b in batches]
    await journal.close()


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_recovery_cuts_any_partial_frame(tmp_path, cut):
    """A segment cut anywhere inside its last frame recovers every earlier frame."""
    async def write() -> None:
        journal = _journal(tmp_path)
        for seed in range(2):
            await journal.commit(journal.append("vibration", _batch(10, seed)))

    asyncio.run(write())
    (segment,) = (tmp_path / "journal").rglob("*.wal")
    with open(segment, "r+b") as handle:
        handle.truncate(segment.stat().st_size - cut)
    journal = _journal(tmp_path)
    report = journal.recover()
    assert report["sealed"] == 1 and report["rows"] == 10 and report["torn_bytes"] > 0
    assert journal.spool.drops_total["journal_torn"] == 1


async def test_a_schema_change_under_a_live_segment_seals_each_part_with_its_own_schema(tmp_path):
    """When the registry changes while a segment is open, the old records seal under the old schema and the new ones under the new."""
    import shutil

    schemas = tmp_path / "schemas"
    shutil.copytree(EXAMPLES_DIR, schemas)
    journal = _journal(tmp_path / "state")
    await journal.commit(journal.append("vibration", _batch(5)))
    schema_file = schemas / "vibration.toml"
    schema_file.write_text(schema_file.read_text() + '\n[inputs.humidity_pct]\ntype = "float32"\nprivacy = "keep"\n')
    changed = SchemaRegistry.from_dir(schemas)
    journal.registry = changed
    records = list(SimulatedModel("vibration", seed=2).predictions(4))
    new_batch = Pipeline(changed, SamplingSettings(seed=1), FLEET_KEY).process(records).batches["vibration"]
    await journal.commit(journal.append("vibration", new_batch))
    await journal.close()
    fingerprints = {batch.schema_fingerprint: batch.rows for batch in journal.spool.pending()}
    assert fingerprints == {REGISTRY["vibration"].fingerprint: 5, changed["vibration"].fingerprint: 4}


async def test_recovery_on_a_full_disk_leaves_the_segment_and_seals_it_later(tmp_path):
    """A segment recovery cannot seal for ENOSPC (no reserve left) stays in the journal, counted, and is sealed once there is room."""
    import errno

    state = tmp_path / "state"
    first = _journal(state)
    await first.commit(first.append("vibration", _batch(25)))
    first._fsync_pool.shutdown()  # the process dies here: the segment stays open in the journal
    journal = _journal(state, seal_reserve_bytes=0)
    real_write = journal.spool.write_batch

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    journal.spool.write_batch = no_space
    report = journal.recover()
    assert report["left_unsealed"] == 1 and report["quarantined"] == 0, report
    assert journal.stats()["records"] == 25 and journal.spool.disk_full
    assert list((state / "journal").rglob("*.wal"))
    from edgeloop.collector.recent_ids import RecentIds

    recent = RecentIds(1000)
    assert recent.load(journal.spool, journal.unsealed_segments()) == 25  # a resend of these is still a duplicate
    journal.spool.write_batch = real_write
    (batch,) = await journal.flush()
    assert batch.rows == 25
    assert not list((state / "journal").rglob("*.wal"))
    await journal.close()
