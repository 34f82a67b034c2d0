"""The device agent under a wrong or jumping wall clock: order, budgets and schedule follow real time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uuid_utils
from edgeloop.collector.config import SamplingRule, SamplingSettings, SpoolSettings
from edgeloop.collector.pipeline import Pipeline
from edgeloop.collector.spool import Spool
from edgeloop.schemas import EXAMPLES_DIR, SchemaRegistry

from bench.simulator import SimulatedModel
from tests.collector.conftest import FLEET_KEY

DAY_S = 86_400
YEAR_S = 365 * DAY_S
SHIM = Path(__file__).parent / "clock_shim"
# Wall-clock offsets a device meets: NTP steps it back a day, an RTC-less Pi boots in 2038 or in 1970.
JUMPS_S = (0.0, -DAY_S, 12 * YEAR_S, 0.0, -56 * YEAR_S, 0.0)

pytestmark = pytest.mark.timeout(120)


def _table(registry: SchemaRegistry, seed: int, rows: int = 50) -> pa.Table:
    records = list(SimulatedModel("vibration", seed=seed).predictions(rows))
    return pa.Table.from_batches([Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY).process(records).batches["vibration"]])


def _ids(paths) -> set[str]:
    return {str(v) for path in paths for v in pq.read_table(path, columns=["record_id"])["record_id"].to_pylist()}


def _clock(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    """Set the wall clock the process reads (and ``uuid_utils`` reads) ``offset_s`` off the real one; monotonic time untouched."""
    monkeypatch.undo()
    real_time, real_time_ns, real_uuid7 = time.time, time.time_ns, uuid_utils.uuid7
    monkeypatch.setattr(time, "time", lambda: real_time() + offset_s)
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + int(offset_s * 1e9))
    monkeypatch.setattr(uuid_utils, "uuid7", lambda nanoseconds=None: real_uuid7(nanoseconds=time.time_ns()))


def test_batches_sealed_after_a_clock_jump_sort_after_every_older_batch(tmp_path, monkeypatch):
    """Batches sealed under a clock set back or forward, across a restart, sync and are dropped in the order they were sealed."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    settings = SpoolSettings(reserve_free_bytes=0, seal_reserve_bytes=0, when_full="drop_oldest")
    spool = Spool(tmp_path / "state", settings, agent_version="test")
    sealed = []
    for seed, offset_s in enumerate(JUMPS_S):
        _clock(monkeypatch, offset_s)
        if seed == 3:  # a restart: the new spool learns the order from the files
            spool = Spool(tmp_path / "state", settings, agent_version="test")
        sealed.append(spool.write_batch(_table(registry, seed), schema=registry["vibration"]))
    monkeypatch.undo()
    assert [batch.batch_id for batch in spool.pending()] == [batch.batch_id for batch in sealed]

    kept = sum(batch.bytes for batch in sealed[2:])
    spool = Spool(tmp_path / "state", settings.model_copy(update={"max_bytes": kept}), agent_version="test")
    assert spool.make_room(0)
    assert [batch.batch_id for batch in spool.pending()] == [batch.batch_id for batch in sealed[2:]]
    assert dict(spool.drops_total) == {"spool_full": sealed[0].rows + sealed[1].rows}


def test_an_agent_restarted_under_a_clock_set_back_seals_after_its_old_batches(agent_factory):
    """An agent whose clock is a day (or 56 years) behind its spool's batches seals new ones that sync after them, records intact."""
    agent = agent_factory(spool={"seal_max_rows": 20})
    sent: list[dict] = []
    for run, offset_s in enumerate((0.0, -DAY_S, -56 * YEAR_S)):
        agent.env = {"PYTHONPATH": str(SHIM), "EDGELOOP_TEST_CLOCK_OFFSET_S": str(offset_s)}
        agent.start()
        records = list(SimulatedModel("vibration", seed=run).predictions(20))
        for record in records:
            record.pop("created_at", None)
        status, body = agent.post_records(records)
        assert status == 200 and body["accepted"] == 20, body
        assert agent.stop() == 0
        sent.append({r["record_id"] for r in records})
    files = agent.batch_files()  # sorted by name: the order sync sends them in
    assert len(files) == 3
    assert [_ids([path]) for path in files] == sent
    created = [pq.read_table(path, columns=["created_at"])["created_at"].to_pylist() for path in files]
    years = [{moment.year for moment in moments} for moments in created]
    assert years[1] == years[0] and years[2] == {1970}, years  # each record keeps the time it was stamped with


def test_an_hourly_cap_spent_is_not_reopened_by_the_wall_clock_jumping(monkeypatch):
    """max_per_hour holds over an hour of real time while the wall clock steps back an hour, to 2038 and back, and to 1970."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    settings = SamplingSettings(seed=1, default=SamplingRule(max_per_hour=10))
    pipeline = Pipeline(registry, settings, FLEET_KEY)
    uptime_s = time.clock_gettime(time.CLOCK_BOOTTIME)
    monkeypatch.setattr(time, "clock_gettime", lambda clock: uptime_s)  # the whole test is one instant of real time
    now = datetime.now(UTC)
    kept = 0
    for seed, offset_s in enumerate(JUMPS_S + (-3600.0, 3600.0)):
        records = list(SimulatedModel("vibration", seed=seed).predictions(6))
        kept += pipeline.process(records, now=now + timedelta(seconds=offset_s)).accepted
    assert kept == 10
