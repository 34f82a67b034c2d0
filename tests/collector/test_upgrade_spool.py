"""An agent upgraded with batches of an older agent's format still in its spool: they are known, counted and land once."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from bench.simulator import SimulatedModel

pytestmark = pytest.mark.timeout(240)


def as_older_agent(path) -> None:
    """Rewrite a sealed batch as agents before sampling policies and boot-clock ages wrote it: no sampled_by or
    policy_version column, no edgeloop.made key, ARROW:schema and column statistics in the footer."""
    table = pq.read_table(path)
    metadata = {key: value for key, value in table.schema.metadata.items() if key != b"edgeloop.made"}
    table = table.drop_columns(["sampled_by", "policy_version"]).replace_schema_metadata(metadata)
    pq.write_table(table, path, compression="zstd", store_schema=True, write_statistics=True)


def test_an_older_agents_batches_in_the_spool_land_once_after_the_upgrade(agent_factory, ingest):
    """The upgraded agent refills its recent ids from the old batch (a resend is a duplicate), counts it, and syncs it to land once."""
    agent = agent_factory(sync={"enabled": True, "url": ingest.url, "token_file": str(ingest.token_file), "jitter_s": 0.0})
    agent.start()
    records = list(SimulatedModel("vibration", seed=6).predictions(12))
    status, body = agent.post_records(records)
    assert status == 200 and body["accepted"] == 12, body
    agent.flush()
    assert agent.stop() == 0
    [path] = agent.batch_files()
    as_older_agent(path)
    assert b"ARROW:schema" in pq.read_metadata(path).metadata

    agent.start()
    spool = agent.status()["spool"]
    assert (spool["batches"], spool["records"]) == (1, 12) and spool["oldest_record_age_s"] >= 0, spool
    status, body = agent.post_records(records[:3])  # the app's resend after the upgrade
    assert status == 200 and body["duplicates"] == 3, body
    result = agent.cli("sync", "--wait", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    assert agent.stop() == 0

    rows = ingest.query("SELECT count(*), count(DISTINCT record_id), count(sampled_by), count(policy_version) FROM vibration")
    assert rows == [(12, 12, 0, 0)]
